// Package hist is a fixed-bucket histogram that hot paths can record into
// without allocating or locking: one atomic add per bucket count, one for
// the sum. Buckets are powers of two of a base unit, so finding one is a
// bit-length, not a search. A histogram has one writer or several (every
// operation is atomic); readers take a Snapshot at any time, and snapshots
// of several shards (one per event loop) add up with Merge.
package hist

import (
	"math/bits"
	"sync/atomic"
)

// Buckets is the number of finite buckets: upper bounds base, 2*base, ...,
// base<<(Buckets-1); larger values land in the overflow (+Inf) bucket.
const Buckets = 24

// Histogram counts observations of non-negative integer values (nanoseconds,
// records) in exponential buckets. Call New or Init to set the base; the
// zero value counts with base 1.
type Histogram struct {
	base   uint64
	counts [Buckets + 1]atomic.Uint64 // counts[Buckets]: above the last bound
	sum    atomic.Uint64
}

// New returns a histogram whose first bucket holds values up to base.
func New(base uint64) *Histogram {
	h := &Histogram{}
	h.Init(base)
	return h
}

// Init sets the base of a histogram embedded in another struct.
func (h *Histogram) Init(base uint64) {
	if base == 0 {
		base = 1
	}
	h.base = base
}

// Observe records one value (negative values count as 0).
func (h *Histogram) Observe(v int64) {
	if v < 0 {
		v = 0
	}
	u, base := uint64(v), max(h.base, 1)
	i := 0
	if u > base {
		i = min(bits.Len64((u-1)/base), Buckets)
	}
	h.counts[i].Add(1)
	h.sum.Add(u)
}

// Snapshot is a histogram's counts at one moment.
type Snapshot struct {
	Base   uint64
	Counts [Buckets + 1]uint64 // per bucket, not cumulative
	Sum    uint64
}

// Snapshot reads the counts. Concurrent observations may be half counted
// (the bucket but not yet the sum); each value read is exact.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Base: max(h.base, 1)}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = h.sum.Load()
	return s
}

// Merge adds o's counts to s (both with the same base; s takes o's base
// when it has none).
func (s *Snapshot) Merge(o Snapshot) {
	if s.Base == 0 {
		s.Base = o.Base
	}
	for i := range s.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.Sum += o.Sum
}

// Count is the number of observations.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Bound is the upper bound of finite bucket i, in the base unit.
func (s Snapshot) Bound(i int) uint64 { return s.Base << i }

// Cumulative returns the cumulative count per finite bucket's upper bound,
// scaled by unit (1e-9 turns nanoseconds into seconds): the form
// Prometheus' const histograms take.
func (s Snapshot) Cumulative(unit float64) map[float64]uint64 {
	m := make(map[float64]uint64, Buckets)
	var n uint64
	for i := 0; i < Buckets; i++ {
		n += s.Counts[i]
		m[float64(s.Bound(i))*unit] = n
	}
	return m
}
