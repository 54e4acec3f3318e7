package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/record"
)

// Segment file header; part of the on-disk format (see doc.go).
const (
	segMagic = "TNDMSEG1"
	// segVersion 2: journal id at 40, [56,60) zero (a pre-zeroed file);
	// segVersionV1: no id (upgraded at Open); segVersionRecycled 3: a
	// recycled file, generation at 56 (> 0), stale bytes after the data.
	segVersion         = 2
	segVersionV1       = 1
	segVersionRecycled = 3
	segHeaderSize      = 64

	hdrOffMagic   = 0
	hdrOffVersion = 8
	hdrOffHdrSize = 12
	hdrOffFirst   = 16
	hdrOffSegSize = 24
	hdrOffCreated = 32
	hdrOffID      = 40 // 16 bytes, version 2 and 3
	hdrOffGen     = 56 // u32: version 3 only (version 2: reserved zero)
	hdrOffCRC     = 60

	segSuffix     = ".seg"
	segNameDigits = 20
	tmpSuffix     = ".tmp"
	preallocName  = "next-%d.seg.tmp"    // a counter keeps names unique
	recycleName   = "recycle-%d.seg.tmp" // a retired segment waiting for reuse
)

// segmentName returns the file name of the segment whose first record has
// sequence first.
func segmentName(first uint64) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, first, segSuffix)
}

// parseSegmentName returns the first sequence encoded in a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	if len(name) != segNameDigits+len(segSuffix) || !strings.HasSuffix(name, segSuffix) {
		return 0, false
	}
	n, err := strconv.ParseUint(name[:segNameDigits], 10, 64)
	return n, err == nil
}

type segHeader struct {
	first   uint64
	size    int64
	created int64
	// id is the journal's id; zero only in a version 1 header (decoded,
	// never encoded).
	id record.JournalID
	// gen counts how many times the file was recycled: 0 for a file
	// zero-filled when created (version 1 and 2 headers), > 0 for a
	// recycled one (version 3), whose bytes after the data are stale.
	gen uint32
}

// encode returns the version 2 header (gen 0) or version 3 (gen > 0).
func (h segHeader) encode() []byte {
	b := make([]byte, segHeaderSize)
	copy(b[hdrOffMagic:], segMagic)
	v := uint32(segVersion)
	if h.gen > 0 {
		v = segVersionRecycled
		binary.LittleEndian.PutUint32(b[hdrOffGen:], h.gen)
	}
	binary.LittleEndian.PutUint32(b[hdrOffVersion:], v)
	binary.LittleEndian.PutUint32(b[hdrOffHdrSize:], segHeaderSize)
	binary.LittleEndian.PutUint64(b[hdrOffFirst:], h.first)
	binary.LittleEndian.PutUint64(b[hdrOffSegSize:], uint64(h.size))
	binary.LittleEndian.PutUint64(b[hdrOffCreated:], uint64(h.created))
	copy(b[hdrOffID:], h.id[:])
	binary.LittleEndian.PutUint32(b[hdrOffCRC:], record.Checksum(b[:hdrOffCRC]))
	return b
}

func decodeSegHeader(b []byte) (segHeader, error) {
	if len(b) < segHeaderSize {
		return segHeader{}, fmt.Errorf("short header (%d bytes)", len(b))
	}
	if string(b[hdrOffMagic:hdrOffMagic+8]) != segMagic {
		return segHeader{}, fmt.Errorf("bad magic %q", b[hdrOffMagic:hdrOffMagic+8])
	}
	if got, want := binary.LittleEndian.Uint32(b[hdrOffCRC:]), record.Checksum(b[:hdrOffCRC]); got != want {
		return segHeader{}, fmt.Errorf("header checksum %08x, want %08x", got, want)
	}
	v := binary.LittleEndian.Uint32(b[hdrOffVersion:])
	if v != segVersion && v != segVersionV1 && v != segVersionRecycled {
		return segHeader{}, fmt.Errorf("unsupported format version %d", v)
	}
	if hs := binary.LittleEndian.Uint32(b[hdrOffHdrSize:]); hs != segHeaderSize {
		return segHeader{}, fmt.Errorf("header size %d, want %d", hs, segHeaderSize)
	}
	h := segHeader{
		first:   binary.LittleEndian.Uint64(b[hdrOffFirst:]),
		size:    int64(binary.LittleEndian.Uint64(b[hdrOffSegSize:])),
		created: int64(binary.LittleEndian.Uint64(b[hdrOffCreated:])),
	}
	if v == segVersion || v == segVersionRecycled {
		copy(h.id[:], b[hdrOffID:])
		if h.id.IsZero() {
			return segHeader{}, fmt.Errorf("version %d header with a zero journal id", v)
		}
	}
	if v == segVersionRecycled {
		h.gen = binary.LittleEndian.Uint32(b[hdrOffGen:])
		if h.gen == 0 {
			return segHeader{}, errors.New("version 3 header with generation 0")
		}
	}
	return h, nil
}

