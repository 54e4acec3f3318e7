package journal

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/record"
)

// sectorSize is the unit a lost write leaves zero (see Recovery).
const sectorSize = 512

// Report describes what recovery (Open) or Check found.
type Report struct {
	Segments          int
	FirstSeq, LastSeq uint64 // FirstSeq == LastSeq+1 when no record is held
	// ID is the journal id the segment headers carry; zero if none does
	// (an empty directory, or a journal from before ids that Open has not
	// upgraded yet).
	ID record.JournalID
	// TornTail is set when the final segment ended in unsynced data (see
	// Recovery in the package documentation for how that is told from
	// corruption). Repaired is set when Open, with Options.RecoverTruncate,
	// cut corrupt records off the final segment instead of refusing.
	TornTail bool
	Repaired bool
	// The cut, for a torn tail or for corruption in the final segment
	// (cut by Open only with RecoverTruncate; Check reports where it would
	// be): the bytes [TornOffset, TornOffset+TornBytes) of TornSegment,
	// from the first bad record to the last non-zero byte. They held seqs
	// DroppedFirst (the first bad record) to DroppedLast: the highest seq
	// of a record found there that still verifies, or DroppedFirst if none
	// does. Open zeroes them (and logs it).
	TornSegment  string
	TornOffset   int64
	TornBytes    int64
	DroppedFirst uint64
	DroppedLast  uint64
	// RemovedSegment names a final segment with an invalid header and no
	// data (a crash while creating it), which Open removes.
	RemovedSegment string
	// Checkpointed counts the sealed segments trusted from their
	// checkpoint without reading their records (Open without VerifyAll);
	// BadCheckpoints the checkpoints found unusable (corrupt, of another
	// journal, not matching their segment: those segments were scanned)
	// or, when every segment is scanned (Check, VerifyAll), disagreeing
	// with the scan.
	Checkpointed   int
	BadCheckpoints int

	removed int // files Open removed (its directory needs a sync)
	// needCkpt lists the sealed segments (by first seq) that have no
	// checkpoint matching them; Open writes one.
	needCkpt []uint64
	// state is the checkpoint holding the newest engine state, or nil.
	state *checkpoint
}

// Check verifies the journal in dir without changing it (fs nil = OSFS): the
// same scan as Open. A torn tail is reported with an error for which
// IsTornTail is true; corruption with an error wrapping ErrCorrupt.
func Check(dir string, fs FS) (Report, error) {
	if fs == nil {
		fs = OSFS{}
	}
	segs, rep, err := recoverDir(fs, dir, DefaultIndexInterval, slog.Default(), false, false, true)
	for _, s := range segs {
		s.f.Close()
	}
	if err == nil && rep.TornTail {
		err = fmt.Errorf("%w: %s: %d bytes at offset %d", errTornTail, rep.TornSegment, rep.TornBytes, rep.TornOffset)
	}
	return rep, err
}

