package main

import (
	"fmt"
	"io"
	"os"

	"github.com/tandemhq/tandem/internal/dirlock"
	"github.com/tandemhq/tandem/replicate"
)

const replResetText = `Resolves a replication fork (docs/replication.md, "Identity and forks"):
deletes this instance's position of peer NAME's stream (DIR/repl-in-NAME.pos),
so that on the next link NAME ships its journal from its first retained
record. De-duplication on (publisher, publisher sequence) keeps every message
already held exactly once. Run it on the destination (the instance whose
link from NAME is refused, state "fork" in NAME's stat) while that instance
is stopped: it takes the data directory's lock, so it refuses (exit 1,
naming the holder) while the instance runs.
`

func runReplReset(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("repl-reset", "--data DIR --peer NAME", replResetText, stderr)
	data := fs.String("data", "", "the stopped instance's data `DIR` (its --data)")
	peer := fs.String("peer", "", "the source `NAME` whose stream to take afresh")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if *data == "" || *peer == "" {
		fmt.Fprintln(stderr, "tandem repl-reset: --data and --peer are required")
		fs.Usage()
		return 2
	}
	if st, err := os.Stat(*data); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "tandem repl-reset: data directory %s: not a directory (%v)\n", *data, err)
		return 1
	}
	// The instance must be stopped: hold its data directory's lock while
	// resetting (a running instance holds it and would rewrite the file).
	lock, err := dirlock.Acquire(*data, "tandem-repl-reset")
	if err != nil {
		fmt.Fprintf(stderr, "tandem repl-reset: stop the instance first: %v\n", err)
		return 1
	}
	defer lock.Close()
	ok, err := replicate.ResetPeer(*data, *peer)
	if err != nil {
		fmt.Fprintf(stderr, "tandem repl-reset: %v\n", err)
		return 1
	}
	if !ok {
		fmt.Fprintf(stdout, "no position of %s's stream in %s: nothing to reset\n", *peer, *data)
		return 0
	}
	fmt.Fprintf(stdout, "deleted the position of %s's stream (%s): it restarts from %s's first retained record on the next link\n",
		*peer, replicate.PositionFile(*data, *peer), *peer)
	return 0
}
