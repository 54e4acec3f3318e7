package journal

import (
	"fmt"
	"math"
	"time"
)

// retentionLoop applies retention after every rotation and every
// RetentionInterval.
func (j *Journal) retentionLoop() {
	defer j.bg.Done()
	t := time.NewTicker(j.opts.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-j.retKick:
		case <-t.C:
		}
		if _, err := j.ApplyRetention(); err != nil {
			j.log.Warn("journal: retention", "err", err)
		}
	}
}

// ApplyRetention deletes the oldest sealed segments that retention allows
// (RetentionAge, RetentionBytes, bounded by RetentionHold) and returns how
// many it deleted. The tail segment is never deleted. A deleted segment
// leaves the list at once; it is unmapped and closed when the last cursor
// on it moves off. It runs in the background; tests may call it directly.
func (j *Journal) ApplyRetention() (removed int, err error) {
	if j.opts.RetentionAge <= 0 && j.opts.RetentionBytes <= 0 {
		return 0, nil
	}
	j.retMu.Lock()
	defer j.retMu.Unlock()
	hold := uint64(math.MaxUint64)
	if j.opts.RetentionHold != nil {
		hold = j.opts.RetentionHold()
	}
	var cutoff int64
	if j.opts.RetentionAge > 0 {
		cutoff = j.now().Add(-j.opts.RetentionAge).UnixNano()
	}
	for {
		j.segMu.Lock()
		if j.closed.Load() || len(j.segs) < 2 {
			j.segMu.Unlock()
			break
		}
		var total int64
		for _, s := range j.segs {
			total += s.size
		}
		s := j.segs[0]
		old := j.opts.RetentionAge > 0 && s.lastTime < cutoff
		big := j.opts.RetentionBytes > 0 && total > j.opts.RetentionBytes
		if !s.sealed || s.last >= hold || !(old || big) {
			j.segMu.Unlock()
			break
		}
		j.segs[0] = nil
		j.segs = j.segs[1:]
		j.segMu.Unlock()

		r, rerr := j.retire(s)
		if rerr != nil && err == nil {
			err = rerr
		}
		// Its checkpoint after it: a checkpoint without its segment is
		// harmless (Open removes it), a segment without one is scanned.
		if rerr := j.removeCheckpoint(s.first); rerr != nil && err == nil {
			err = fmt.Errorf("journal: removing %s: %w", checkpointName(s.first), rerr)
		}
		s.unref(j) // the last reference: unmapped and closed
		if r.path != "" {
			j.retired <- r // room checked by retire; only retention (under retMu) sends
		}
		removed++
		j.removedSegs.Add(1)
		j.log.Info("journal: retention removed segment", "file", s.name, "first", s.first, "last", s.last, "aged", old, "over_bytes", big)
	}
	if removed > 0 {
		if serr := j.fs.SyncDir(j.opts.Dir); serr != nil && err == nil {
			err = fmt.Errorf("journal: %w", serr)
		}
	}
	return removed, err
}

// RetentionHeldBytes returns the bytes of the segments that retention
// (RetentionAge, RetentionBytes) would delete now but RetentionHold keeps:
// a replication destination has not persisted them yet. It reads the
// segment list only; nothing is deleted.
func (j *Journal) RetentionHeldBytes() int64 {
	if (j.opts.RetentionAge <= 0 && j.opts.RetentionBytes <= 0) || j.opts.RetentionHold == nil {
		return 0
	}
	hold := j.opts.RetentionHold()
	var cutoff int64
	if j.opts.RetentionAge > 0 {
		cutoff = j.now().Add(-j.opts.RetentionAge).UnixNano()
	}
	j.segMu.RLock()
	defer j.segMu.RUnlock()
	var total int64
	for _, s := range j.segs {
		total += s.size
	}
	var held int64
	// The same walk as ApplyRetention, from the oldest segment, as if each
	// held one were deleted: retention stops at the first it may not delete.
	for _, s := range j.segs[:max(len(j.segs)-1, 0)] {
		old := j.opts.RetentionAge > 0 && s.lastTime < cutoff
		big := j.opts.RetentionBytes > 0 && total > j.opts.RetentionBytes
		if !s.sealed || !(old || big) {
			break
		}
		if s.last >= hold {
			held += s.size
		}
		total -= s.size
	}
	return held
}

// retire disposes of the file of segment s, which retention just took off
// the segment list: renamed for reuse by the preallocator (returned, for
// the caller to hand over once it has closed s) when recycling is on, no
// cursor or Hold references s any more (none can take a new reference once
// it is off the list), it has the journal's segment size and no other
// retired file is waiting; removed otherwise. A crash after the rename
// leaves a *.tmp file, which Open removes.
func (j *Journal) retire(s *segment) (retired, error) {
	if j.recycling() && s.size == j.opts.SegmentSize && s.refs.Load() == 1 && len(j.retired) == 0 {
		path := join(j.opts.Dir, fmt.Sprintf(recycleName, j.retireSeq.Add(1)))
		if err := j.fs.Rename(s.path, path); err != nil {
			return retired{}, fmt.Errorf("journal: retiring %s: %w", s.name, err)
		}
		return retired{path: path, gen: s.hdr.gen}, nil
	}
	if err := j.fs.Remove(s.path); err != nil {
		return retired{}, fmt.Errorf("journal: removing %s: %w", s.name, err)
	}
	return retired{}, nil
}