// A segment is one mapped segment file.
//
// Immutable after creation: first, name, path, f, data, size, index (the
// slice header; its entries are written by the flusher before the records
// they point at become visible, see SyncedSeq). Guarded by Journal.segMu:
// sealed, last, lastTime. Owned by the flusher (and recovery): end, count.
type segment struct {
	first uint64
	name  string
	path  string
	f     File
	data  []byte // read-only mapping of the whole file
	size  int64
	hdr   segHeader // as read or written; hdr.id zero: a version 1 header

	// index[k] is the file offset of record first+k*interval.
	index []uint32

	refs atomic.Int32 // one for the segment list, one per cursor on it

	sealed   bool
	last     uint64 // last seq held, valid when sealed (first-1 if empty)
	lastTime int64  // time field of the last record, valid when sealed

	end   int64  // offset where the next record goes
	count uint64 // records held (maintained by recovery only)

	// maxTime is the greatest record time of a sealed segment, once
	// FindTime has read it (maxTimeKnown).
	maxTime      atomic.Int64
	maxTimeKnown atomic.Bool
}

// seal records the last seq and time of a segment that gets no more
// records; last is first-1 for an empty one. Called with segMu held (or
// before the segment is shared); the segment's records are written.
func (s *segment) seal(last uint64, interval int) {
	s.sealed = true
	s.last = last
	if last >= s.first {
		if v, _, err := record.Parse(s.data[s.locate(last, interval):]); err == nil {
			s.lastTime = v.Time()
		}
	}
}

// indexCap returns how many index entries a segment of size bytes can need.
func indexCap(size int64, interval int) int {
	maxRecords := (size - segHeaderSize) / record.HeaderSize
	return int(maxRecords/int64(interval)) + 1
}

// addIndex records the offset of the segment's next record if it falls on
// an index boundary, and counts it. Used by recovery; the flusher fills the
// index from the marks appenders leave.
func (s *segment) addIndex(off int64, interval int) {
	if s.count%uint64(interval) == 0 {
		s.index[s.count/uint64(interval)] = uint32(off)
	}
	s.count++
}

// locate returns the offset of record seq, which must be held by s and
// visible: the sparse index, then a forward scan of < interval records.
func (s *segment) locate(seq uint64, interval int) int64 {
	k := (seq - s.first) / uint64(interval)
	off := int64(s.index[k])
	for r := (seq - s.first) % uint64(interval); r > 0; r-- {
		off += int64(record.Length(s.data[off:]))
	}
	return off
}

// recycled reports whether s is a recycled file: the bytes after its data
// are stale (an older segment's), not zeros.
func (s *segment) recycled() bool { return s.hdr.gen > 0 }

func (s *segment) ref() { s.refs.Add(1) }

// unref drops a reference; the last one unmaps and closes the file.
func (s *segment) unref(j *Journal) {
	if n := s.refs.Add(-1); n == 0 {
		if err := s.f.Close(); err != nil {
			j.log.Warn("journal: closing segment", "file", s.name, "err", err)
		}
	} else if n < 0 {
		panic("journal: segment reference count below zero")
	}
}

// zeroFile creates name sized to size bytes by writing zeros (not
// fallocate: unwritten extents make every later fdatasync slower), then
// syncs it.
// minZeroRate is the slowest pace at which the next segment is zeroed.
const minZeroRate = 8 << 20 // bytes/s

// zeroPacer returns the pace for zeroing the next segment of size bytes. It
// must be ready before the tail fills up, and otherwise stay out of the
// way: zero writes queue in the device in front of group commits, and
// zeroing flat out cost tens of milliseconds of p99 ack latency. So the pace
// is the fastest of: minZeroRate; four times the rate the journal has been
// writing since zeroing began; and what finishes zeroing within half the
// time the tail will take to fill at that write rate. It is re-evaluated
// every few milliseconds.
func (j *Journal) zeroPacer(size int64) func(done int64) {
	start := time.Now()
	written0 := j.writtenBytes.Load()
	return func(done int64) {
		for {
			el := time.Since(start)
			rate := float64(minZeroRate)
			if secs := el.Seconds(); secs > 0.001 {
				wrate := float64(j.writtenBytes.Load()-written0) / secs
				rate = max(rate, 4*wrate)
				if wrate > 0 {
					j.mu.Lock()
					left := j.tailSize - j.tailOff
					j.mu.Unlock()
					if fill := float64(left) / wrate; fill > 0 {
						rate = max(rate, float64(size-done)/(fill/2))
					} else {
						return // the tail is full: zero as fast as possible
					}
				}
			}
			want := time.Duration(float64(done) / rate * float64(time.Second))
			if want <= el {
				return
			}
			select {
			case <-time.After(min(want-el, 5*time.Millisecond)):
			case <-j.stop:
				return
			}
		}
	}
}

