package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/tuning"
	"github.com/tandemhq/tandem/uring"
)

const tuneText = `Reads this machine's NUMA nodes, cores and SMT siblings from sysfs and
writes a configuration for ` + "`tandem serve --config`" + `: which cores run the event
loops, where the journal flusher and the replication senders run, ring and
buffer sizes, and one journal directory per NUMA node when there are several.
Every choice is explained in a comment above its key; see docs/tuning.md.

On the real /sys the plan is limited to the CPUs this process may run on
(taskset, cgroup cpusets) and says whether io_uring is usable here.
`

func runTune(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("tune", "[flags]", tuneText, stderr)
	sysfs := fs.String("sysfs", "/sys", "read the topology from `DIR` (same layout as /sys)")
	out := fs.String("o", "", "write the configuration to `FILE` instead of standard output")
	data := fs.String("data", "data", "journal `DIR` (per-node journals go under it)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	topo, err := tuning.ReadTopology(*sysfs)
	if err != nil {
		fmt.Fprintf(stderr, "tandem tune: %v\n", err)
		return 1
	}
	real := filepath.Clean(*sysfs) == "/sys"
	if real {
		// Plan only on the CPUs we may use: a plan naming others would fail
		// at start-up (poll.CheckCPUs).
		if allowed, err := poll.AllowedCPUs(); err == nil {
			if topo, err = topo.Restrict(allowed); err != nil {
				fmt.Fprintf(stderr, "tandem tune: %v\n", err)
				return 1
			}
		}
	}
	plan, err := tuning.Compute(topo, tuning.Options{DataDir: *data})
	if err != nil {
		fmt.Fprintf(stderr, "tandem tune: %v\n", err)
		return 1
	}
	if real {
		if err := uring.Available(); err != nil {
			plan.Notes = append(plan.Notes, fmt.Sprintf("io_uring is not usable here (%v); engine = \"auto\" will run on epoll.", err))
		} else {
			plan.Notes = append(plan.Notes, "io_uring is usable here; engine = \"auto\" will use it.")
		}
	}
	text := plan.TOML(*sysfs)
	if *out == "" {
		fmt.Fprint(stdout, text)
		return 0
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintf(stderr, "tandem tune: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "tandem tune: wrote %s (%d loops on cpus %v)\n", *out, plan.Loops, plan.LoopCPUs)
	return 0
}