// recover rebuilds the journal's state from its directory.
func (j *Journal) recover() error {
	segs, rep, err := recoverDir(j.fs, j.opts.Dir, j.opts.IndexInterval, j.log, true, j.opts.RecoverTruncate, j.opts.VerifyAll)
	j.segs = segs
	if err != nil {
		return err
	}
	j.checkpointed = rep.Checkpointed
	if c := rep.state; c != nil && !j.opts.VerifyAll && c.stateSeq <= rep.LastSeq {
		j.recState, j.recStateBytes, j.stateCkpt = c.stateSeq, c.state, c.first
	}
	j.truncatedBytes = rep.TornBytes
	j.id = rep.ID
	if j.id.IsZero() {
		if j.id, err = newJournalID(); err != nil {
			return err
		}
		if len(segs) == 0 {
			j.log.Info("journal: created", "dir", j.opts.Dir, "id", j.id)
		}
	}
	if err := j.upgradeHeaders(); err != nil {
		return err
	}
	next := rep.LastSeq + 1
	if len(segs) == 0 || segs[len(segs)-1].size != j.opts.SegmentSize && segs[len(segs)-1].count == 0 {
		// An empty journal, or an empty tail of another size: start a
		// fresh tail segment (replacing the empty one).
		if len(segs) > 0 {
			old := segs[len(segs)-1]
			j.segs = segs[:len(segs)-1]
			old.unref(j)
			if err := j.fs.Remove(old.path); err != nil {
				return fmt.Errorf("journal: %w", err)
			}
		}
		if next == 0 {
			next = 1
		}
		tmp := join(j.opts.Dir, "first"+tmpSuffix)
		f, err := j.zeroFile(tmp, j.opts.SegmentSize, false) // needed now: flat out
		if err != nil {
			return fmt.Errorf("journal: creating first segment: %w", err)
		}
		seg, err := j.installSegment(f, tmp, next, j.opts.SegmentSize, 0)
		if err != nil {
			return err
		}
		j.segs = append(j.segs, seg)
	}
	for _, s := range j.segs[:len(j.segs)-1] {
		s.seal(s.first+s.count-1, j.opts.IndexInterval)
	}
	// Sealed segments without a (matching) checkpoint get one, so the
	// next start need not scan them: a crash between a rotation and its
	// checkpoint, a journal from before checkpoints, a bad checkpoint.
	// Without state: the engine has not rebuilt its index yet.
	for _, first := range rep.needCkpt {
		for _, s := range j.segs[:len(j.segs)-1] {
			if s.first == first {
				j.queueCheckpoint(s, false)
			}
		}
	}
	j.tail = j.segs[len(j.segs)-1]
	// What recovery found may be only in the page cache (written by a
	// process that died before its fdatasync, or zeroed just now): make it
	// durable before anything is acknowledged on top of it, and the
	// removals too.
	if err := j.tail.f.SyncData(); err != nil {
		return fmt.Errorf("journal: syncing recovered segment %s: %w", j.tail.name, err)
	}
	if rep.removed > 0 {
		if err := j.fs.SyncDir(j.opts.Dir); err != nil {
			return fmt.Errorf("journal: syncing %s after recovery removed files: %w", j.opts.Dir, err)
		}
	}
	j.tailOff = j.tail.end
	j.tailEnd.Store(j.tail.end)
	j.tailSize = j.tail.size
	iv := uint64(j.opts.IndexInterval)
	j.indexIn = int((iv - j.tail.count%iv) % iv)
	j.nextSeq = next
	j.writeSeq = next
	j.lastSeq.Store(next - 1)
	j.synced.Store(next - 1)
	return nil
}

// newJournalID returns a random, non-zero journal id.
func newJournalID() (record.JournalID, error) {
	var id record.JournalID
	for id.IsZero() {
		if _, err := rand.Read(id[:]); err != nil {
			return id, fmt.Errorf("journal: generating the journal id: %w", err)
		}
	}
	return id, nil
}

// upgradeHeaders gives every segment still carrying a version 1 header
// (no journal id) a version 2 header with j.id: one 64-byte write of the
// first sector, then fdatasync, segment by segment, oldest first. A crash
// half-way leaves some headers with the id and some without; the next Open
// adopts the id from those that have it (recoverDir checks that they
// agree) and upgrades the rest.
func (j *Journal) upgradeHeaders() error {
	n := 0
	for _, s := range j.segs {
		if !s.hdr.id.IsZero() {
			continue
		}
		h := s.hdr
		h.id = j.id
		if _, err := s.f.WriteAt(h.encode(), 0); err != nil {
			return fmt.Errorf("journal: upgrading the header of %s: %w", s.name, err)
		}
		if err := s.f.SyncData(); err != nil {
			return fmt.Errorf("journal: upgrading the header of %s: %w", s.name, err)
		}
		s.hdr = h
		n++
	}
	if n > 0 {
		j.log.Info("journal: upgraded segment headers to version 2 (journal id)", "dir", j.opts.Dir, "segments", n, "id", j.id)
	}
	return nil
}

