package replicate

import (
	"time"

	"github.com/tandemhq/tandem/internal/rsm"
)

// State is a destination's current standing for publishers' acks (the
// machine's: internal/rsm).
type State = rsm.State

// Destination states.
const (
	// StateAsync: configured async; never holds acks.
	StateAsync = rsm.StateAsync
	// StateSync: configured sync, connected and caught up; holds acks.
	StateSync = rsm.StateSync
	// StateDowngraded: configured sync but away or lagging for longer than
	// the downgrade age; does not hold acks until it catches up.
	StateDowngraded = rsm.StateDowngraded
)

// nextState is rsm.NextState in the configuration's units.
func nextState(configured Mode, cur State, connected bool, away, lag, downgradeAfter, upgradeBelow time.Duration) State {
	return rsm.NextState(configured == Sync, cur, connected, int64(away), int64(lag), int64(downgradeAfter), int64(upgradeBelow))
}
