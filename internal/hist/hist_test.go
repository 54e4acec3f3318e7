package hist

import (
	"testing"
)

func TestBuckets(t *testing.T) {
	h := New(10)
	for _, v := range []int64{-5, 0, 10, 11, 20, 21, 40, 10 << 30} {
		h.Observe(v)
	}
	s := h.Snapshot()
	want := map[int]uint64{0: 3, 1: 2, 2: 2, Buckets: 1}
	for i, c := range s.Counts {
		if c != want[i] {
			t.Errorf("bucket %d (<= %d): %d, want %d", i, s.Bound(i), c, want[i])
		}
	}
	if s.Count() != 8 {
		t.Errorf("count %d, want 8", s.Count())
	}
	if wantSum := uint64(10 + 11 + 20 + 21 + 40 + 10<<30); s.Sum != wantSum {
		t.Errorf("sum %d, want %d", s.Sum, wantSum)
	}
	cum := s.Cumulative(0.1)
	if cum[1] != 3 || cum[2] != 5 || cum[4] != 7 || cum[float64(s.Bound(Buckets-1))*0.1] != 7 {
		t.Errorf("cumulative %v", cum)
	}
}

func TestMerge(t *testing.T) {
	a, b := New(1), New(1)
	a.Observe(1)
	b.Observe(1)
	b.Observe(3)
	var m Snapshot
	m.Merge(a.Snapshot())
	m.Merge(b.Snapshot())
	if m.Count() != 3 || m.Counts[0] != 2 || m.Counts[2] != 1 || m.Sum != 5 || m.Base != 1 {
		t.Errorf("merged %+v", m)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	h := New(1000)
	if n := testing.AllocsPerRun(1000, func() { h.Observe(12345) }); n != 0 {
		t.Errorf("Observe allocates %v times", n)
	}
}

func TestZeroValueCountsWithBaseOne(t *testing.T) {
	var h Histogram
	h.Observe(3)
	if s := h.Snapshot(); s.Base != 1 || s.Counts[2] != 1 {
		t.Errorf("zero value: %+v", s)
	}
}
