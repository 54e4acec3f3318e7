package journal

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/record"
)

// flushLoop is the group-commit flusher: it takes the staged records, writes
// up to MaxBatchBytes of them with one pwrite into the tail segment (two
// when the batch crosses a rotation), syncs once, then publishes SyncedSeq.
func (j *Journal) flushLoop() {
	defer j.flushWG.Done()
	if j.opts.PinFlusher {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(j.opts.FlusherCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			j.log.Warn("journal: cannot pin the flusher", "cpu", j.opts.FlusherCPU, "err", err)
		}
	}
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
	j.takenMarks, j.marks = j.marks, j.takenMarks[:0]
	j.takenPos, j.markPos = 0, 0
	j.takenEnd = j.nextSeq
	j.batchFrom = 0
	j.mu.Unlock()
	return true
}

// flushBatch writes and syncs the next batch from j.taken: up to the next
// cut mark, split at rotation marks. It does not look at the records
// except to stamp FlagBatchStart on the first one of the batch and of each
// new segment.
func (j *Journal) flushBatch() error {
	buf := j.taken
	start := j.takenPos
	marks := j.takenMarks
	end, endSeq := len(buf), j.takenEnd
	for _, m := range marks[j.markPos:] {
		if m.pos > start && m.flags&markCut != 0 {
			end, endSeq = m.pos, m.seq
			break
		}
	}
	interval := uint64(j.opts.IndexInterval)
	seg := j.tail
	partStart, partOff := start, seg.end // buf[partStart] goes to seg at partOff
	if err := stampBatchStart(buf[start:], j.writeSeq); err != nil {
		return err
	}
	for ; j.markPos < len(marks) && marks[j.markPos].pos < end; j.markPos++ {
		m := marks[j.markPos]
		if m.flags&markRotate != 0 {
			// Everything in seg must be durable before the first write
			// into the next segment.
			if err := j.writePart(seg, buf[partStart:m.pos], partOff); err != nil {
				return err
			}
			if err := seg.f.SyncData(); err != nil {
				return fmt.Errorf("journal: sync %s: %w", seg.name, err)
			}
			seg.end = partOff + int64(m.pos-partStart)
			next, err := j.nextSegment(m.seq)
			if err != nil {
				return err
			}
			j.segMu.Lock()
			seg.seal(m.seq-1, int(interval))
			j.segs = append(j.segs, next)
			j.tail = next
			j.segMu.Unlock()
			j.rotations.Add(1)
			select {
			case j.retKick <- struct{}{}:
			default:
			}
			seg = next
			partStart, partOff = m.pos, segHeaderSize
			if err := stampBatchStart(buf[m.pos:], m.seq); err != nil {
				return err
			}
		}
		if m.flags&markIndex != 0 {
			seg.index[(m.seq-seg.first)/interval] = uint32(partOff + int64(m.pos-partStart))
		}
	}
	if err := j.writePart(seg, buf[partStart:end], partOff); err != nil {
		return err
	}
	if err := seg.f.SyncData(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", seg.name, err)
	}
	seg.end = partOff + int64(end-partStart)
	j.takenPos = end
	j.writeSeq = endSeq
	synced := endSeq - 1
	j.synced.Store(synced)
	j.syncs.Add(1)
	j.writtenBytes.Add(uint64(end - start))

	j.mu.Lock()
	j.pending -= end - start
	j.notFull.Broadcast()
	j.mu.Unlock()
	j.wakeWaiters(synced, false)
	if j.opts.OnSync != nil {
		j.opts.OnSync(synced)
	}
	return nil
}

// stampBatchStart sets FlagBatchStart on the record at the start of b,
// checking on the way that it is the record the flusher expects.
func stampBatchStart(b []byte, seq uint64) error {
	v, _, err := record.Parse(b)
	if err != nil || v.Seq() != seq {
		return fmt.Errorf("journal: internal error: staged record at seq %d is invalid (seq %d, %v)", seq, v.Seq(), err)
	}
	record.RestampFlags(b[:v.Len()], seq, v.Flags()|record.FlagBatchStart)
	return nil
}

func (j *Journal) writePart(seg *segment, b []byte, off int64) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := seg.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("journal: write %s at %d: %w", seg.name, off, err)
	}
	// Complete the last page with the zeros it already holds on disk. A
	// buffered write of part of a page the page cache does not hold (the
	// segment was zeroed with O_DIRECT) makes the kernel read that page from
	// disk first: one synchronous read per group commit. Writing whole
	// pages avoids it; the batch's first page is cached (the previous batch
	// wrote it).
	end := off + int64(len(b))
	if pad := (pageSize - end%pageSize) % pageSize; pad > 0 && end+pad <= seg.size {
		if _, err := seg.f.WriteAt(zeroPage[:pad], end); err != nil {
			return fmt.Errorf("journal: write %s at %d: %w", seg.name, end, err)
		}
	}
	return nil
}

const pageSize = 4096

var zeroPage = make([]byte, pageSize)
