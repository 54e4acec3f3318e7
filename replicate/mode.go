package replicate

import "time"

// State is a destination's current standing for publishers' acks.
type State uint8

// Destination states.
const (
	// StateAsync: configured async; never holds acks.
	StateAsync State = iota
	// StateSync: configured sync, connected and caught up; holds acks.
	StateSync
	// StateDowngraded: configured sync but away or lagging for longer than
	// the downgrade age; does not hold acks until it catches up.
	StateDowngraded
)

func (s State) String() string {
	switch s {
	case StateSync:
		return "sync"
	case StateDowngraded:
		return "downgraded"
	}
	return "async"
}

// nextState is the downgrade/upgrade rule. lag is the age of the oldest
// message the destination should have and has not acknowledged (0 when it
// has everything); away is how long it has been unreachable (disconnected,
// never reached since this instance started, or its link refused: a fork),
// 0 while connected. A sync destination is downgraded when away or lag
// exceeds downgradeAfter (Never: not at all); a downgraded one is upgraded
// once it is connected and its lag is below upgradeBelow. The gap between
// the two ages keeps a destination near the limit from flapping.
func nextState(configured Mode, cur State, connected bool, away, lag, downgradeAfter, upgradeBelow time.Duration) State {
	if configured == Async {
		return StateAsync
	}
	switch cur {
	case StateSync:
		if (!connected && away > downgradeAfter) || lag > downgradeAfter {
			return StateDowngraded
		}
		return StateSync
	default:
		if connected && lag < upgradeBelow {
			return StateSync
		}
		return StateDowngraded
	}
}
