package journal

import (
	"fmt"
	"math"

	"github.com/tandemhq/tandem/record"
)

// FindTime returns the seq of the first record, in journal order, whose
// time field is at or after t (Unix nanoseconds), among the records synced
// now; SyncedSeq()+1 when there is none (a cursor there sees what is
// stored from now on). Record times are not monotonic in a journal
// (replicated records keep their origin's time), so this is a position:
// records after it may be older than t, records before it are all older.
//
// It skips every segment whose greatest record time is below t and scans
// the first one that has one. A sealed segment's greatest time is read
// once (a scan of its record headers) and kept; the tail's synced part is
// scanned each time. Segments are referenced while scanned, so neither
// retention nor the flusher waits for it.
func (j *Journal) FindTime(t int64) (uint64, error) {
	if j.closed.Load() {
		return 0, ErrClosed
	}
	synced := j.synced.Load()
	type segView struct {
		s      *segment
		last   uint64
		sealed bool
	}
	j.segMu.RLock()
	segs := make([]segView, len(j.segs))
	for i, s := range j.segs {
		s.ref()
		segs[i] = segView{s: s, last: s.last, sealed: s.sealed}
	}
	j.segMu.RUnlock()
	defer func() {
		for _, v := range segs {
			v.s.unref(j)
		}
	}()
	for _, v := range segs {
		s, last := v.s, v.last
		if !v.sealed {
			last = synced
		}
		last = min(last, synced)
		if last < s.first {
			continue // empty, or nothing synced in it yet
		}
		if v.sealed && s.maxTimeKnown.Load() && s.maxTime.Load() < t {
			continue
		}
		seq, maxTime, err := scanTime(s, last, t)
		if err != nil {
			return 0, err
		}
		if seq != 0 {
			return seq, nil
		}
		if v.sealed && last == v.last {
			s.maxTime.Store(maxTime)
			s.maxTimeKnown.Store(true)
		}
	}
	return synced + 1, nil
}

// scanTime reads the records first..last of s: the first whose time is at
// or after t (0 if none), and the greatest time seen.
func scanTime(s *segment, last uint64, t int64) (seq uint64, maxTime int64, err error) {
	maxTime = math.MinInt64
	off := int64(segHeaderSize)
	for want := s.first; want <= last; want++ {
		v, n, perr := record.Parse(s.data[off:])
		if perr != nil || v.Seq() != want {
			return 0, 0, fmt.Errorf("%w: %s at offset %d: want seq %d (%v)", ErrCorrupt, s.name, off, want, perr)
		}
		if v.Time() >= t {
			return want, 0, nil
		}
		maxTime = max(maxTime, v.Time())
		off += int64(n)
	}
	return 0, maxTime, nil
}
