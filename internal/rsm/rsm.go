// Package rsm holds replication's decisions as pure, single-threaded state
// machines: no net, no os, no clock, no goroutines, no map iteration. Time
// is an int64 of nanoseconds the caller passes in (its clock: the wall
// clock in replicate, a logical one in the simulator, sim/).
//
// Two drivers run them: replicate (sockets or io_uring rings, the journal,
// goroutines; it calls these machines under its mutexes) and the
// deterministic simulator (sim/, one goroutine, a simulated network and
// journal). Whatever replicate decides about a destination's state, where
// a stream resumes, what a batch may hold and when a batch is acknowledged
// is decided here, so the simulator's seeds exercise the same code.
//
// The machines:
//
//   - Dest: one destination of this instance's journal: its state for
//     publishers' acks (sync, async, downgraded: NextState), whether it is
//     connected or refused (a fork), where its stream resumes
//     (CheckResume), the send window (what is in flight, in bytes) and
//     how far it has acknowledged.
//   - Source: what this instance holds of one peer's stream: which
//     journal of the peer is followed, how far records were received and
//     stored, the batch acknowledgments waiting for the local disk, and
//     how far the stream is durable here (what Resume reports).
//   - Filter: which stored records a destination gets.
//   - SyncPoint, SyncedPeers, Hold: the ack point and retention hold over
//     a set of destinations.
package rsm

import (
	"fmt"

	"github.com/tandemhq/tandem/record"
)

// Position is how far one journal's stream is held: the journal's id, the
// source seq of the last record held, and that record's CRC (0 when
// unknown: the check by CRC is then skipped by the source only if Seq is
// 0).
type Position struct {
	Journal record.JournalID
	Seq     uint64
	CRC     uint32
}

// Never as a downgrade age makes sync destinations strict: never
// downgraded, acks wait for them however long they are away.
const Never = int64(1<<63 - 1)

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

// NextState is the downgrade/upgrade rule. lag is the age of the oldest
// message the destination should have and has not acknowledged (0 when it
// has everything); away is how long it has been unreachable (disconnected,
// never reached since this instance started, or its link refused: a fork),
// 0 while connected. A sync destination is downgraded when away or lag
// exceeds downgradeAfter (Never: not at all); a downgraded one is upgraded
// once it is connected and its lag is below upgradeBelow. The gap between
// the two ages keeps a destination near the limit from flapping. All
// durations in nanoseconds.
func NextState(sync bool, cur State, connected bool, away, lag, downgradeAfter, upgradeBelow int64) State {
	if !sync {
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

// Verdict is what a source does with a destination's position.
type Verdict uint8

const (
	// ResumeAt: the destination holds this journal's stream up to a
	// record the source holds with the same CRC: ship from just after it.
	ResumeAt Verdict = iota
	// ResumeNewStream: the destination holds nothing of this journal (a
	// zero position, or a position in another journal: the source's data
	// directory was wiped or replaced): ship from the first retained
	// record.
	ResumeNewStream
	// ResumeBehind: the position is this journal's but older than the
	// first retained record, so it cannot be verified: ship from the
	// first retained record; what lies between was deleted by retention.
	ResumeBehind
	// ResumeFork: the destination holds records of this journal that the
	// source does not (a seq beyond the source's last, or a CRC that
	// differs: the source runs on a restored old copy of its data
	// directory). Nothing is shipped until an operator resolves it.
	ResumeFork
)

func (v Verdict) String() string {
	switch v {
	case ResumeAt:
		return "resume"
	case ResumeNewStream:
		return "new-stream"
	case ResumeBehind:
		return "behind-retention"
	}
	return "fork"
}

// CheckResume decides where a source with journal self, holding source
// seqs [first, last] (last: durable), resumes a destination that reports
// pos. crcAt returns the CRC of the source's record at a seq in
// [first, last]. from is the first seq to ship; reason explains a fork.
// It is raft's log matching: a position is trusted only if the source
// holds the same record (same CRC) at it.
func CheckResume(self record.JournalID, pos Position, first, last uint64, crcAt func(seq uint64) (uint32, error)) (from uint64, v Verdict, reason string) {
	if first == 0 {
		first = 1
	}
	switch {
	case pos.Journal != self:
		// A zero position holds nothing; a position in another journal is
		// of no use to this one: both start this journal's stream afresh.
		return first, ResumeNewStream, ""
	case pos.Seq == 0:
		return first, ResumeNewStream, ""
	case pos.Seq > last:
		return 0, ResumeFork, fmt.Sprintf("destination holds journal %s up to seq %d, this source only up to %d "+
			"(the source runs on an older copy of its data directory)", self, pos.Seq, last)
	case pos.Seq < first:
		return first, ResumeBehind, ""
	}
	crc, err := crcAt(pos.Seq)
	if err != nil {
		return 0, ResumeFork, fmt.Sprintf("cannot read seq %d to check the destination's position: %v", pos.Seq, err)
	}
	if crc != pos.CRC {
		return 0, ResumeFork, fmt.Sprintf("destination's record at seq %d of journal %s has CRC %08x, this source's %08x "+
			"(another timeline: the source was restored from an older copy and ran on)", pos.Seq, self, pos.CRC, crc)
	}
	return pos.Seq + 1, ResumeAt, ""
}

// LostOwnRecords reports whether a destination lost records of its own
// stream that this instance holds: it runs on journal, durable through
// last (its Hello), and we hold that journal's stream beyond last (held:
// our Source's received seq of it). That happens to a data directory
// restored from an older copy. The destination's position of our stream
// cannot then vouch for the records of its own origin we hold (the filter
// never ships a destination its own records): they may be only here. Its
// resume becomes a new stream, reseeded (Filter.Reseed), so they go back
// to it. Found by the simulator (docs/architecture.md).
func LostOwnRecords(heldJournal record.JournalID, held uint64, journal record.JournalID, last uint64) bool {
	return heldJournal == journal && held > last
}
