package journal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/tandemhq/tandem/record"
)

func segFiles(t testing.TB, fs FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if strings.HasSuffix(n, segSuffix) {
			segs = append(segs, filepath.Join(dir, n))
		}
	}
	return segs
}

func readAll(t testing.TB, fs FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size, _ := f.Size()
	b := make([]byte, size)
	if err := readFull(f, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t testing.TB, fs FS, path string, off int64, b []byte) {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.SyncData(); err != nil {
		t.Fatal(err)
	}
}

// recordOffsets returns the offset of each record in a segment file and the
// end of its data.
func recordOffsets(data []byte) (offs []int64, end int64) {
	off := int64(segHeaderSize)
	for off+4 <= int64(len(data)) {
		n := record.Length(data[off:])
		if n == 0 {
			break
		}
		offs = append(offs, off)
		off += int64(n)
	}
	return offs, off
}

// buildJournal writes batches of records (one sync each) and closes it.
func buildJournal(t *testing.T, opts Options, batches ...int) uint64 {
	t.Helper()
	j := mustOpen(t, opts)
	for _, n := range batches {
		j.Lock()
		for i := 0; i < n; i++ {
			want := j.LastSeq() + 1
			h := detHeader(want)
			if _, err := j.AppendLocked(&h, detTopic(want), detPayload(want)); err != nil {
				t.Fatal(err)
			}
		}
		j.Unlock()
		waitSynced(t, j, j.LastSeq())
	}
	last := j.LastSeq()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return last
}

// batchBytes encodes the deterministic records first..first+n-1 as the
// flusher writes one batch: FlagBatchStart on the first.
func batchBytes(first uint64, n int) []byte {
	var b []byte
	for seq := first; seq < first+uint64(n); seq++ {
		h := detHeader(seq)
		h.Seq = seq
		b = record.Append(b, &h, detTopic(seq), detPayload(seq))
	}
	record.RestampFlags(b[:record.Length(b)], first, record.FlagBatchStart)
	return b
}

// recordsBefore counts the records of b (records back to back) that end at
// or before offset lim.
func recordsBefore(b []byte, lim int) uint64 {
	var n uint64
	for off := 0; off+4 <= len(b) && record.Length(b[off:]) > 0 && off+record.Length(b[off:]) <= lim; off += record.Length(b[off:]) {
		n++
	}
	return n
}

// nextSector returns the first 512-byte boundary above off.
func nextSector(off int64) int64 { return (off/sectorSize + 1) * sectorSize }

// TestRecoverTornTail damages the final segment the way a crash before the
// last batch's fdatasync can: whole 512-byte sectors of an unsynced batch
// missing (still zero), no later batch written. Recovery truncates.
func TestRecoverTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (lastAfter uint64)
	}{
		{"batch cut at a sector boundary", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			b := batchBytes(last+1, 20)
			cut := int(nextSector(end+1) + sectorSize - end) // the batch's second sector is the last written
			n := recordsBefore(b, cut)
			if cut >= len(b) || recordsBefore(b, cut+1) != n {
				t.Fatalf("cut at %d of %d lands on a record boundary", cut, len(b))
			}
			writeAt(t, fs, path, end, b[:cut])
			return last + n
		}},
		{"first sector of the batch lost", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			// Pages are written back in any order: later records of the
			// batch survive, but none is a batch start.
			b := batchBytes(last+1, 20)
			skip := nextSector(end) - end
			writeAt(t, fs, path, end+skip, b[skip:])
			return last
		}},
		{"sector lost inside the batch", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			b := batchBytes(last+1, 20)
			writeAt(t, fs, path, end, b)
			s := nextSector(end + 600)
			writeAt(t, fs, path, s, make([]byte, sectorSize))
			return last + recordsBefore(b, int(s-end))
		}},
		{"only the batch's last sector written", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			b := batchBytes(last+1, 20)
			from := (end + int64(len(b)) - 1) / sectorSize * sectorSize
			writeAt(t, fs, path, from, b[from-end:])
			return last
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := memOpts(t, fs)
			opts.SegmentSize = 64 << 10
			var logBuf lockedBuffer
			opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
			last := buildJournal(t, opts, 5, 3, 4)
			segs := segFiles(t, fs, opts.Dir)
			path := segs[len(segs)-1]
			data := readAll(t, fs, path)
			_, end := recordOffsets(data)
			want := tc.damage(t, fs, path, data, end, last)

			rep, err := Check(opts.Dir, fs)
			if !IsTornTail(err) || !rep.TornTail {
				t.Fatalf("Check: %+v, %v; want a torn tail", rep, err)
			}
			if rep.DroppedFirst != want+1 {
				t.Fatalf("Check: drops from seq %d, want %d", rep.DroppedFirst, want+1)
			}
			j := mustOpen(t, opts)
			if j.LastSeq() != want || j.SyncedSeq() != want {
				t.Fatalf("recovered LastSeq %d SyncedSeq %d, want %d", j.LastSeq(), j.SyncedSeq(), want)
			}
			if j.Stats().TruncatedBytes == 0 {
				t.Fatal("no truncated bytes reported")
			}
			if log := logBuf.String(); !strings.Contains(log, "torn tail") || !strings.Contains(log, fmt.Sprintf("first_seq=%d", want+1)) {
				t.Fatalf("log does not report the torn tail from seq %d:\n%s", want+1, log)
			}
			verifyDet(t, j, 1, want, true)
			after := readAll(t, fs, path)
			_, newEnd := recordOffsets(after)
			if nz := nonZeroEnd(after, int(newEnd)); int64(nz) != newEnd {
				t.Fatalf("bytes after the recovered end not zeroed (non-zero up to %d, end %d)", nz, newEnd)
			}
			for i := 0; i < 20; i++ {
				appendDet(t, j)
			}
			waitSynced(t, j, want+20)
			verifyDet(t, j, 1, want+20, true)
			j.Close()
			if _, err := Check(opts.Dir, fs); err != nil {
				t.Fatalf("Check after recovery: %v", err)
			}
		})
	}
}