// recoverDir recovers the segments in dir: it verifies each header, and
// builds each segment's sparse index either from its checkpoint (a sealed
// segment with a valid checkpoint, unless verifyAll) or by scanning it:
// record CRCs and seq continuity. The final segment is always scanned.
// With repair it removes leftover temporary files, checkpoints whose
// segment is gone, and an empty final segment with a bad header, and
// zeroes (and syncs) a torn tail, and with truncCorrupt also corruption in
// the final segment. See the package documentation for the torn-tail and
// checkpoint rules.
func recoverDir(fs FS, dir string, interval int, log *slog.Logger, repair, truncCorrupt, verifyAll bool) (segs []*segment, rep Report, err error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, rep, fmt.Errorf("journal: %w", err)
	}
	var firsts []uint64
	ckpts := make(map[uint64]bool)
	for _, name := range names {
		if first, ok := parseSegmentName(name); ok {
			firsts = append(firsts, first)
		} else if first, ok := parseCheckpointName(name); ok {
			ckpts[first] = true
		} else if strings.HasSuffix(name, tmpSuffix) && repair {
			if err := fs.Remove(join(dir, name)); err != nil {
				return nil, rep, fmt.Errorf("journal: removing %s: %w", name, err)
			}
			rep.removed++
		}
	}
	sort.Slice(firsts, func(a, b int) bool { return firsts[a] < firsts[b] })

	var expect uint64 // seq the next segment must start with; 0 before the first
	var idFrom string // the first segment carrying rep.ID
	var cands []*checkpoint
	// The newest checkpoint's manifest describes the older sealed
	// segments: one read instead of one per segment. Whatever is wrong
	// with it only means reading the segments' own checkpoints.
	var mfst map[uint64]*checkpoint
	for i := len(firsts) - 1; i >= 0; i-- {
		if !ckpts[firsts[i]] {
			continue
		}
		if c, err := readCheckpoint(fs, join(dir, checkpointName(firsts[i]))); err == nil && len(c.manifest) > 0 {
			mfst = make(map[uint64]*checkpoint, len(c.manifest))
			for _, m := range c.manifest {
				if m.id == c.id {
					mfst[m.first] = m
				}
			}
		}
		break
	}
	pre := prefetchSegments(fs, dir, firsts, ckpts, mfst, interval, repair, verifyAll)
	next := 0 // pre[next:] are not in segs: closed if recovery stops early
	defer func() {
		for _, p := range pre[next:] {
			if p.seg != nil {
				p.seg.f.Close()
			}
		}
	}()
	for i, first := range firsts {
		final := i == len(firsts)-1
		name := segmentName(first)
		p := pre[i]
		next = i + 1
		seg, removed, err := p.seg, p.removed, p.err
		if err != nil {
			return segs, rep, err
		}
		if removed {
			log.Warn("journal: removed empty final segment with an invalid header (crash while creating it)", "file", name)
			rep.RemovedSegment = name
			if repair {
				rep.removed++
			}
			continue
		}
		segs = append(segs, seg)
		if id := seg.hdr.id; !id.IsZero() {
			if rep.ID.IsZero() {
				rep.ID, idFrom = id, name
			} else if id != rep.ID {
				return segs, rep, fmt.Errorf("%w: %s: journal id %s, but %s has %s (a segment of another journal)", ErrCorrupt, name, id, idFrom, rep.ID)
			}
		}
		if expect != 0 && seg.first != expect {
			return segs, rep, fmt.Errorf("%w: %s: starts at seq %d, previous segment ends at %d", ErrCorrupt, name, seg.first, expect-1)
		}
		var ck *checkpoint
		if ckpts[first] {
			delete(ckpts, first)
			cname := checkpointName(first)
			c, cerr := p.ck, p.ckErr
			if cerr == nil && c.id != seg.hdr.id {
				cerr = fmt.Errorf("journal id %s, segment has %s (a checkpoint of another journal)", c.id, seg.hdr.id)
			}
			if cerr != nil {
				rep.BadCheckpoints++
				log.Warn("journal: ignoring unusable checkpoint; scanning its segment", "file", cname, "err", cerr)
			} else {
				ck = c
			}
		}
		trusted := false
		if ck != nil && !final && !verifyAll {
			if terr := p.trustErr; terr != nil || !p.trusted {
				if terr == nil {
					terr = errors.New("not checked")
				}
				rep.BadCheckpoints++
				log.Warn("journal: checkpoint does not match its segment; scanning it", "file", checkpointName(first), "err", terr)
				ck = nil
			} else {
				trusted = true
				rep.Checkpointed++
			}
		}
		if !trusted {
			if err := scanSegment(seg, interval, final, repair, truncCorrupt, log, &rep); err != nil {
				return segs, rep, err
			}
			if ck != nil && !final && ck.interval == interval {
				if diff := sameAsScan(seg, ck, interval); diff != "" {
					rep.BadCheckpoints++
					log.Warn("journal: checkpoint disagrees with a scan of its segment", "file", checkpointName(first), "diff", diff)
					ck = nil
				}
			}
			if ck == nil && !final {
				rep.needCkpt = append(rep.needCkpt, first)
			}
		}
		if ck != nil && ck.state != nil {
			cands = append(cands, ck)
		}
		expect = seg.first + seg.count
	}
	// Checkpoints whose segment is gone (retention removed the segment,
	// then the process died before removing the checkpoint).
	for first := range ckpts {
		if repair {
			if err := fs.Remove(join(dir, checkpointName(first))); err != nil {
				return segs, rep, fmt.Errorf("journal: removing %s: %w", checkpointName(first), err)
			}
			rep.removed++
		}
	}
	rep.Segments = len(segs)
	if len(segs) > 0 {
		rep.FirstSeq = segs[0].first
		rep.LastSeq = expect - 1
	} else {
		rep.FirstSeq = 1
	}
	for _, c := range cands {
		if rep.state == nil || c.stateSeq > rep.state.stateSeq {
			rep.state = c
		}
	}
	return segs, rep, nil
}

