package sim

import (
	"flag"
	"strings"
	"testing"
	"time"
)

var (
	seeds     = flag.Int("sim.seeds", 40, "seeds TestSeeds runs")
	firstSeed = flag.Int64("sim.seed", -1, "the first seed (-1: random, printed)")
)

// TestSeeds runs fresh seeds (make test runs a few hundred more outside
// -race through simcmd).
func TestSeeds(t *testing.T) {
	start := *firstSeed
	if start < 0 {
		start = time.Now().UnixNano() & (1<<40 - 1)
	}
	n := *seeds
	if raceOn {
		n = min(n, 10)
	}
	t.Logf("seeds %d..%d (replay one: make sim SEEDS=1 SEED=S)", start, start+int64(n)-1)
	for i := 0; i < n; i++ {
		r := Run(start+int64(i), Options{})
		if len(r.Violations) > 0 {
			t.Fatalf("seed %d (%s): %s\nreplay: make sim SEEDS=1 SEED=%d\nschedule:\n  %s\ntrace tail:\n%s",
				r.Seed, r.Topology, strings.Join(r.Violations, "\n"), r.Seed, strings.Join(r.Schedule, "\n  "), r.Tail)
		}
	}
}

// The same seed gives the same trace; another seed another.
func TestDeterministic(t *testing.T) {
	for _, topo := range Topologies {
		a, b := Run(42, Options{Topology: topo}), Run(42, Options{Topology: topo})
		if a.Digest != b.Digest || a.Events != b.Events {
			t.Fatalf("%s: seed 42 ran twice: trace %016x (%d lines) then %016x (%d lines)", topo, a.Digest, a.Events, b.Digest, b.Events)
		}
		if c := Run(43, Options{Topology: topo}); c.Digest == a.Digest {
			t.Fatalf("%s: seeds 42 and 43 gave the same trace %016x", topo, a.Digest)
		}
		if a.Acked == 0 {
			t.Fatalf("%s: seed 42 acknowledged nothing", topo)
		}
	}
}

// Seeds that found bugs, fixed since: each passes, and still fails with
// its fix undone (the broken build), so it keeps exercising the bug.
func TestRegressionSeeds(t *testing.T) {
	for _, tc := range []struct {
		seed   int64
		o      Options
		broken string
		why    string
	}{
		{46, Options{}, "no-reseed", "strict pair, A back wiped: B acked a re-sent message as held by A (rsm.Filter.Reseed)"},
		{4, Options{}, "no-epochs", "async pair, a restored data directory: records written after the restore reused identities a subscriber held (origin epochs, rsm.LostOwnRecords)"},
		{35, Options{Topology: "single"}, "publish-before-logon", "a memory-store publisher restarted: messages numbered before the logon left the store as acknowledged"},
		{7002933, Options{}, "", "sync pair: the first version of the logon-history rule skipped, and so never re-published or discarded, messages above a server's first LastPubSeq: a file-store publisher waited forever"},
		{7009355, Options{}, "", "the same, with a restore"},
		{5015170, Options{}, "trust-acked-pub-seq", "chain, a memory-store publisher restarted onto A (without its history), A restored, failover to B: B's AckedPubSeq dropped a never-sent message"},
	} {
		if r := Run(tc.seed, tc.o); len(r.Violations) > 0 {
			t.Errorf("seed %d (%s): %s\nfirst violation: %s", tc.seed, r.Topology, tc.why, r.Violations[0])
		}
		if tc.broken == "" {
			continue // no broken build keeps that bug
		}
		if err := Break(tc.broken); err != nil {
			t.Fatal(err)
		}
		r := Run(tc.seed, tc.o)
		Unbreak()
		if len(r.Violations) == 0 {
			t.Errorf("seed %d no longer finds %s's bug (%s)", tc.seed, tc.broken, tc.why)
		}
	}
}

// Each deliberately broken build is caught within a few hundred seeds
// (the seeds are fixed: the answer is deterministic).
func TestBrokenBuildsCaught(t *testing.T) {
	if raceOn {
		t.Skip("runs outside -race (make simtest): hundreds of seeds per broken build")
	}
	for _, name := range BrokenNames() {
		t.Run(name, func(t *testing.T) {
			if err := Break(name); err != nil {
				t.Fatal(err)
			}
			defer Unbreak()
			o := brokenOptions[name]
			from := max(brokenFrom[name], 1)
			for s := from; s < from+400; s++ {
				if r := Run(s, o); len(r.Violations) > 0 {
					t.Logf("%s caught by seed %d (%s): %s", name, s, r.Topology, r.Violations[0])
					return
				}
			}
			t.Fatalf("broken build %s not caught by seeds %d..%d", name, from, from+399)
		})
	}
}

// The overlapping-syncs rule (Overlap: sources ship before their own
// fdatasync; destinations report only what the source confirmed), a
// design not yet in the product and not yet complete (seed 8000496 still
// fails it: docs/architecture.md), holds on these seeds: a change to it
// must not lose what it already gets right.
func TestOverlapRule(t *testing.T) {
	n := 150
	if raceOn {
		n = 10
	}
	for s := int64(1); s <= int64(n); s++ {
		if r := Run(s, Options{Overlap: true}); len(r.Violations) > 0 {
			t.Fatalf("seed %d (%s) with overlapping syncs: %s\nreplay: make sim SEEDS=1 SEED=%d SIMFLAGS=-overlap", s, r.Topology, r.Violations[0], s)
		}
	}
}
