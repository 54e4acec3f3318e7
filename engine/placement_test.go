package engine

import (
	"testing"

	"github.com/tandemhq/tandem/engine/poll"
)

// TestMemoryPlacement: a pinned loop sets a node-local memory policy on its
// thread (unless placement is off) and, with io_uring, creates its ring on
// its own core, so the kernel places the ring's pages on that core's node.
func TestMemoryPlacement(t *testing.T) {
	cpus, err := poll.AllowedCPUs()
	if err != nil || len(cpus) == 0 {
		t.Skipf("cannot read the allowed CPUs: %v", err)
	}
	cpu := cpus[len(cpus)-1]
	for _, tc := range []struct {
		placement  string
		wantPolicy int
	}{
		{"", poll.MemPolicyLocal},
		{"first-touch", poll.MemPolicyLocal},
		{"off", poll.MemPolicyDefault},
	} {
		s := testServer(t, t.TempDir(), func(c *Config) {
			c.Loops, c.Pin, c.CPUs, c.MemoryPlacement = 1, true, []int{cpu}, tc.placement
		})
		lp := s.loops[0]
		if lp.memPolicy != tc.wantPolicy {
			t.Errorf("placement %q: loop thread memory policy %d, want %d", tc.placement, lp.memPolicy, tc.wantPolicy)
		}
		if testEngine == "uring" && lp.ringCPU != cpu {
			t.Errorf("placement %q: ring created on cpu %d, want the loop's cpu %d", tc.placement, lp.ringCPU, cpu)
		}
		s.Close()
	}
}
