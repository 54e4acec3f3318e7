package client

import (
	"errors"
	"sort"

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
type seqRange struct{ Lo, Hi uint64 }

// rangeSet is a set of sequences: everything up to floor, and the disjoint,
// non-adjacent ranges above floor+1 in ranges (sorted). floor is the top of
// the contiguous run from 1: the oldest sequence not in the set is floor+1.
type rangeSet struct {
	floor  uint64
	ranges []seqRange
}

// contains reports whether x is in the set.
func (r *rangeSet) contains(x uint64) bool {
	if x <= r.floor {
		return true
	}
	i := sort.Search(len(r.ranges), func(i int) bool { return r.ranges[i].Hi >= x })
	return i < len(r.ranges) && r.ranges[i].Lo <= x
}

// add puts x in the set and returns the change in the number of ranges
// and whether the set changed. Adding in order (floor+1) does not allocate.
func (r *rangeSet) add(x uint64) (delta int, changed bool) {
	if x <= r.floor {
		return 0, false
	}
	if x == r.floor+1 {
		r.floor = x
		if len(r.ranges) > 0 && r.ranges[0].Lo == x+1 {
			r.floor = r.ranges[0].Hi
			r.ranges = append(r.ranges[:0], r.ranges[1:]...)
			return -1, true
		}
		return 0, true
	}
	i := sort.Search(len(r.ranges), func(i int) bool { return r.ranges[i].Hi >= x-1 })
	if i < len(r.ranges) {
		g := &r.ranges[i]
		if g.Lo <= x && x <= g.Hi {
			return 0, false
		}
		if x == g.Hi+1 {
			g.Hi = x
			if i+1 < len(r.ranges) && r.ranges[i+1].Lo == x+1 {
				g.Hi = r.ranges[i+1].Hi
				r.ranges = append(r.ranges[:i+1], r.ranges[i+2:]...)
				return -1, true
			}
			return 0, true
		}
		if x+1 == g.Lo {
			g.Lo = x
			return 0, true
		}
	}
	r.ranges = append(r.ranges, seqRange{})
	copy(r.ranges[i+1:], r.ranges[i:])
	r.ranges[i] = seqRange{x, x}
	return 1, true
}

// forgetOldest drops the lowest range (not the floor): its sequences are
// no longer in the set.
func (r *rangeSet) forgetOldest() bool {
	if len(r.ranges) == 0 {
		return false
	}
	r.ranges = append(r.ranges[:0], r.ranges[1:]...)
	return true
}

// set replaces the contents (ranges must be sorted, disjoint, above
// floor+1; the loaders check).
func (r *rangeSet) set(floor uint64, ranges []seqRange) {
	r.floor = floor
	r.ranges = append(r.ranges[:0], ranges...)
}

// validRanges reports whether ranges are sorted, disjoint, non-adjacent and
// above floor+1.
func validRanges(floor uint64, ranges []seqRange) bool {
	prev := floor
	for _, g := range ranges {
		if g.Lo > g.Hi || prev == ^uint64(0) || g.Lo <= prev+1 {
			return false
		}
		prev = g.Hi
	}
	return true
}

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
