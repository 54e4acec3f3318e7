package sim

import (
	"fmt"
	"sort"

	"github.com/tandemhq/tandem/internal/hasm"
	"github.com/tandemhq/tandem/internal/rsm"
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
	// A sync destination counts for nothing until reached after a restart
	// (issue #10 §6, "a restarted instance holds acks for its sync peers",
	// undone): rsm.NewDest.
	"restart-downgraded": &rsm.Broken.StartDowngraded,
	// The instance limps on after its journal fails (issue #10 §4's
	// fail-stop undone): it keeps its connections and acks what it had
	// staged.
	"limp-on": &BrokenLimpOn,
	// A client publish that reuses a sequence for another message is
	// taken as a duplicate and acknowledged (issue #10 §3 undone).
	"conflict-as-duplicate": &BrokenConflictAsDuplicate,
	// A publisher stores and numbers messages before its first logon (the
	// HA client before the fix this simulator prompted): after a restart
	// with a memory store they collide with acknowledged sequences.
	"publish-before-logon": &BrokenPublishBeforeLogon,
	// Origins per journal, not per run, and no LostOwnRecords: a data
	// directory restored from an old copy (the product before the fix).
	"no-epochs": &BrokenNoEpochs,
	// A peer back with an empty data directory is not re-sent what it had
	// shipped here (rsm.Filter.Reseed off).
	"no-reseed": &BrokenNoReseed,
	// Issue #11 §1 undone: the subscriber's delivered filter is a
	// per-publisher high-water mark, so a late message is dropped.
	"publisher-high-water-mark": &hasm.Broken.HighWaterMark,
	// Issue #11 §2 undone: a re-subscribe starts at the server's current
	// position (a subscription without a sub id).
	"resubscribe-at-now": &hasm.Broken.ResubscribeAtNow,
}

// brokenOptions are the runs that find each (a topology that exercises
// the rule).
var brokenOptions = map[string]Options{
	"trust-any-journal":  {Topology: "chain"},
	"restart-downgraded": {Topology: "strict-pair"},
	// a publisher restarted with a memory store before its server is back
	"publish-before-logon": {Topology: "single"},
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