// lastBatchCorruption damages the last batch of the final segment in ways
// no lost write explains (every sector of the bad record holds written
// bytes), or with a later batch start after it. Each returns the offset and
// seq of the first bad record.
var lastBatchCorruption = []struct {
	name   string
	damage func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (off int64, seq uint64)
}{
	{"bad crc in last batch", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (int64, uint64) {
		offs, _ := recordOffsets(data)
		// The last batch holds the last 4 records; damage its third. The
		// fourth, written with it, proves nothing about its sync.
		off := offs[len(offs)-2]
		writeAt(t, fs, path, off+record.HeaderSize, []byte{data[off+record.HeaderSize] ^ 0xff})
		return off, last - 1
	}},
	{"zeroed length in a written sector", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (int64, uint64) {
		offs, _ := recordOffsets(data)
		off := offs[len(offs)-1]
		writeAt(t, fs, path, off, make([]byte, 4))
		return off, last
	}},
	{"garbage after end", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (int64, uint64) {
		g := make([]byte, 500)
		for i := range g {
			g[i] = byte(i*131 + 7)
		}
		writeAt(t, fs, path, end, g)
		return end, last + 1
	}},
	{"seq discontinuity", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (int64, uint64) {
		h := detHeader(last + 5)
		h.Seq = last + 5
		writeAt(t, fs, path, end, record.Append(nil, &h, detTopic(last+5), detPayload(last+5))) // verifies, wrong seq, no batch flag
		return end, last + 1
	}},
	{"lost sector before a later batch start", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (int64, uint64) {
		// A lost write would explain the zero sector, but the next batch
		// was written after this one's fdatasync returned.
		offs, _ := recordOffsets(data)
		var starts []int
		for i, o := range offs {
			if record.FlagsOf(data[o:])&record.FlagBatchStart != 0 {
				starts = append(starts, i)
			}
		}
		if len(starts) < 2 {
			t.Fatalf("final segment has %d batches", len(starts))
		}
		// Zero the sector holding the first record of the next-to-last batch.
		i := starts[len(starts)-2]
		s := offs[i] / sectorSize * sectorSize
		writeAt(t, fs, path, s, make([]byte, sectorSize))
		first := sort.Search(len(offs), func(k int) bool { return offs[k]+int64(record.Length(data[offs[k]:])) > s })
		return offs[first], uint64(first) + 1
	}},
}

