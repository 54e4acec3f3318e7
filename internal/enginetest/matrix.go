// Package enginetest runs a package's tests once per event-loop backend, so
// every suite that starts a server covers io_uring and epoll (a matrix, not
// a copy of the tests).
package enginetest

import (
	"fmt"
	"os"
	"testing"

	"github.com/tandemhq/tandem/uring"
)

// Backends are the engine backends to test: TANDEM_ENGINE when set (one of
// "epoll", "uring"), else both; io_uring is left out, with a line on stderr
// saying why, where the kernel does not allow it.
func Backends(pkg string) []string {
	if e := os.Getenv("TANDEM_ENGINE"); e != "" {
		return []string{e}
	}
	out := []string{"epoll"}
	if err := uring.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: skipping the io_uring backend: %v\n", pkg, err)
	} else {
		out = append(out, "uring")
	}
	return out
}

// Main runs m once per backend, calling set with it first, and returns the
// exit code: non-zero if any pass failed.
func Main(m *testing.M, pkg string, set func(engine string)) int {
	code := 0
	for _, e := range Backends(pkg) {
		set(e)
		fmt.Fprintf(os.Stderr, "%s tests on the %s backend\n", pkg, e)
		if c := m.Run(); c != 0 {
			code = c
		}
	}
	return code
}