func (j *Journal) zeroFile(name string, size int64, paced bool) (File, error) {
	if zc, ok := j.fs.(zeroCreator); ok {
		var pace func(int64)
		if paced {
			pace = j.zeroPacer(size)
		}
		return zc.CreateZeroed(name, size, pace)
	}
	f, err := j.fs.Create(name)
	if err != nil {
		return nil, err
	}
	zeros := j.zeros
	for off := int64(0); off < size; {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			f.Close()
			return nil, err
		}
		off += n
	}
	if err := f.SyncData(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// installSegment turns a zeroed file (gen 0) or a recycled one (gen > 0),
// at tmpPath, into the segment starting at first: header written and
// synced, renamed, directory synced, mapped.
func (j *Journal) installSegment(f File, tmpPath string, first uint64, size int64, gen uint32) (*segment, error) {
	name := segmentName(first)
	path := join(j.opts.Dir, name)
	hdr := segHeader{first: first, size: size, created: j.now().UnixNano(), id: j.id, gen: gen}
	fail := func(err error) (*segment, error) {
		f.Close()
		return nil, fmt.Errorf("journal: creating segment %s: %w", name, err)
	}
	head := hdr.encode()
	if gen > 0 {
		// The rest of the first page zeroed too: the stale record at the
		// first record's offset must not pass for data (a zero length
		// field marks the end of the data, as in a pre-zeroed file).
		head = append(head, zeroPage[:min(pageSize, size)-segHeaderSize]...)
	}
	if _, err := f.WriteAt(head, 0); err != nil {
		return fail(err)
	}
	if err := f.SyncData(); err != nil {
		return fail(err)
	}
	if err := j.fs.Rename(tmpPath, path); err != nil {
		return fail(err)
	}
	if err := j.fs.SyncDir(j.opts.Dir); err != nil {
		return fail(err)
	}
	data, err := f.Map()
	if err != nil {
		return fail(err)
	}
	if int64(len(data)) != size {
		return fail(fmt.Errorf("mapped %d bytes, want %d", len(data), size))
	}
	s := &segment{
		first: first, name: name, path: path, f: f, data: data, size: size, hdr: hdr,
		index: make([]uint32, indexCap(size, j.opts.IndexInterval)),
		last:  first - 1,
		end:   segHeaderSize,
	}
	s.refs.Store(1)
	return s, nil
}

type preallocated struct {
	f    File
	path string
	gen  uint32 // 0: zero-filled; > 0: recycled, the header's generation
}

// A retired segment file renamed to path for reuse (see ApplyRetention);
// gen is the generation its header had.
type retired struct {
	path string
	gen  uint32
}

// nextGen is the generation of a file recycled from one of generation gen.
func nextGen(gen uint32) uint32 {
	if gen == math.MaxUint32 {
		return 1
	}
	return gen + 1
}

// reuse opens a retired segment file for the preallocator. It must still
// have the journal's segment size; its contents are left as they are.
func (j *Journal) reuse(r retired) (preallocated, error) {
	f, err := j.fs.Open(r.path)
	if err != nil {
		return preallocated{}, err
	}
	if size, err := f.Size(); err != nil || size != j.opts.SegmentSize {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%d bytes, want %d", size, j.opts.SegmentSize)
		}
		return preallocated{}, err
	}
	return preallocated{f: f, path: r.path, gen: nextGen(r.gen)}, nil
}

// takeRetired returns a retired file waiting for reuse, if there is one.
func (j *Journal) takeRetired() (retired, bool) {
	select {
	case r := <-j.retired:
		return r, true
	default:
		return retired{}, false
	}
}

// dropRetired removes the retired files nobody will reuse (at Close).
func (j *Journal) dropRetired() {
	for {
		r, ok := j.takeRetired()
		if !ok {
			return
		}
		if err := j.fs.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			j.log.Warn("journal: removing a retired segment", "file", r.path, "err", err)
		}
	}
}

