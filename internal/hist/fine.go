package hist

import (
	"math/bits"
	"sync/atomic"
)

// Fine is a log-linear histogram for latency quantiles: each power of two
// is split into FineSub equal buckets, so a bucket is at most 1/FineSub
// (12.5%) of its lower bound wide and a quantile read from it, interpolated
// inside the bucket, is within about 6% of the value observed. The power-of-
// two Histogram above is too coarse for that (a p50 of 300 µs lands in
// "256-512 µs").
//
// Layout (the index of the bucket holding value v >= 0, used as is by
// FineCounts' consumers):
//
//	v < FineSub:                 index v (one bucket per value)
//	else, e = bit length of v - 1 (e >= 3), m = the FineSub-1 bits below
//	its top bit:                 index (e-2)*FineSub + m
//
// so bucket i >= FineSub holds [ (FineSub+m) << (e-3), (FineSub+m+1) << (e-3) )
// with e = i/FineSub + 2, m = i%FineSub. FineBuckets covers every uint64.
//
// Observe is one atomic add (plus one for the count); any number of
// goroutines may observe and snapshot concurrently; nothing allocates.
type Fine struct {
	counts [FineBuckets]atomic.Uint64
}

const (
	fineSubBits = 3
	// FineSub is the number of buckets per power of two.
	FineSub = 1 << fineSubBits
	// FineBuckets is the number of buckets of a Fine histogram.
	FineBuckets = (64 - fineSubBits + 1) * FineSub
)

// FineIndex is the bucket of value v (negative values count as 0).
func FineIndex(v int64) int {
	if v < FineSub {
		return int(max(v, 0))
	}
	u := uint64(v)
	e := bits.Len64(u) - 1
	m := int(u>>(e-fineSubBits)) & (FineSub - 1)
	return (e-fineSubBits+1)*FineSub + m
}

// FineBounds is the half-open range [lo, hi) of values bucket i holds.
func FineBounds(i int) (lo, hi uint64) {
	if i < FineSub {
		return uint64(i), uint64(i) + 1
	}
	e := i/FineSub + fineSubBits - 1
	m := uint64(i % FineSub)
	shift := e - fineSubBits
	return (FineSub + m) << shift, (FineSub + m + 1) << shift
}

// Observe records one value.
func (h *Fine) Observe(v int64) { h.counts[FineIndex(v)].Add(1) }

// FineCounts is a snapshot of a Fine histogram: the count per bucket.
type FineCounts [FineBuckets]uint64

// Snapshot reads the counts (each exact; concurrent observations may or
// may not be in it).
func (h *Fine) Snapshot() (s FineCounts) {
	for i := range h.counts {
		s[i] = h.counts[i].Load()
	}
	return s
}

// Count is the number of observations.
func (s *FineCounts) Count() uint64 {
	var n uint64
	for _, c := range s {
		n += c
	}
	return n
}

// Sub removes o's counts (an earlier snapshot of the same histogram), so
// that s describes what was observed between the two.
func (s *FineCounts) Sub(o *FineCounts) {
	for i := range s {
		s[i] -= min(o[i], s[i])
	}
}

// Quantile returns the value below which a fraction q (0..1) of the
// observations lie, interpolated linearly inside the bucket that holds it;
// 0 without observations.
func (s *FineCounts) Quantile(q float64) float64 {
	return quantile(s[:], q)
}

// QuantileOf is Quantile for counts in the Fine layout held in a slice
// (shorter than FineBuckets when trailing empty buckets were cut, as in
// the stat document).
func QuantileOf(counts []uint64, q float64) float64 { return quantile(counts, q) }

func quantile(counts []uint64, q float64) float64 {
	var n uint64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	// rank of the wanted observation, 1..n
	rank := max(q*float64(n), 1)
	var seen uint64
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if float64(seen+c) >= rank {
			lo, hi := FineBounds(i)
			frac := (rank - float64(seen)) / float64(c)
			return float64(lo) + frac*float64(hi-lo)
		}
		seen += c
	}
	lo, _ := FineBounds(len(counts) - 1)
	return float64(lo)
}
