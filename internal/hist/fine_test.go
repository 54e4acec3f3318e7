package hist

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

func TestFineIndexBounds(t *testing.T) {
	// Every value lands in a bucket whose bounds hold it; buckets are in
	// order and adjacent.
	prevHi := uint64(0)
	for i := 0; i < FineBuckets; i++ {
		lo, hi := FineBounds(i)
		if lo != prevHi {
			t.Fatalf("bucket %d starts at %d, the previous ended at %d", i, lo, prevHi)
		}
		if i == FineBuckets-1 {
			break // its hi wraps past 2^64
		}
		if hi <= lo {
			t.Fatalf("bucket %d: [%d, %d)", i, lo, hi)
		}
		if lo >= FineSub && float64(hi-lo) > float64(lo)/FineSub {
			t.Fatalf("bucket %d: [%d, %d) wider than 1/%d of its bound", i, lo, hi, FineSub)
		}
		prevHi = hi
	}
	for _, v := range []int64{-3, 0, 1, 7, 8, 9, 15, 16, 17, 1000, 123456789, math.MaxInt64} {
		i := FineIndex(v)
		lo, hi := FineBounds(i)
		u := uint64(max(v, 0))
		if u < lo || (i < FineBuckets-1 && u >= hi) {
			t.Errorf("value %d in bucket %d = [%d, %d)", v, i, lo, hi)
		}
	}
}

func TestFineQuantile(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	var h Fine
	vals := make([]float64, 20000)
	for i := range vals {
		v := int64(math.Exp(rng.NormFloat64()*0.8) * 300e3) // lognormal around 300 µs
		vals[i] = float64(v)
		h.Observe(v)
	}
	sort.Float64s(vals)
	s := h.Snapshot()
	if s.Count() != uint64(len(vals)) {
		t.Fatalf("count %d", s.Count())
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := s.Quantile(q)
		if math.Abs(got-exact)/exact > 0.07 {
			t.Errorf("q%.2f: %.0f, exact %.0f", q, got, exact)
		}
	}
	// Sub: the difference of two snapshots holds what came between.
	before := h.Snapshot()
	h.Observe(5e6)
	after := h.Snapshot()
	after.Sub(&before)
	if after.Count() != 1 || after[FineIndex(5e6)] != 1 {
		t.Errorf("difference holds %d observations", after.Count())
	}
	if got := QuantileOf(after[:FineIndex(5e6)+1], 0.5); got < 4.5e6 || got > 5.5e6 {
		t.Errorf("p50 of one 5 ms value: %.0f", got)
	}
	var empty FineCounts
	if empty.Quantile(0.5) != 0 {
		t.Error("empty histogram has a quantile")
	}
}

func TestFineObserveAllocs(t *testing.T) {
	var h Fine
	if n := testing.AllocsPerRun(1000, func() { h.Observe(123456) }); n != 0 {
		t.Errorf("Observe allocates %.1f", n)
	}
}

func BenchmarkFineObserve(b *testing.B) {
	var h Fine
	for i := 0; i < b.N; i++ {
		h.Observe(int64(i) * 977)
	}
}
