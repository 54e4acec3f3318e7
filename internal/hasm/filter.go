package hasm

// MaxProgressRanges bounds the ranges a subscription's delivered filter
// keeps (the client's MaxProgressRanges): past it the oldest range of the
// publisher with the most ranges is forgotten (at-least-once for those
// messages, never loss).
const MaxProgressRanges = 4096

// Range is an inclusive range of sequences.
type Range struct{ Lo, Hi uint64 }

// RangeSet is a set of sequences: everything up to Floor, and disjoint,
// non-adjacent, sorted ranges above Floor+1. The zero value is empty.
// Adding in order (Floor+1) does not allocate.
type RangeSet struct {
	floor  uint64
	ranges []Range
}

// Floor is the top of the contiguous run from 1 (the oldest sequence not in
// the set is Floor()+1).
func (r *RangeSet) Floor() uint64 { return r.floor }

// Len is the number of ranges above the floor.
func (r *RangeSet) Len() int { return len(r.ranges) }

// Contains reports whether x is in the set.
func (r *RangeSet) Contains(x uint64) bool {
	if x <= r.floor {
		return true
	}
	i := r.search(x)
	return i < len(r.ranges) && r.ranges[i].Lo <= x
}

// search returns the first range with Hi >= x (binary search, no closure).
func (r *RangeSet) search(x uint64) int {
	lo, hi := 0, len(r.ranges)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.ranges[m].Hi < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Add puts x in the set; it returns the change in the number of ranges and
// whether the set changed.
func (r *RangeSet) Add(x uint64) (delta int, changed bool) {
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
	i := r.search(x - 1)
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
	r.ranges = append(r.ranges, Range{})
	copy(r.ranges[i+1:], r.ranges[i:])
	r.ranges[i] = Range{x, x}
	return 1, true
}

// Ranges returns the ranges above the floor, sorted (read only: valid
// until the set changes).
func (r *RangeSet) Ranges() []Range { return r.ranges }

// Set replaces the contents: everything up to floor and ranges, which
// must be sorted, disjoint, non-adjacent and above floor+1 (ValidRanges).
func (r *RangeSet) Set(floor uint64, ranges []Range) {
	r.floor = floor
	r.ranges = append(r.ranges[:0], ranges...)
}

// SetFloor makes everything up to floor part of the set (the ranges are
// kept: a caller sets the floor of a set with none above it).
func (r *RangeSet) SetFloor(floor uint64) { r.floor = floor }

// ValidRanges reports whether ranges are sorted, disjoint, non-adjacent
// and above floor+1.
func ValidRanges(floor uint64, ranges []Range) bool {
	prev := floor
	for _, g := range ranges {
		if g.Lo > g.Hi || prev == ^uint64(0) || g.Lo <= prev+1 {
			return false
		}
		prev = g.Hi
	}
	return true
}

// ForgetOldest drops the lowest range above the floor.
func (r *RangeSet) ForgetOldest() bool {
	if len(r.ranges) == 0 {
		return false
	}
	r.ranges = append(r.ranges[:0], r.ranges[1:]...)
	return true
}

// SeqFilter is a set of (id, sequence) pairs bounded to MaxProgressRanges
// ranges in all. Ids are kept in a slice sorted by id, so the choice of
// what to forget does not depend on map order.
type SeqFilter struct {
	ids       []uint64
	sets      []RangeSet // sets[i] is ids[i]'s
	nRanges   int
	forgotten uint64
}

func (f *SeqFilter) find(id uint64) (int, bool) {
	lo, hi := 0, len(f.ids)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.ids[m] < id {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(f.ids) && f.ids[lo] == id
}

// Contains reports whether (id, x) is in the filter.
func (f *SeqFilter) Contains(id, x uint64) bool {
	i, ok := f.find(id)
	if ok && Broken.HighWaterMark {
		return x <= f.sets[i].highest()
	}
	return ok && f.sets[i].Contains(x)
}

// highest returns the highest sequence in the set.
func (r *RangeSet) highest() uint64 {
	if n := len(r.ranges); n > 0 {
		return r.ranges[n-1].Hi
	}
	return r.floor
}

// Add puts (id, x) in the filter and reports whether a range had to be
// forgotten to stay within the bound (the oldest range of the id with the
// most ranges, the lowest id on a tie).
func (f *SeqFilter) Add(id, x uint64) (forgot bool) {
	i, ok := f.find(id)
	if !ok {
		f.ids = append(f.ids, 0)
		copy(f.ids[i+1:], f.ids[i:])
		f.ids[i] = id
		f.sets = append(f.sets, RangeSet{})
		copy(f.sets[i+1:], f.sets[i:])
		f.sets[i] = RangeSet{}
	}
	d, _ := f.sets[i].Add(x)
	f.nRanges += d
	for f.nRanges > MaxProgressRanges {
		big := 0
		for j := range f.sets {
			if len(f.sets[j].ranges) > len(f.sets[big].ranges) {
				big = j
			}
		}
		f.sets[big].ForgetOldest()
		f.nRanges--
		f.forgotten++
		forgot = true
	}
	return forgot
}

// Ranges is the number of ranges held above the floors.
func (f *SeqFilter) Ranges() int { return f.nRanges }

// Forgotten counts the ranges forgotten to stay within the bound.
func (f *SeqFilter) Forgotten() uint64 { return f.forgotten }

// Discards answers whether the bookmark store holds the message being
// offered as discarded (the driver's view of its store; asked only for a
// message not in the delivered filter).
type Discards interface{ IsDiscarded() bool }

// SubFilter is one resumable subscription's duplicate filter: the
// publisher sequences handed to the application, per publisher. A message
// in it, or discarded in the bookmark store, is a duplicate (a server sends
// it again after a resume); a late message below a sequence delivered but
// not itself delivered is not. It is separate from the Machine so that the
// goroutine delivering a subscription's messages can use it without
// serialising with the rest of the machine; in a simulator it is just
// another value on the one goroutine.
type SubFilter struct {
	seen SeqFilter
	dups uint64
}

// Admit decides about a message from publisher pub with sequence pubSeq:
// false (and counted as a duplicate) if it was delivered already or the
// store says it was discarded. Call Delivered once the application has it.
// It does not allocate.
func (s *SubFilter) Admit(pub, pubSeq uint64, store Discards) bool {
	if s.seen.Contains(pub, pubSeq) || (store != nil && store.IsDiscarded()) {
		s.dups++
		return false
	}
	return true
}

// Delivered records that the message was handed to the application; it
// returns the filter's forgotten-range count when a range had to be
// forgotten to stay within MaxProgressRanges (0 otherwise).
func (s *SubFilter) Delivered(pub, pubSeq uint64) (forgotten uint64) {
	if s.seen.Add(pub, pubSeq) {
		return s.seen.forgotten
	}
	return 0
}

// Duplicates counts the messages Admit refused.
func (s *SubFilter) Duplicates() uint64 { return s.dups }

// Forgotten counts the ranges the filter forgot.
func (s *SubFilter) Forgotten() uint64 { return s.seen.forgotten }
