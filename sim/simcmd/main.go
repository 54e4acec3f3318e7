// Command simcmd runs the deterministic simulator (package sim) over a
// range of seeds: `make sim SEEDS=N SEED=S` (docs/architecture.md,
// "Deterministic simulation").
//
// It prints one line per failing seed with the command that replays it,
// the first failures' fault schedules and trace tails, and ends with
// `sim: N seeds, F failures`; it exits 1 if F > 0. With one seed it also
// prints `trace <hex digest>` of the whole event trace.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tandemhq/tandem/sim"
)

func main() {
	seeds := flag.Int("seeds", 1000, "how many seeds to run")
	seed := flag.Int64("seed", -1, "the first seed (-1: a random start, printed)")
	topo := flag.String("topology", "", "force one topology: "+strings.Join(sim.Topologies, ", "))
	noRestore := flag.Bool("no-restore", false, "leave restored-from-backup data directories out of the faults")
	verbose := flag.Bool("v", false, "print the whole trace (with one seed)")
	details := flag.Int("details", 3, "print the schedule and trace tail of the first N failures")
	broken := flag.String("broken", "", "run a deliberately broken build (the checker's own test): "+strings.Join(sim.BrokenNames(), ", "))
	flag.Parse()
	if *broken != "" {
		if err := sim.Break(*broken); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	if *seed < 0 {
		*seed = time.Now().UnixNano() & (1<<40 - 1)
		fmt.Printf("sim: random start seed %d\n", *seed)
	}
	failures := 0
	start := time.Now()
	acked := 0
	for i := 0; i < *seeds; i++ {
		s := *seed + int64(i)
		r := sim.Run(s, sim.Options{Topology: *topo, Verbose: *verbose && *seeds == 1, NoRestore: *noRestore})
		acked += r.Acked
		if *seeds == 1 {
			fmt.Printf("seed %d topology %s: %d trace lines, %d messages acknowledged\n", s, r.Topology, r.Events, r.Acked)
			fmt.Printf("trace %016x\n", r.Digest)
			if *verbose {
				fmt.Println(r.Tail)
			}
		}
		if len(r.Violations) == 0 {
			continue
		}
		failures++
		topoFlag := ""
		if *topo != "" {
			topoFlag = " SIMFLAGS=-topology=" + *topo
		}
		fmt.Printf("FAIL seed %d (%s): %s\n  replay: make sim SEEDS=1 SEED=%d%s\n", s, r.Topology, r.Violations[0], s, topoFlag)
		if failures <= *details {
			fmt.Printf("  violations:\n    %s\n", strings.Join(r.Violations, "\n    "))
			fmt.Printf("  fault schedule:\n    %s\n", strings.Join(r.Schedule, "\n    "))
			fmt.Printf("  trace tail:\n%s\n", indent(r.Tail))
		}
	}
	el := time.Since(start)
	fmt.Printf("sim: %d seeds, %d failures (%.1f ms per seed, %d acknowledged messages checked)\n",
		*seeds, failures, float64(el.Microseconds())/1000/float64(max(*seeds, 1)), acked)
	if failures > 0 {
		os.Exit(1)
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
