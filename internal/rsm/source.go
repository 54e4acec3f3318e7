package rsm

import (
	"fmt"

	"github.com/tandemhq/tandem/record"
)

// Source is what this instance holds of one peer's stream to it: the
// peer journal followed, how far records were received and stored (not
// necessarily durable), the local seq whose durability covers all of it,
// and how far the stream is durable here and acknowledged (Durable: what
// Resume reports after a reconnection or restart).
//
// Inputs: Follow (a link's Hello named the peer's journal), Batch (a
// batch's range arrived: continuity check), Fresh (per record: is it new),
// Received (the batch's new records were stored under local seq waitFor),
// Acked (a batch acknowledgment went out: the position is durable here).
type Source struct {
	journal     record.JournalID
	received    uint64
	storedLocal uint64
	durable     Position
}

// NewSource returns a source holding durable (a position file's, or zero).
func NewSource(durable Position) *Source {
	return &Source{journal: durable.Journal, received: durable.Seq, durable: durable}
}

// Journal returns the peer journal whose stream is followed.
func (s *Source) Journal() record.JournalID { return s.journal }

// ReceivedSeq returns the highest source seq examined and stored.
func (s *Source) ReceivedSeq() uint64 { return s.received }

// Durable returns how far the peer's stream is durable here.
func (s *Source) Durable() Position { return s.durable }

// Follow makes journal the stream followed and returns the position to
// report in Resume: the one held, even of another journal (the source
// decides; a stream of another journal starts afresh). switched: the
// journal changed (what was held of the old one is dropped).
func (s *Source) Follow(journal record.JournalID) (held Position, switched bool) {
	held = s.durable
	if s.journal != journal {
		switched = held.Seq != 0 || s.received != 0
		s.journal, s.received = journal, 0
		s.durable = Position{Journal: journal}
	}
	return held, switched
}

// Batch checks a batch of journal covering source seqs [from, through]:
// it must be of the journal followed and continue the stream (no gap).
func (s *Source) Batch(journal record.JournalID, from uint64) error {
	if s.journal != journal {
		return fmt.Errorf("batch of journal %s, the stream followed here is journal %s", journal, s.journal)
	}
	if from > s.received+1 {
		return fmt.Errorf("gap in the stream: batch starts at %d, we hold up to %d", from, s.received)
	}
	return nil
}

// Fresh reports whether the record at source seq must be stored: it was
// not received before (a resend after a reconnection repeats some).
func (s *Source) Fresh(seq uint64) bool { return seq > s.received }

// Received accounts for a batch through source seq through (record CRC
// crc) whose new records were stored under local seq stored (0: none were
// new). It returns the acknowledgment to queue: it may go out once the
// local journal is durable through its WaitFor, which also covers records
// of this range stored from an earlier batch (over a replaced link) whose
// append may not be durable yet.
func (s *Source) Received(through uint64, crc uint32, stored uint64) PendingAck {
	s.storedLocal = max(s.storedLocal, stored)
	s.received = max(s.received, through)
	return PendingAck{WaitFor: s.storedLocal, Through: through, CRC: crc}
}

// Acked records that an acknowledgment through p went out: p is durable
// here. A position of another journal, or not beyond the one held, is
// ignored.
func (s *Source) Acked(p Position) {
	if p.Journal == s.durable.Journal && p.Seq > s.durable.Seq {
		s.durable = p
	}
}

// PendingAck is a batch acknowledgment waiting for the local disk.
type PendingAck struct {
	WaitFor uint64 // local seq that must be durable first
	Through uint64 // source seq to acknowledge
	CRC     uint32 // the source's CRC of its record at Through
}

// AckQueue orders a link's batch acknowledgments: each goes out once the
// local journal is durable through its WaitFor, in order, and the ones
// durable together are coalesced into the newest.
type AckQueue struct {
	q    []PendingAck
	head int
}

// Push queues an acknowledgment (in batch order).
func (q *AckQueue) Push(a PendingAck) {
	if q.head > 0 && len(q.q) == cap(q.q) {
		q.q = q.q[:copy(q.q, q.q[q.head:])] // reuse the popped prefix
		q.head = 0
	}
	q.q = append(q.q, a)
}

// Len returns how many acknowledgments wait.
func (q *AckQueue) Len() int { return len(q.q) - q.head }

// Next returns the local seq that must be durable before the oldest
// waiting acknowledgment can go out.
func (q *AckQueue) Next() (waitFor uint64, ok bool) {
	if q.head == len(q.q) {
		return 0, false
	}
	return q.q[q.head].WaitFor, true
}

// Ready pops every waiting acknowledgment covered by synced (the local
// journal's durable seq), oldest first, stopping at the first that is not,
// and returns the newest popped: the one to send.
func (q *AckQueue) Ready(synced uint64) (PendingAck, bool) {
	var a PendingAck
	ok := false
	for q.head < len(q.q) && q.q[q.head].WaitFor <= synced {
		a, ok = q.q[q.head], true
		q.head++
	}
	if q.head == len(q.q) {
		q.q, q.head = q.q[:0], 0
	}
	return a, ok
}

// Reset drops every waiting acknowledgment (the link closed).
func (q *AckQueue) Reset() { q.q, q.head = q.q[:0], 0 }
