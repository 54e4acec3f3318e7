package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/tandemhq/tandem/record"
)

// Report describes what recovery (Open) or Check found.
type Report struct {
	Segments          int
	FirstSeq, LastSeq uint64 // FirstSeq == LastSeq+1 when no record is held
	// TornTail is set when the final segment ended in unsynced data: the
	// bytes [TornOffset, TornOffset+TornBytes) of TornSegment. Open zeroes
	// them (and logs it); Check only reports them.
	TornTail    bool
	TornSegment string
	TornOffset  int64
	TornBytes   int64
	// RemovedSegment names a final segment with an invalid header and no
	// data (a crash while creating it), which Open removes.
	RemovedSegment string
}

// Check verifies the journal in dir without changing it (fs nil = OSFS): the
// same scan as Open. A torn tail is reported with an error for which
// IsTornTail is true; corruption with an error wrapping ErrCorrupt.
func Check(dir string, fs FS) (Report, error) {
	if fs == nil {
		fs = OSFS{}
	}
	segs, rep, err := recoverDir(fs, dir, DefaultIndexInterval, slog.Default(), false)
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
	segs, rep, err := recoverDir(j.fs, j.opts.Dir, j.opts.IndexInterval, j.log, true)
	j.segs = segs
	if err != nil {
		return err
	}
	j.truncatedBytes = rep.TornBytes
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
		seg, err := j.installSegment(f, tmp, next, j.opts.SegmentSize)
		if err != nil {
			return err
		}
		j.segs = append(j.segs, seg)
	}
	for _, s := range j.segs[:len(j.segs)-1] {
		s.seal(s.first+s.count-1, j.opts.IndexInterval)
	}
	j.tail = j.segs[len(j.segs)-1]
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

// recoverDir scans every segment in dir, verifying headers, record CRCs and
// seq continuity, and builds the segments' sparse indexes. With repair it
// removes leftover temporary files and an empty final segment with a bad
// header, and zeroes (and syncs) a torn tail. See the package documentation
// for the torn-tail rules.
func recoverDir(fs FS, dir string, interval int, log *slog.Logger, repair bool) (segs []*segment, rep Report, err error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, rep, fmt.Errorf("journal: %w", err)
	}
	var firsts []uint64
	for _, name := range names {
		if first, ok := parseSegmentName(name); ok {
			firsts = append(firsts, first)
		} else if strings.HasSuffix(name, tmpSuffix) && repair {
			if err := fs.Remove(join(dir, name)); err != nil {
				return nil, rep, fmt.Errorf("journal: removing %s: %w", name, err)
			}
		}
	}
	sort.Slice(firsts, func(a, b int) bool { return firsts[a] < firsts[b] })

	var expect uint64 // seq the next segment must start with; 0 before the first
	for i, first := range firsts {
		final := i == len(firsts)-1
		name := segmentName(first)
		seg, removed, err := openSegment(fs, dir, name, first, final, interval, repair)
		if err != nil {
			return segs, rep, err
		}
		if removed {
			log.Warn("journal: removed empty final segment with an invalid header (crash while creating it)", "file", name)
			rep.RemovedSegment = name
			continue
		}
		segs = append(segs, seg)
		if expect != 0 && seg.first != expect {
			return segs, rep, fmt.Errorf("%w: %s: starts at seq %d, previous segment ends at %d", ErrCorrupt, name, seg.first, expect-1)
		}
		if err := scanSegment(fs, seg, interval, final, repair, log, &rep); err != nil {
			return segs, rep, err
		}
		expect = seg.first + seg.count
	}
	rep.Segments = len(segs)
	if len(segs) > 0 {
		rep.FirstSeq = segs[0].first
		rep.LastSeq = expect - 1
	} else {
		rep.FirstSeq = 1
	}
	return segs, rep, nil
}

// openSegment opens and maps a segment file and validates its header. A
// final segment with an invalid header and no data is removed (repair) or
// skipped.
func openSegment(fs FS, dir, name string, first uint64, final bool, interval int, repair bool) (*segment, bool, error) {
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
		first: first, name: name, path: path, f: f, data: data, size: int64(len(data)),
		index: make([]uint32, indexCap(int64(len(data)), interval)),
		last:  first - 1,
		end:   segHeaderSize,
	}
	s.refs.Store(1)
	return s, false, nil
}

// scanSegment walks a segment's records, verifying each and indexing it.
func scanSegment(fs FS, s *segment, interval int, final, repair bool, log *slog.Logger, rep *Report) error {
	data := s.data
	off := int64(segHeaderSize)
	seq := s.first
	var bad error
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
	end := nonZeroEnd(data, int(off))
	if int64(end) == off {
		return nil // clean end
	}
	if boff, bseq, ok := findBatchStart(data[:end], int(off), seq); ok {
		cause := "unwritten gap"
		if bad != nil {
			cause = bad.Error()
		}
		return fmt.Errorf("%w: %s offset %d seq %d: %s, but a synced batch starts after it at offset %d seq %d",
			ErrCorrupt, s.name, off, seq, cause, boff, bseq)
	}
	rep.TornTail = true
	rep.TornSegment = s.name
	rep.TornOffset = off
	rep.TornBytes = int64(end) - off
	if !repair {
		return nil
	}
	log.Warn("journal: truncating torn tail (unsynced records)", "file", s.name, "offset", off, "bytes", rep.TornBytes, "seq", seq, "cause", errors.Join(bad))
	zeros := make([]byte, min(int64(end)-off, 1<<20))
	for o := off; o < int64(end); {
		k := min(int64(len(zeros)), int64(end)-o)
		if _, err := s.f.WriteAt(zeros[:k], o); err != nil {
			return fmt.Errorf("journal: zeroing torn tail of %s: %w", s.name, err)
		}
		o += k
	}
	if err := s.f.SyncData(); err != nil {
		return fmt.Errorf("journal: syncing %s: %w", s.name, err)
	}
	return nil
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
