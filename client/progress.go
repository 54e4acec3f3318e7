package client

import (
	"errors"

	"github.com/tandemhq/tandem/internal/hasm"
)

// ErrProgressBound matches the OnError report that a subscription's
// progress or delivered filter passed MaxProgressRanges and forgot its
// oldest ranges (at-least-once for them, never loss).
var ErrProgressBound = errors.New("progress bound reached")

// MaxProgressRanges bounds the ranges a resumable subscription keeps (its
// discarded progress over all origins and publishers, and, separately, its
// delivered filter). Past it the oldest range is forgotten: those messages
// may be delivered again after a resume (at-least-once for the oldest
// part), never lost. Each forgotten range is counted and reported.
const MaxProgressRanges = hasm.MaxProgressRanges

// seqRange is an inclusive range of sequences.
type seqRange = hasm.Range

// rangeSet is a set of sequences: everything up to floor, and the disjoint,
// non-adjacent ranges above floor+1 (sorted): internal/hasm's RangeSet,
// which the bookmark stores keep per origin and publisher.
type rangeSet struct{ hasm.RangeSet }

func (r *rangeSet) contains(x uint64) bool                 { return r.Contains(x) }
func (r *rangeSet) add(x uint64) (delta int, changed bool) { return r.Add(x) }
func (r *rangeSet) forgetOldest() bool                     { return r.ForgetOldest() }
func (r *rangeSet) set(floor uint64, ranges []seqRange)    { r.Set(floor, ranges) }
func validRanges(floor uint64, ranges []seqRange) bool     { return hasm.ValidRanges(floor, ranges) }

// seqFilter is the delivered filter of an HA subscription: internal/hasm's
// SeqFilter (what HASubscription uses through hasm.SubFilter), with its
// counts mirrored for the tests.
type seqFilter struct {
	f         hasm.SeqFilter
	nRanges   int
	forgotten uint64
}

func newSeqFilter() *seqFilter { return &seqFilter{} }

func (f *seqFilter) contains(id, x uint64) bool { return f.f.Contains(id, x) }

// add puts (id, x) in the filter; it reports whether a range had to be
// forgotten to stay within the bound.
func (f *seqFilter) add(id, x uint64) (forgot bool) {
	forgot = f.f.Add(id, x)
	f.nRanges, f.forgotten = f.f.Ranges(), f.f.Forgotten()
	return forgot
}
