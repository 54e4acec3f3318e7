package sim

import (
	"fmt"
	"sort"
)

// Deliberately broken builds, for proving that the checker catches what
// matters (sim_test.go asserts each is caught within a few hundred
// seeds). Each switch disables one rule; none is set outside tests and
// `make sim SIMFLAGS=-broken=NAME`.
var broken = map[string]*bool{
	// Persisted acks ignore the sync destinations (acking before a sync
	// peer's ack).
	"ack-before-sync": &BrokenAckBeforeSync,
	// A destination's position in another journal is trusted (issue #10's
	// journal identity fix disabled: a peer that lost its disk is
	// trusted).
	"trust-any-journal": &BrokenTrustAnyJournal,
}

// brokenOptions are the runs that find each (a topology that exercises
// the rule).
var brokenOptions = map[string]Options{
	"trust-any-journal": {Topology: "strict-pair"},
}

// BrokenNames lists the broken builds.
func BrokenNames() []string {
	var out []string
	for k := range broken {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Break turns on the broken build name.
func Break(name string) error {
	p, ok := broken[name]
	if !ok {
		return fmt.Errorf("sim: no broken build %q (have %v)", name, BrokenNames())
	}
	*p = true
	return nil
}

// Unbreak turns every broken build off.
func Unbreak() {
	for _, p := range broken {
		*p = false
	}
}