func TestRecoverLastBatchCorruption(t *testing.T) {
	for _, tc := range lastBatchCorruption {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := memOpts(t, fs)
			opts.SegmentSize = 64 << 10
			last := buildJournal(t, opts, 5, 3, 4)
			segs := segFiles(t, fs, opts.Dir)
			path := segs[len(segs)-1]
			data := readAll(t, fs, path)
			_, end := recordOffsets(data)
			off, seq := tc.damage(t, fs, path, data, end, last)
			damaged := readAll(t, fs, path)

			_, err := Open(opts)
			if !errors.Is(err, ErrCorrupt) || IsTornTail(err) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			for _, want := range []string{filepath.Base(path), fmt.Sprintf("offset %d ", off), fmt.Sprintf("seq %d", seq), "RecoverTruncate"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			}
			t.Log(err)
			if rep, cerr := Check(opts.Dir, fs); !errors.Is(cerr, ErrCorrupt) || IsTornTail(cerr) || rep.TornTail {
				t.Fatalf("Check: %+v, %v", rep, cerr)
			}
			if after := readAll(t, fs, path); !bytes.Equal(after, damaged) {
				t.Fatal("a refused Open changed the segment")
			}
		})
	}
}

// TestRecoverTruncateRepairs opens each corrupt journal of
// TestRecoverLastBatchCorruption with RecoverTruncate: it cuts at the first
// bad record and logs what it dropped.
func TestRecoverTruncateRepairs(t *testing.T) {
	for _, tc := range lastBatchCorruption {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := memOpts(t, fs)
			opts.SegmentSize = 64 << 10
			last := buildJournal(t, opts, 5, 3, 4)
			segs := segFiles(t, fs, opts.Dir)
			path := segs[len(segs)-1]
			data := readAll(t, fs, path)
			_, end := recordOffsets(data)
			off, seq := tc.damage(t, fs, path, data, end, last)
			damaged := readAll(t, fs, path)
			dataEnd := int64(nonZeroEnd(damaged, int(off)))
			// The highest seq that still verifies after the cut (or seq).
			dropLast := seq
			for _, o := range allVerifying(damaged[:dataEnd], int(off)) {
				v, _, _ := record.Parse(damaged[o:])
				dropLast = max(dropLast, v.Seq())
			}

			var logBuf lockedBuffer
			opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
			opts.RecoverTruncate = true
			j := mustOpen(t, opts)
			if j.LastSeq() != seq-1 || j.SyncedSeq() != seq-1 {
				t.Fatalf("after repair LastSeq %d SyncedSeq %d, want %d", j.LastSeq(), j.SyncedSeq(), seq-1)
			}
			if got := j.Stats().TruncatedBytes; got != dataEnd-off {
				t.Fatalf("TruncatedBytes %d, want %d", got, dataEnd-off)
			}
			log := logBuf.String()
			for _, want := range []string{"corrupt", filepath.Base(path), fmt.Sprintf("offset=%d ", off),
				fmt.Sprintf("first_seq=%d ", seq), fmt.Sprintf("last_seq=%d ", dropLast), fmt.Sprintf("bytes=%d ", dataEnd-off)} {
				if !strings.Contains(log, want) {
					t.Fatalf("repair log does not say %q:\n%s", want, log)
				}
			}
			t.Log(log)
			verifyDet(t, j, 1, seq-1, true)
			for i := 0; i < 10; i++ {
				appendDet(t, j)
			}
			waitSynced(t, j, seq+9)
			verifyDet(t, j, 1, seq+9, true)
			j.Close()
			if _, err := Check(opts.Dir, fs); err != nil {
				t.Fatalf("Check after repair: %v", err)
			}
			opts.RecoverTruncate = false
			j = mustOpen(t, opts)
			verifyDet(t, j, 1, seq+9, true)
			j.Close()
		})
	}
}

