package journal

import (
	"fmt"
	"sort"

	"github.com/tandemhq/tandem/record"
)

// A Cursor reads records in seq order straight from the segment mappings.
// It sees only records <= SyncedSeq(). A Cursor is not safe for concurrent
// use; use one per reader.
//
// View lifetime: a View returned by Next points into the mapping of the
// segment the cursor is on. It stays valid until the next call to Next, Seek
// or Close on the same cursor, and not longer: once the cursor moves off a
// segment that retention deleted (or after Journal.Close) the mapping may be
// unmapped. Copy what you need to keep.
type Cursor struct {
	j   *Journal
	seg *segment // referenced; nil when not positioned yet
	off int64    // offset of record pos in seg
	pos uint64
	err error
}

// NewCursor returns a cursor positioned so Next returns the record with seq
// from. from == 0 means the oldest record held. If from < FirstSeq() the
// records were trimmed by retention: it returns an error wrapping
// ErrTrimmed (ask FirstSeq and start there if that is acceptable). from may
// be beyond SyncedSeq: Next returns the record once it is synced.
func (j *Journal) NewCursor(from uint64) (*Cursor, error) {
	if j.closed.Load() {
		return nil, ErrClosed
	}
	if from == 0 {
		from = j.FirstSeq()
	}
	c := &Cursor{j: j}
	if err := c.Seek(from); err != nil {
		return nil, err
	}
	return c, nil
}

// Seek positions the cursor so Next returns seq: a binary search over the
// segments by first seq, the sparse index, then a forward scan of fewer
// than IndexInterval records. It returns an error wrapping ErrTrimmed if
// seq is no longer held.
func (c *Cursor) Seek(seq uint64) error {
	c.release()
	c.pos = seq
	c.err = nil
	if first := c.j.FirstSeq(); seq < first {
		c.err = fmt.Errorf("%w: seq %d, first held is %d", ErrTrimmed, seq, first)
		return c.err
	}
	if seq <= c.j.synced.Load() && !c.resolve() {
		return c.err
	}
	return nil
}

// Pos returns the seq Next would return.
func (c *Cursor) Pos() uint64 { return c.pos }

// Err returns why Next stopped other than being caught up: ErrTrimmed if
// retention removed the records ahead of an unpositioned cursor, ErrCorrupt
// if a mapped record is inconsistent. Nil otherwise.
func (c *Cursor) Err() error { return c.err }

// Close releases the cursor's segment. The cursor is unusable afterwards.
func (c *Cursor) Close() {
	c.release()
	c.err = ErrClosed
}

func (c *Cursor) release() {
	if c.seg != nil {
		c.seg.unref(c.j)
		c.seg = nil
	}
}

// Next returns the next visible record and advances. It returns false when
// the cursor has caught up with SyncedSeq (call again later), or when the
// journal or cursor is closed or Err is set. It does not allocate.
func (c *Cursor) Next() (record.View, bool) {
	if c.err != nil || c.j.closed.Load() || c.pos > c.j.synced.Load() {
		return record.View{}, false
	}
	if c.seg == nil && !c.resolve() {
		return record.View{}, false
	}
	for {
		data := c.seg.data
		if c.off+4 <= int64(len(data)) && record.Length(data[c.off:]) != 0 {
			v, n, err := record.Parse(data[c.off:])
			if err != nil || v.Seq() != c.pos {
				c.err = fmt.Errorf("%w: %s offset %d: want seq %d, found %d (%v)", ErrCorrupt, c.seg.name, c.off, c.pos, v.Seq(), err)
				return record.View{}, false
			}
			c.off += int64(n)
			c.pos++
			return v, true
		}
		// End of this segment's records: pos is the next one's first.
		old := c.seg
		if !c.resolve() {
			return record.View{}, false
		}
		if c.seg == old {
			c.err = fmt.Errorf("%w: %s: seq %d missing at offset %d", ErrCorrupt, old.name, c.pos, c.off)
			return record.View{}, false
		}
	}
}

// resolve positions the cursor on the segment holding c.pos, which must be
// visible, taking a reference on it.
func (c *Cursor) resolve() bool {
	j := c.j
	j.segMu.RLock()
	seg := j.findSegmentLocked(c.pos)
	if seg != nil {
		seg.ref()
	}
	j.segMu.RUnlock()
	if seg == nil {
		if j.closed.Load() {
			c.err = ErrClosed
		} else {
			c.err = fmt.Errorf("%w: seq %d", ErrTrimmed, c.pos)
		}
		return false
	}
	c.release()
	c.seg = seg
	c.off = seg.locate(c.pos, j.opts.IndexInterval)
	return true
}

// findSegmentLocked returns the segment holding seq (which must be <=
// SyncedSeq), or nil if it was trimmed. Caller holds segMu.
func (j *Journal) findSegmentLocked(seq uint64) *segment {
	segs := j.segs
	i := sort.Search(len(segs), func(i int) bool { return segs[i].first > seq }) - 1
	if i < 0 {
		return nil
	}
	return segs[i]
}

// Find resolves a bookmark on this journal in O(log n) using b.Seq: it
// returns b.Seq if the record there is visible and has b.Publisher and
// b.PubSeq, else an error wrapping ErrNotFound.
func (j *Journal) Find(b record.Bookmark) (uint64, error) {
	if b.Seq == 0 || b.Seq > j.synced.Load() {
		return 0, fmt.Errorf("%w: %v", ErrNotFound, b)
	}
	j.segMu.RLock()
	defer j.segMu.RUnlock()
	if j.closed.Load() {
		return 0, ErrClosed
	}
	seg := j.findSegmentLocked(b.Seq)
	if seg == nil {
		return 0, fmt.Errorf("%w: %v", ErrNotFound, b)
	}
	off := seg.locate(b.Seq, j.opts.IndexInterval)
	v, _, err := record.Parse(seg.data[off:])
	if err != nil || v.Seq() != b.Seq || v.Publisher() != b.Publisher || v.PubSeq() != b.PubSeq {
		return 0, fmt.Errorf("%w: %v", ErrNotFound, b)
	}
	return b.Seq, nil
}

// A Hold keeps one segment's mapping alive after the cursor that produced
// it moves on, Journal.Close included: for record bytes handed to the
// kernel by reference (a zero-copy send), which must stay mapped and
// unmodified until the kernel says it is done with them. The zero Hold
// holds nothing. Release it exactly once.
type Hold struct {
	j   *Journal
	seg *segment
}

// Hold returns a hold on the segment the last View from Next points into
// (call it before the next Next). It does not allocate.
func (c *Cursor) Hold() Hold {
	if c.seg == nil {
		return Hold{}
	}
	c.seg.ref()
	return Hold{j: c.j, seg: c.seg}
}

// Same reports whether h holds the segment the cursor's last View came
// from, so a caller can take one hold per segment rather than per record.
func (h Hold) Same(c *Cursor) bool { return h.seg != nil && h.seg == c.seg }

// Release drops the hold; the segment is unmapped once nothing holds it
// and retention (or Close) removed it.
func (h Hold) Release() {
	if h.seg != nil {
		h.seg.unref(h.j)
	}
}
