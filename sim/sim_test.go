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
	t.Logf("seeds %d..%d (replay one: make sim SEEDS=1 SEED=S)", start, start+int64(*seeds)-1)
	for i := 0; i < *seeds; i++ {
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

// Seeds that found bugs, fixed since: they must pass.
func TestRegressionSeeds(t *testing.T) {
	for _, tc := range []struct {
		seed int64
		why  string
	}{
		{2996, "strict pair, B back wiped: A acked a re-sent message as held by B (rsm.Filter reseed)"},
	} {
		if r := Run(tc.seed, Options{}); len(r.Violations) > 0 {
			t.Errorf("seed %d (%s): %s\nfirst violation: %s", tc.seed, r.Topology, tc.why, r.Violations[0])
		}
	}
}

// Each deliberately broken build is caught within a few hundred seeds
// (the seeds are fixed: the answer is deterministic).
func TestBrokenBuildsCaught(t *testing.T) {
	for _, name := range BrokenNames() {
		t.Run(name, func(t *testing.T) {
			if err := Break(name); err != nil {
				t.Fatal(err)
			}
			defer Unbreak()
			o := brokenOptions[name]
			for s := int64(1); s <= 400; s++ {
				if r := Run(s, o); len(r.Violations) > 0 {
					t.Logf("%s caught by seed %d (%s): %s", name, s, r.Topology, r.Violations[0])
					return
				}
			}
			t.Fatalf("broken build %s not caught by seeds 1..400", name)
		})
	}
}