// allVerifying returns every offset in b[from:] where a record verifies.
func allVerifying(b []byte, from int) []int {
	var offs []int
	for p := from; p+record.HeaderSize <= len(b); p++ {
		if n := record.Length(b[p:]); n < record.HeaderSize || n > len(b)-p {
			continue
		}
		if v, _, err := record.Parse(b[p:]); err == nil && v.Verify() == nil {
			offs = append(offs, p)
		}
	}
	return offs
}

// TestOpenSyncsRecoveredTail: records a previous process wrote but never
// synced (it was killed) are in the page cache, so recovery finds them and
// counts them as synced. Open must make them durable before trusting them:
// a power loss right after Open keeps them.
func TestOpenSyncsRecoveredTail(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	last := buildJournal(t, opts, 5, 3)
	segs := segFiles(t, fs, opts.Dir)
	path := segs[len(segs)-1]
	_, end := recordOffsets(readAll(t, fs, path))
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(batchBytes(last+1, 7), end); err != nil { // no SyncData: the process died
		t.Fatal(err)
	}
	f.Close()

	j := mustOpen(t, opts)
	synced := j.SyncedSeq()
	if synced != last+7 {
		t.Fatalf("recovered SyncedSeq %d, want %d", synced, last+7)
	}
	crashed := fs.CrashClone() // power loss right after Open
	j.Close()
	opts.FS = crashed
	j = mustOpen(t, opts)
	defer j.Close()
	if j.LastSeq() < synced {
		t.Fatalf("after a crash the journal holds %d records; Open had reported %d synced", j.LastSeq(), synced)
	}
	verifyDet(t, j, 1, synced, true)
}

// TestOpenRemovalsDurable: files recovery removes (leftover temporary files,
// an empty final segment with a bad header) stay removed after a crash.
func TestOpenRemovalsDurable(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	last := buildJournal(t, opts, 3, 3)
	bad := filepath.Join(opts.Dir, segmentName(last+1))
	tmp := filepath.Join(opts.Dir, "next-7.seg.tmp")
	for _, p := range []string{bad, tmp} {
		f, err := fs.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(make([]byte, 100), 0)
		f.SyncData()
		f.Close()
	}
	if err := fs.SyncDir(opts.Dir); err != nil {
		t.Fatal(err)
	}
	j := mustOpen(t, opts)
	crashed := fs.CrashClone()
	j.Close()
	names, _ := crashed.List(opts.Dir)
	for _, n := range names {
		if n == filepath.Base(bad) || n == filepath.Base(tmp) {
			t.Fatalf("%s removed by recovery is back after a crash (files %v)", n, names)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for the journal's goroutines to log
// into.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRecoverCorruption(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fs FS, segs []string) string // returns the file named
	}{
		{"crc in final segment before a later batch", func(t *testing.T, fs FS, segs []string) string {
			path, data, off, _ := beforeLastBatch(t, fs, segs)
			off += record.HeaderSize + 1
			writeAt(t, fs, path, off, []byte{data[off] ^ 1})
			return path
		}},
		{"length in final segment before a later batch", func(t *testing.T, fs FS, segs []string) string {
			path, _, off, _ := beforeLastBatch(t, fs, segs)
			writeAt(t, fs, path, off, []byte{0xff, 0xff, 0, 0})
			return path
		}},
		{"zeroed record in final segment before a later batch", func(t *testing.T, fs FS, segs []string) string {
			path, _, off, n := beforeLastBatch(t, fs, segs)
			writeAt(t, fs, path, off, make([]byte, n))
			return path
		}},
		{"crc in non-final segment", func(t *testing.T, fs FS, segs []string) string {
			path := segs[0]
			data := readAll(t, fs, path)
			offs, _ := recordOffsets(data)
			off := offs[len(offs)-1] + 10
			writeAt(t, fs, path, off, []byte{data[off] ^ 0x80})
			return path
		}},
		{"truncated non-final segment", func(t *testing.T, fs FS, segs []string) string {
			path := segs[1]
			data := readAll(t, fs, path)
			offs, end := recordOffsets(data)
			writeAt(t, fs, path, offs[len(offs)-1], make([]byte, end-offs[len(offs)-1]))
			return segs[2]
		}},
		{"missing middle segment", func(t *testing.T, fs FS, segs []string) string {
			if err := fs.Remove(segs[1]); err != nil {
				t.Fatal(err)
			}
			return segs[2]
		}},
		{"bad header with data in final segment", func(t *testing.T, fs FS, segs []string) string {
			writeAt(t, fs, segs[len(segs)-1], 0, []byte("XXXX"))
			return segs[len(segs)-1]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := memOpts(t, fs)
			opts.SegmentSize = 8 << 10
			batches := make([]int, 40)
			for i := range batches {
				batches[i] = 1 + i%5
			}
			batches = append(batches, 2, 2, 2)
			buildJournal(t, opts, batches...)
			segs := segFiles(t, fs, opts.Dir)
			if len(segs) < 4 {
				t.Fatalf("only %d segments", len(segs))
			}
			name := filepath.Base(tc.damage(t, fs, segs))
			_, err := Open(opts)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error %q does not name %s", err, name)
			}
			t.Log(err)
			if _, cerr := Check(opts.Dir, fs); !errors.Is(cerr, ErrCorrupt) || IsTornTail(cerr) {
				t.Fatalf("Check: %v", cerr)
			}
		})
	}
}