// Preallocation retry back-off: the first retry after a failure comes
// after preallocRetryMin, doubling up to preallocRetryMax; a flusher that
// needs the segment now cuts the wait short (one immediate retry).
// Failures are logged at most once per preallocLogEvery (with the count
// since the last line).
const (
	preallocRetryMin = 50 * time.Millisecond
	preallocRetryMax = 2 * time.Second
	preallocLogEvery = 10 * time.Second
)

// preallocLoop keeps one zeroed, synced segment file ready for rotation.
// A failed attempt (full disk, EIO) is counted (Stats.PreallocFailures),
// logged (rate-limited), its partial file removed, and retried with
// back-off while the tail still has room: the journal fails only if the
// flusher needs the segment and the attempt it waits for fails too.
func (j *Journal) preallocLoop() {
	defer j.bg.Done()
	backoff := preallocRetryMin
	var lastLog time.Time
	var unlogged uint64
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	defer j.dropRetired()
	for n := 1; ; n++ {
		// A segment retention retired is reused as it is: no zeros
		// written (see Segment recycling in doc.go).
		if r, ok := j.takeRetired(); ok {
			p, err := j.reuse(r)
			if err == nil {
				if !j.handOff(p) {
					return
				}
				continue
			}
			j.log.Warn("journal: cannot reuse a retired segment; removing it", "file", r.path, "err", err)
			if rerr := j.fs.Remove(r.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				j.log.Warn("journal: removing a retired segment", "file", r.path, "err", rerr)
			}
		}
		path := join(j.opts.Dir, fmt.Sprintf(preallocName, n))
		f, err := j.zeroFile(path, j.opts.SegmentSize, true) // ahead of need: paced
		if err != nil {
			j.preallocFailures.Add(1)
			unlogged++
			if rerr := j.fs.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("removing the partial file: %w", rerr))
			}
			if j.Err() != nil {
				return // the journal failed: nothing will rotate again
			}
			if now := time.Now(); now.Sub(lastLog) >= preallocLogEvery {
				j.log.Warn("journal: preallocating the next segment failed; retrying", "err", err,
					"failures", unlogged, "retry_in", backoff)
				lastLog, unlogged = now, 0
			}
			retry.Reset(backoff)
			select {
			case j.preallocFailed <- err: // the flusher needs it now and cannot have it
			case <-j.needSegment: // needed now: one more attempt at once
			case <-retry.C:
			case <-j.stop:
				return
			}
			retry.Stop()
			backoff = min(2*backoff, preallocRetryMax)
			continue
		}
		backoff = preallocRetryMin
		if !j.handOff(preallocated{f: f, path: path}) {
			return
		}
	}
}

// handOff gives p to the flusher's next rotation and, when retention may
// retire segments, waits for that rotation to be installed and applies
// retention at once, so the segment it retires (if any) is there for the
// preallocator's next round instead of a zero-filled new file. It returns
// false, having removed p, when the journal stops.
func (j *Journal) handOff(p preallocated) bool {
	select {
	case j.ready <- p:
	case <-j.stop:
		p.f.Close()
		if err := j.fs.Remove(p.path); err != nil {
			j.log.Warn("journal: removing preallocated segment", "err", err)
		}
		return false
	}
	if !j.recycling() {
		return true
	}
	select {
	case <-j.rotated:
	case <-j.stop:
		return false
	}
	if _, err := j.ApplyRetention(); err != nil {
		j.log.Warn("journal: retention", "err", err)
	}
	return true
}

// recycling reports whether retention hands deleted segments to the
// preallocator for reuse.
func (j *Journal) recycling() bool {
	return !j.opts.NoRecycle && (j.opts.RetentionAge > 0 || j.opts.RetentionBytes > 0)
}

// nextSegment installs the preallocated file as the segment starting at
// first. Called by the flusher; waits for the preallocator if needed. If
// the preallocator's attempts are failing, it asks for one at once and
// fails with that attempt's error.
func (j *Journal) nextSegment(first uint64) (*segment, error) {
	var p preallocated
	select {
	case p = <-j.ready:
	default:
		select {
		case j.needSegment <- struct{}{}:
		default:
		}
		select {
		case p = <-j.ready:
		case err := <-j.preallocFailed:
			return nil, fmt.Errorf("journal: preallocating segment: %w", err)
		case <-j.stop:
			return nil, ErrClosed
		}
	}
	seg, err := j.installSegment(p.f, p.path, first, j.opts.SegmentSize, p.gen)
	if err == nil && p.gen > 0 {
		j.recycledSegs.Add(1)
	}
	return seg, err
}