// prefetched is what prefetchSegments found for one segment.
type prefetched struct {
	seg      *segment
	removed  bool
	err      error
	ck       *checkpoint // with ckErr, the checkpoint file read, if there is one
	ckErr    error
	trusted  bool // trustCheckpoint succeeded (seg's index, end and count set)
	trustErr error
}

// prefetchParallel bounds how many segments prefetchSegments opens at once.
const prefetchParallel = 16

// prefetchSegments opens every segment, reads its checkpoint if it has one
// and, for a sealed segment (not verifyAll), tries to trust it: the few
// reads per segment (header, checkpoint, last record) are random reads of
// a cold disk, so they are issued in parallel. recoverDir then decides in
// order what to make of the results.
func prefetchSegments(fs FS, dir string, firsts []uint64, ckpts map[uint64]bool, mfst map[uint64]*checkpoint, interval int, repair, verifyAll bool) []prefetched {
	pre := make([]prefetched, len(firsts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, prefetchParallel)
	for i, first := range firsts {
		final := i == len(firsts)-1
		hasCk := ckpts[first]
		fromMfst := mfst[first]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := &pre[i]
			// A segment to be trusted from its checkpoint is read in two
			// places (header, last record): no read-around for those
			// faults (it reads read_ahead_kb, often megabytes, per fault),
			// then back to normal for the cursors that will read it.
			random := hasCk && !final && !verifyAll
			p.seg, p.removed, p.err = openSegment(fs, dir, segmentName(first), first, final, interval, repair, random)
			if p.err != nil || p.removed {
				return
			}
			if random {
				defer adviseMapping(p.seg, unix.MADV_NORMAL)
			}
			if final || verifyAll || !hasCk {
				// To be scanned: have the kernel read it in large
				// asynchronous chunks rather than fault by fault.
				if f, ok := p.seg.f.(fdFile); ok {
					_ = unix.Fadvise(int(f.Fd()), 0, p.seg.size, unix.FADV_WILLNEED) // only a hint
				}
			}
			if !hasCk {
				return
			}
			if fromMfst != nil && fromMfst.id == p.seg.hdr.id && !final {
				p.ck = fromMfst
			} else {
				p.ck, p.ckErr = readCheckpoint(fs, join(dir, checkpointName(first)))
			}
			if p.ckErr != nil || final || verifyAll || p.ck.id != p.seg.hdr.id {
				return
			}
			p.trustErr = trustCheckpoint(p.seg, p.ck, interval)
			p.trusted = p.trustErr == nil
		}()
	}
	wg.Wait()
	return pre
}

// adviseMapping gives the kernel a hint about how s's mapping will be read
// (OS files only).
func adviseMapping(s *segment, advice int) {
	if _, ok := s.f.(fdFile); ok && len(s.data) > 0 {
		_ = unix.Madvise(s.data, advice) // only a hint
	}
}

