package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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

func TestRecoverTornTail(t *testing.T) {
	encoded := func(seq uint64) []byte {
		h := detHeader(seq)
		h.Seq = seq
		return record.Append(nil, &h, detTopic(seq), detPayload(seq))
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) (lastAfter uint64)
	}{
		{"partial record", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			writeAt(t, fs, path, end, encoded(last + 1)[:30])
			return last
		}},
		{"garbage after end", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			g := make([]byte, 500)
			for i := range g {
				g[i] = byte(i*131 + 7)
			}
			writeAt(t, fs, path, end, g)
			return last
		}},
		{"record then zeros then data", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			// A torn batch whose first page was lost: records later in it
			// survive but are not batch starts.
			writeAt(t, fs, path, end+200, encoded(last+3))
			return last
		}},
		{"bad crc in last batch", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			offs, _ := recordOffsets(data)
			// The last batch holds the last 4 records; damage its third.
			off := offs[len(offs)-2]
			writeAt(t, fs, path, off+record.HeaderSize, []byte{data[off+record.HeaderSize] ^ 0xff})
			return last - 2
		}},
		{"seq discontinuity", func(t *testing.T, fs FS, path string, data []byte, end int64, last uint64) uint64 {
			writeAt(t, fs, path, end, encoded(last+5)) // verifies, wrong seq, no batch flag
			return last
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := memOpts(t, fs)
			opts.SegmentSize = 64 << 10
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
			j := mustOpen(t, opts)
			if j.LastSeq() != want || j.SyncedSeq() != want {
				t.Fatalf("recovered LastSeq %d SyncedSeq %d, want %d", j.LastSeq(), j.SyncedSeq(), want)
			}
			if j.Stats().TruncatedBytes == 0 {
				t.Fatal("no truncated bytes reported")
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
		fi, _ := e.Info()
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
