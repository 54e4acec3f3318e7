package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/record"
)

// Segment file header; part of the on-disk format (see doc.go).
const (
	segMagic      = "TNDMSEG1"
	segVersion    = 2 // 2: journal id at 40; 1: no id (upgraded at Open)
	segVersionV1  = 1
	segHeaderSize = 64

	hdrOffMagic   = 0
	hdrOffVersion = 8
	hdrOffHdrSize = 12
	hdrOffFirst   = 16
	hdrOffSegSize = 24
	hdrOffCreated = 32
	hdrOffID      = 40 // 16 bytes, version 2; [56,60) reserved zero
	hdrOffCRC     = 60

	segSuffix     = ".seg"
	segNameDigits = 20
	tmpSuffix     = ".tmp"
	preallocName  = "next-%d.seg.tmp" // a counter keeps names unique
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
}

// encode returns the version 2 header.
func (h segHeader) encode() []byte {
	b := make([]byte, segHeaderSize)
	copy(b[hdrOffMagic:], segMagic)
	binary.LittleEndian.PutUint32(b[hdrOffVersion:], segVersion)
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
	if v != segVersion && v != segVersionV1 {
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
	if v == segVersion {
		copy(h.id[:], b[hdrOffID:])
		if h.id.IsZero() {
			return segHeader{}, errors.New("version 2 header with a zero journal id")
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

// installSegment turns a zeroed file (at tmpPath) into the segment starting
// at first: header written and synced, renamed, directory synced, mapped.
func (j *Journal) installSegment(f File, tmpPath string, first uint64, size int64) (*segment, error) {
	name := segmentName(first)
	path := join(j.opts.Dir, name)
	hdr := segHeader{first: first, size: size, created: j.now().UnixNano(), id: j.id}
	fail := func(err error) (*segment, error) {
		f.Close()
		return nil, fmt.Errorf("journal: creating segment %s: %w", name, err)
	}
	if _, err := f.WriteAt(hdr.encode(), 0); err != nil {
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
	for n := 1; ; n++ {
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
		select {
		case j.ready <- preallocated{f: f, path: path}:
		case <-j.stop:
			f.Close()
			if err := j.fs.Remove(path); err != nil {
				j.log.Warn("journal: removing preallocated segment", "err", err)
			}
			return
		}
	}
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
	return j.installSegment(p.f, p.path, first, j.opts.SegmentSize)
}