// openSegment opens and maps a segment file and validates its header. A
// final segment with an invalid header and no data is removed (repair) or
// skipped.
func openSegment(fs FS, dir, name string, first uint64, final bool, interval int, repair, random bool) (*segment, bool, error) {
	path := join(dir, name)
	f, err := fs.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("journal: %w", err)
	}
	data, err := f.Map()
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("journal: mapping %s: %w", name, err)
	}
	if _, ok := f.(fdFile); ok && random && len(data) > 0 {
		_ = unix.Madvise(data, unix.MADV_RANDOM) // only a hint
	}
	hdr, herr := decodeSegHeader(data)
	if herr == nil && hdr.first != first {
		herr = fmt.Errorf("header first seq %d does not match the file name", hdr.first)
	}
	if herr == nil && hdr.size != int64(len(data)) {
		herr = fmt.Errorf("file has %d bytes, header says %d", len(data), hdr.size)
	}
	if herr != nil {
		empty := len(data) <= segHeaderSize || nonZeroEnd(data, segHeaderSize) == segHeaderSize
		f.Close()
		if final && empty {
			if repair {
				if err := fs.Remove(path); err != nil {
					return nil, false, fmt.Errorf("journal: removing %s: %w", name, err)
				}
			}
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("%w: %s: invalid segment header: %v", ErrCorrupt, name, herr)
	}
	s := &segment{
		first: first, name: name, path: path, f: f, data: data, size: int64(len(data)), hdr: hdr,
		index: make([]uint32, indexCap(int64(len(data)), interval)),
		last:  first - 1,
		end:   segHeaderSize,
	}
	s.refs.Store(1)
	return s, false, nil
}

// scanSegment walks a segment's records, verifying each and indexing it.
// In the final segment it tells a torn tail from corruption (see Recovery
// in the package documentation) and, with repair, cuts a torn tail (and,
// with truncCorrupt, corruption).
func scanSegment(s *segment, interval int, final, repair, truncCorrupt bool, log *slog.Logger, rep *Report) error {
	data := s.data
	off := int64(segHeaderSize)
	seq := s.first
	var bad error
	batchFrom := off // the last batch start that verified
	for {
		if off+4 > s.size || record.Length(data[off:]) == 0 {
			break // end of written data
		}
		v, n, err := record.Parse(data[off:])
		if err == nil {
			err = v.Verify()
		}
		if err == nil && v.Seq() != seq {
			err = fmt.Errorf("seq %d, want %d", v.Seq(), seq)
		}
		if err != nil {
			bad = err
			break
		}
		if v.Flags()&record.FlagBatchStart != 0 {
			batchFrom = off
		}
		s.addIndex(off, interval)
		off += int64(n)
		seq++
	}
	s.end = off
	if !final {
		if bad != nil {
			return fmt.Errorf("%w: %s offset %d seq %d: %v", ErrCorrupt, s.name, off, seq, bad)
		}
		return nil
	}

	// Final segment: is anything written after the end of valid data?
	var end int
	var evidence string
	if s.recycled() {
		var ok bool
		if end, evidence, ok = recycledTail(s, off, batchFrom, seq, bad, rep); !ok {
			return nil // clean end: only stale bytes follow
		}
	} else {
		end = nonZeroEnd(data, int(off))
		if int64(end) == off {
			return nil // clean end
		}
		rep.DroppedLast = max(seq, lastVerifying(data[:end], int(off), seq))
		// Evidence that the batch holding seq had been synced (acknowledged).
		if boff, bseq, ok := findBatchStart(data[:end], int(off), seq); ok {
			evidence = fmt.Sprintf("a batch written after this one's fdatasync returned starts at offset %d seq %d, so this batch was synced and acknowledged", boff, bseq)
		} else if !lostWriteExplains(data, off, nil) {
			evidence = fmt.Sprintf("every %d-byte sector of the bad record holds written bytes, which no lost write explains, so it was damaged after being written and may have been acknowledged", sectorSize)
		}
	}
	cause := "zero length followed by written bytes"
	if bad != nil {
		cause = bad.Error()
	}
	rep.TornSegment = s.name
	rep.TornOffset = off
	rep.TornBytes = int64(end) - off
	rep.DroppedFirst = seq
	rep.DroppedLast = max(seq, rep.DroppedLast)

	if evidence != "" && !(repair && truncCorrupt) {
		return fmt.Errorf("%w: %s offset %d seq %d: %s; %s: refusing to truncate "+
			"(a repair, Options.RecoverTruncate or tandem serve --recover truncate, would cut here, dropping seq %d..%d, %d bytes)",
			ErrCorrupt, s.name, off, seq, cause, evidence, rep.DroppedFirst, rep.DroppedLast, rep.TornBytes)
	}
	if evidence == "" {
		rep.TornTail = true
	}
	if !repair {
		return nil
	}
	if evidence != "" {
		rep.Repaired = true
		log.Error("journal: corrupt final segment: truncating at the first bad record as RecoverTruncate asks, dropping acknowledged records",
			"file", s.name, "offset", off, "first_seq", rep.DroppedFirst, "last_seq", rep.DroppedLast, "bytes", rep.TornBytes,
			"cause", cause, "evidence", evidence)
	} else {
		log.Warn("journal: truncating torn tail (records whose batch was never synced, so never acknowledged)",
			"file", s.name, "offset", off, "first_seq", rep.DroppedFirst, "last_seq", rep.DroppedLast, "bytes", rep.TornBytes,
			"cause", cause)
	}
	zeros := make([]byte, min(int64(end)-off, 1<<20))
	for o := off; o < int64(end); {
		k := min(int64(len(zeros)), int64(end)-o)
		if _, err := s.f.WriteAt(zeros[:k], o); err != nil {
			return fmt.Errorf("journal: zeroing the tail of %s: %w", s.name, err)
		}
		o += k
	}
	if err := s.f.SyncData(); err != nil {
		return fmt.Errorf("journal: syncing %s: %w", s.name, err)
	}
	return nil
}

