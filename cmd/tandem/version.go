package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/uring"
)

const versionText = `Prints "tandem VERSION (COMMIT) GOVERSION" on the first line, then which
event-loop engines this machine allows (serve --engine). COMMIT is the VCS
revision the binary was built from (with "-dirty" for uncommitted changes),
"unknown" when the build recorded none (go run, go test).
`

func runVersion(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "", versionText, stderr)
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	fmt.Fprintf(stdout, "tandem %s (%s) %s\n", engine.Version, buildCommit(), runtime.Version())
	if err := uring.Available(); err != nil {
		fmt.Fprintf(stdout, "io_uring: unavailable (%v)\n", err)
	} else {
		fmt.Fprintln(stdout, "io_uring: available")
	}
	fmt.Fprintln(stdout, "epoll: available")
	return 0
}

// commit, when set at link time (-ldflags "-X main.commit=REV", as
// deploy/Dockerfile does: a container build has no .git), is reported
// instead of the VCS revision the build recorded.
var commit = ""

// buildCommit is the VCS revision the build recorded, shortened to 12 hex
// digits.
func buildCommit() string {
	if commit != "" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}
