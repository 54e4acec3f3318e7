package journal

import (
	"fmt"

	"github.com/tandemhq/tandem/record"
)

// flushLoop is the group-commit flusher: it takes the staged records, writes
// up to MaxBatchBytes of them with one pwrite into the tail segment (two
// when the batch crosses a rotation), syncs once, then publishes SyncedSeq.
func (j *Journal) flushLoop() {
	defer j.flushWG.Done()
	for {
		if j.takenPos == len(j.taken) && !j.collect() {
			return
		}
		if err := j.flushBatch(); err != nil {
			j.fail(err)
			return
		}
	}
}

// collect swaps the staging buffer with the flusher's drained one, waiting
// for staged data (and for MaxSyncDelay when set). It returns false when the
// journal is closing with nothing left to write, or failed.
func (j *Journal) collect() bool {
	j.mu.Lock()
	for len(j.stage) == 0 {
		if j.closing || j.failed != nil {
			j.mu.Unlock()
			return false
		}
		j.flusherIdle = true
		j.mu.Unlock()
		<-j.kick
		j.mu.Lock()
		j.flusherIdle = false
	}
	if d := j.opts.MaxSyncDelay; d > 0 && !j.closing && len(j.stage) < j.opts.MaxBatchBytes {
		j.flusherDelaying = true
		j.mu.Unlock()
		j.timer.Reset(d)
		select {
		case <-j.timer.C():
		case <-j.kick:
		}
		j.timer.Stop()
		j.mu.Lock()
		j.flusherDelaying = false
	}
	j.taken, j.stage = j.stage, j.taken[:0]
	j.takenPos = 0
	j.mu.Unlock()
	return true
}

// flushBatch writes and syncs the next batch from j.taken.
func (j *Journal) flushBatch() error {
	buf := j.taken[j.takenPos:]
	seg := j.tail
	interval := j.opts.IndexInterval
	seq := j.writeSeq
	off := seg.end // file offset of the next record
	partStart := 0 // start in buf of the bytes going to seg
	partOff := off // file offset of buf[partStart]
	batchStart := true
	p := 0
	for p < len(buf) {
		n := record.Length(buf[p:])
		if p > 0 && p+n > j.opts.MaxBatchBytes {
			break
		}
		rec := buf[p : p+n]
		if off+int64(n) > seg.size {
			// Rotate: make everything in seg durable before the first
			// write into the next segment.
			if err := j.writePart(seg, buf[partStart:p], partOff); err != nil {
				return err
			}
			if err := seg.f.SyncData(); err != nil {
				return fmt.Errorf("journal: sync %s: %w", seg.name, err)
			}
			next, err := j.nextSegment(seq)
			if err != nil {
				return err
			}
			j.segMu.Lock()
			seg.sealed = true
			seg.end = off
			seg.seal()
			j.segs = append(j.segs, next)
			j.tail = next
			j.segMu.Unlock()
			j.rotations.Add(1)
			select {
			case j.retKick <- struct{}{}:
			default:
			}
			seg = next
			off = segHeaderSize
			partStart, partOff = p, off
			batchStart = true
		}
		if batchStart {
			// Check the flusher's seq bookkeeping once per batch.
			v, _, err := record.Parse(rec)
			if err != nil || v.Seq() != seq {
				return fmt.Errorf("journal: internal error: staged record at seq %d is invalid (seq %d, %v)", seq, v.Seq(), err)
			}
			record.RestampFlags(rec, seq, v.Flags()|record.FlagBatchStart)
			batchStart = false
		}
		seg.addIndex(off, interval)
		off += int64(n)
		p += n
		seq++
	}
	if err := j.writePart(seg, buf[partStart:p], partOff); err != nil {
		return err
	}
	if err := seg.f.SyncData(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", seg.name, err)
	}
	seg.end = off
	j.takenPos += p
	j.writeSeq = seq
	synced := seq - 1
	j.synced.Store(synced)
	j.syncs.Add(1)
	j.writtenBytes.Add(uint64(p))

	j.mu.Lock()
	j.pending -= p
	j.notFull.Broadcast()
	j.mu.Unlock()
	j.wakeWaiters(synced, false)
	if j.opts.OnSync != nil {
		j.opts.OnSync(synced)
	}
	return nil
}

func (j *Journal) writePart(seg *segment, b []byte, off int64) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := seg.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("journal: write %s at %d: %w", seg.name, off, err)
	}
	return nil
}