// lostWriteExplains reports whether the first bad record of the final
// segment, at off, can be what a write that never reached the disk leaves
// behind: segments are pre-zeroed and a lost (or torn) write leaves whole
// sectors of zeros, so it can only if some sector the record occupies holds
// nothing but zeros from off on. A sector counts as written if any of its
// bytes at or after off is non-zero (bytes before off belong to records
// that verified). The record's extent is its length if its header is
// consistent (length = header + topic + payload, within the file), else
// just its header. In a recycled segment a lost write leaves the sector's
// stale bytes instead: stale(lo, hi) reports whether a record of an older
// generation that verifies overlaps [lo, hi); nil for a pre-zeroed one.
func lostWriteExplains(data []byte, off int64, stale func(lo, hi int64) bool) bool {
	ext := badExtent(data, off)
	for sec := off / sectorSize * sectorSize; sec < ext; sec += sectorSize {
		lo, hi := max(sec, off), min(sec+sectorSize, int64(len(data)))
		if nonZeroEnd(data[:hi], int(lo)) == int(lo) || stale != nil && stale(lo, hi) {
			return true
		}
	}
	return false
}

// badExtent returns the end of the bad record at off: its length if its
// header is consistent, else just its header (clipped to the file).
func badExtent(data []byte, off int64) int64 {
	ext := off + record.HeaderSize
	if _, n, err := record.Parse(data[off:]); err == nil {
		ext = off + int64(n)
	}
	return min(ext, int64(len(data)))
}

