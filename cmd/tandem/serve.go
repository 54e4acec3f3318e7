package main

import (
	"fmt"
	"os"
)

// runServe is replaced by the real server command.
func runServe(args []string) int {
	fmt.Fprintln(os.Stderr, "tandem serve: not built yet")
	return 2
}
