package sim

// rangeSet is a set of sequences: everything up to floor, and the members
// above it (client/progress.go's rangeSet, kept simple: the simulator's
// sets are small).
type rangeSet struct {
	floor uint64
	above map[uint64]bool
}

func (r *rangeSet) contains(x uint64) bool { return x <= r.floor || r.above[x] }

func (r *rangeSet) add(x uint64) {
	if x <= r.floor {
		return
	}
	if x == r.floor+1 {
		r.floor = x
		for r.above[r.floor+1] {
			delete(r.above, r.floor+1)
			r.floor++
		}
		return
	}
	if r.above == nil {
		r.above = map[uint64]bool{}
	}
	r.above[x] = true
}