// recycledTail examines what follows the valid records of a recycled final
// segment s, which end at off (seq the next one expected, bad why the
// record at off failed, nil for a zero length field; batchFrom the offset
// of the last batch start among them). Bytes of an older generation are
// expected there: they all carry seqs below s.first (the file only ever
// held older segments of this journal), so any record that verifies with a
// seq of at least seq was written by this generation after the last sync
// that returned. ok is false for a clean end: a zero length at off and no
// such record after it. Otherwise end is where the cut ends (the end of the
// last such record, or of the bad record's extent, rounded up to a page
// within the file), rep.DroppedLast is set, and evidence says why the
// records may have been acknowledged ("" for a torn tail): a later batch
// start of this generation, or a bad record no lost write explains.
//
// A lost write leaves a sector as it was at the last sync. Up to the end
// of the zeros the flusher wrote after the batch before batchFrom (the
// earliest point the last synced batch can have ended), that is zeros, as
// in a pre-zeroed segment. Beyond, it is the older generation's bytes,
// which are recognisable only where a whole stale record that verifies
// overlaps the sector: a sector holding the tail of a stale record whose
// start was overwritten looks like any other damage. Such sectors count as
// unwritten, erring towards a torn tail.
func recycledTail(s *segment, off, batchFrom int64, seq uint64, bad error, rep *Report) (end int, evidence string, ok bool) {
	data := s.data
	maxSeq := seq + uint64((int64(len(data))-off)/record.HeaderSize) + 1
	newEnd := off
	var last, bseq uint64
	boff := int64(-1)
	for p := int(off); p+record.HeaderSize <= len(data); p++ {
		if q := binary.LittleEndian.Uint64(data[p+8:]); q < seq || q > maxSeq {
			continue // not a record of this generation's unsynced batch
		}
		n := record.Length(data[p:])
		if n < record.HeaderSize || n > len(data)-p {
			continue
		}
		v, _, err := record.Parse(data[p:])
		if err != nil || v.Verify() != nil {
			continue
		}
		newEnd = max(newEnd, int64(p+n))
		last = max(last, v.Seq())
		if boff < 0 && v.Seq() > seq && v.Flags()&record.FlagBatchStart != 0 {
			boff, bseq = int64(p), v.Seq()
		}
	}
	if bad == nil && newEnd == off {
		return 0, "", false
	}
	cut := max(newEnd, badExtent(data, off))
	cut = min((cut+pageSize-1)/pageSize*pageSize, int64(len(data)))
	rep.DroppedLast = last
	zeroEnd := batchFrom + pagePad(batchFrom, s.size, true)
	stale := func(lo, hi int64) bool {
		if lo >= zeroEnd {
			return true // held stale bytes at the last sync
		}
		// A stale record overlapping [lo, hi) lies wholly at or after off
		// (the bytes before off are this generation's).
		for p := off; p < hi && p+record.HeaderSize <= int64(len(data)); p++ {
			n := int64(record.Length(data[p:]))
			if n < record.HeaderSize || p+n <= lo || p+n > int64(len(data)) {
				continue
			}
			if q := binary.LittleEndian.Uint64(data[p+8:]); q >= s.first {
				continue
			}
			if v, _, err := record.Parse(data[p:]); err == nil && v.Verify() == nil {
				return true
			}
		}
		return false
	}
	if boff >= 0 {
		evidence = fmt.Sprintf("a batch written after this one's fdatasync returned starts at offset %d seq %d, so this batch was synced and acknowledged", boff, bseq)
	} else if !lostWriteExplains(data, off, stale) {
		evidence = fmt.Sprintf("every %d-byte sector of the bad record holds bytes written by this generation of the recycled segment, which no lost write explains, so it was damaged after being written and may have been acknowledged", sectorSize)
	}
	return int(cut), evidence, true
}

// lastVerifying returns the highest seq at or above expect of a record
// that verifies anywhere in b[from:] (any byte offset), or 0.
func lastVerifying(b []byte, from int, expect uint64) uint64 {
	var last uint64
	maxSeq := expect + uint64((len(b)-from)/record.HeaderSize) + 1
	for p := from; p+record.HeaderSize <= len(b); p++ {
		n := record.Length(b[p:])
		if n < record.HeaderSize || n > len(b)-p {
			continue
		}
		v, _, err := record.Parse(b[p:])
		if err != nil || v.Seq() < expect || v.Seq() > maxSeq || v.Seq() <= last || v.Verify() != nil {
			continue
		}
		last = v.Seq()
	}
	return last
}

// nonZeroEnd returns the end of the last non-zero byte in b[from:], or from
// if they are all zero.
func nonZeroEnd(b []byte, from int) int {
	i := len(b)
	for i-8 >= from && binary.LittleEndian.Uint64(b[i-8:]) == 0 {
		i -= 8
	}
	for i > from && b[i-1] == 0 {
		i--
	}
	return i
}

// findBatchStart looks in b[from:] for a record that verifies, carries
// FlagBatchStart and has a seq above expect: proof that the batch holding
// seq expect was synced (the flusher writes a batch only after the previous
// one's sync returned). It tries every byte offset, so it also works when
// the length field of the bad record is itself damaged.
func findBatchStart(b []byte, from int, expect uint64) (int, uint64, bool) {
	maxSeq := expect + uint64((len(b)-from)/record.HeaderSize) + 1
	for p := from; p+record.HeaderSize <= len(b); p++ {
		n := record.Length(b[p:])
		if n < record.HeaderSize || n > len(b)-p || record.FlagsOf(b[p:])&record.FlagBatchStart == 0 {
			continue
		}
		v, _, err := record.Parse(b[p:])
		if err != nil || v.Seq() <= expect || v.Seq() > maxSeq || v.Verify() != nil {
			continue
		}
		return p, v.Seq(), true
	}
	return 0, 0, false
}
