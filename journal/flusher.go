package journal

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/record"
)

// flushLoop is the group-commit flusher: it takes the staged records, writes
// up to MaxBatchBytes of them with one pwrite into the tail segment (two
// when the batch crosses a rotation), syncs once, then publishes SyncedSeq.
// With SyncVia "uring" the writes and the sync of each part go to the
// kernel as one linked chain on the flusher's ring (ringsync.go).
func (j *Journal) flushLoop() {
	defer j.flushWG.Done()
	_, hasFd := j.tail.f.(fdFile)
	useRing := j.opts.SyncVia == SyncUring && hasFd
	if j.opts.PinFlusher || useRing {
		// The ring belongs to this thread: its memory is first touched
		// here, and the kernel queues completion work to the submitter.
		runtime.LockOSThread()
		if !j.opts.PinFlusher {
			defer runtime.UnlockOSThread()
		} // pinned: the thread ends with the goroutine, its affinity with it
	}
	if j.opts.PinFlusher {
		var set unix.CPUSet
		set.Set(j.opts.FlusherCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			j.log.Warn("journal: cannot pin the flusher", "cpu", j.opts.FlusherCPU, "err", err)
		}
	}
	if useRing {
		j.openRing()
		defer j.closeRing()
	} else if j.opts.SyncVia == SyncUring {
		j.log.Debug("journal: segment files have no descriptor; group commits use WriteAt and SyncData")
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
	taken := j.takenEnd - 1
	j.mu.Unlock()
	if f := j.opts.OnFlushStage; f != nil {
		f(FlushTaken, taken)
	}
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
	began := time.Now()
	partStart, partOff := start, seg.end // buf[partStart] goes to seg at partOff
	if err := stampBatchStart(buf[start:], j.writeSeq); err != nil {
		return err
	}
	for ; j.markPos < len(marks) && marks[j.markPos].pos < end; j.markPos++ {
		m := marks[j.markPos]
		if m.flags&markRotate != 0 {
			// Everything in seg must be durable before the first write
			// into the next segment.
			if err := j.writeSync(seg, buf[partStart:m.pos], partOff); err != nil {
				return err
			}
			seg.end = partOff + int64(m.pos-partStart)
			next, err := j.nextSegment(m.seq)
			if err != nil {
				return err
			}
			j.segMu.Lock()
			seg.seal(m.seq-1, int(interval))
			j.tailEnd.Store(segHeaderSize)
			j.segs = append(j.segs, next)
			j.tail = next
			j.segMu.Unlock()
			j.queueCheckpoint(seg, true)
			j.rotations.Add(1)
			select {
			case j.rotated <- struct{}{}:
			default:
			}
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
	j.writingThrough = endSeq - 1
	if err := j.writeSync(seg, buf[partStart:end], partOff); err != nil {
		return err
	}
	seg.end = partOff + int64(end-partStart)
	j.tailEnd.Store(seg.end)
	j.syncHist.Observe(int64(time.Since(began)))
	j.batchHist.Observe(int64(endSeq - j.writeSeq))
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

// writeSync writes b at off into seg and makes it durable: as one linked
// chain on the flusher's ring when it has one and seg's file has a
// descriptor, else with writePart and SyncData.
func (j *Journal) writeSync(seg *segment, b []byte, off int64) error {
	if j.ring != nil {
		if f, ok := seg.f.(fdFile); ok {
			return j.writeSyncRing(seg, f, b, off)
		}
	}
	if err := j.writePart(seg, b, off); err != nil {
		return err
	}
	if f := j.opts.OnFlushStage; f != nil && j.writingThrough != 0 {
		f(FlushWritten, j.writingThrough)
		j.writingThrough = 0
	}
	if err := seg.f.SyncData(); err != nil {
		return fmt.Errorf("journal: sync %s: %w", seg.name, err)
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
	// Complete the last page with the zeros it already holds on disk. A
	// buffered write of part of a page the page cache does not hold (the
	// segment was zeroed with O_DIRECT) makes the kernel read that page from
	// disk first: one synchronous read per group commit. Writing whole
	// pages avoids it; the batch's first page is cached (the previous batch
	// wrote it).
	end := off + int64(len(b))
	if pad := pagePad(end, seg.size, seg.recycled()); pad > 0 {
		if _, err := seg.f.WriteAt(zeroPage[:pad], end); err != nil {
			return fmt.Errorf("journal: write %s at %d: %w", seg.name, end, err)
		}
	}
	return nil
}

// pagePad is how many zeros complete the page in which a write ending at
// end ends, in a segment of size bytes (0 if that would pass its end). In a
// recycled segment (stale bytes after the data) the zeros are at least 4
// bytes, another page if need be, clipped at the end of the file: a zero
// length field then always follows the last record written, as in a
// pre-zeroed segment, so cursors, checkpoints and recovery find the end
// of the data the same way (see Segment recycling in doc.go).
func pagePad(end, size int64, recycled bool) int64 {
	pad := (pageSize - end%pageSize) % pageSize
	if recycled {
		if pad < 4 {
			pad += pageSize
		}
		return max(min(pad, size-end), 0)
	}
	if end+pad <= size {
		return pad
	}
	return 0
}

const pageSize = 4096

var zeroPage = make([]byte, 2*pageSize) // the longest pad pagePad returns