func TestRecoverRemovesEmptyFinalSegment(t *testing.T) {
	for _, size := range []int64{0, 10, 8 << 10} {
		fs := NewMemFS()
		opts := memOpts(t, fs)
		opts.SegmentSize = 8 << 10
		last := buildJournal(t, opts, 3, 3)
		// A crash while creating the next segment left it with no header.
		path := filepath.Join(opts.Dir, segmentName(last+1))
		f, err := fs.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			f.WriteAt(make([]byte, size), 0)
		}
		f.Close()
		// And a half-zeroed preallocated file.
		tmp, _ := fs.Create(filepath.Join(opts.Dir, "next-1.seg.tmp"))
		tmp.Close()
		j := mustOpen(t, opts)
		verifyDet(t, j, 1, last, true)
		seq := appendDet(t, j)
		waitSynced(t, j, seq)
		j.Close()
		names, _ := fs.List(opts.Dir)
		for _, n := range names {
			if strings.HasSuffix(n, ".tmp") {
				t.Fatalf("leftover %s", n)
			}
		}
	}
}

func TestOpenRealDirReopenChangedSegmentSize(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentSize: 8 << 10, Logger: quietLogger()}
	last := buildJournal(t, opts, 100, 100)
	opts.SegmentSize = 32 << 10
	j := mustOpen(t, opts)
	defer j.Close()
	for i := 0; i < 300; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, last+300)
	verifyDet(t, j, 1, last+300, true)
	ents, _ := os.ReadDir(dir)
	sizes := map[int64]bool{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".seg") {
			continue // checkpoints, written (and renamed) in the background
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		sizes[fi.Size()] = true
	}
	if !sizes[8<<10] || !sizes[32<<10] {
		t.Fatalf("segment sizes %v", sizes)
	}
}

// beforeLastBatch returns the final segment and the offset and length of
// the record just before its last batch-start record.
func beforeLastBatch(t *testing.T, fs FS, segs []string) (string, []byte, int64, int64) {
	path := segs[len(segs)-1]
	data := readAll(t, fs, path)
	offs, _ := recordOffsets(data)
	for i := len(offs) - 1; i > 0; i-- {
		if record.FlagsOf(data[offs[i]:])&record.FlagBatchStart != 0 {
			return path, data, offs[i-1], offs[i] - offs[i-1]
		}
	}
	t.Fatalf("final segment has a single batch")
	return "", nil, 0, 0
}
