package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/uring"
)

// recycleOpts: small segments, retention keeping three of them, so a few
// hundred records recycle files.
func recycleOpts(t testing.TB, fs FS) Options {
	opts := memOpts(t, fs)
	opts.RetentionBytes = 3 * opts.SegmentSize
	return opts
}

// appendUntilRecycledTail appends (one sync per batch of n) until the tail
// segment is a recycled file holding at least one record, and returns the
// journal's tail.
func appendUntilRecycledTail(t *testing.T, j *Journal, n int) *segment {
	t.Helper()
	for i := 0; i < 10000; i++ {
		for k := 0; k < n; k++ {
			appendDet(t, j)
		}
		waitSynced(t, j, j.LastSeq())
		j.segMu.RLock()
		tail := j.segs[len(j.segs)-1]
		j.segMu.RUnlock()
		if tail.recycled() && j.SyncedSeq() >= tail.first {
			return tail
		}
	}
	t.Fatal("the tail never became a recycled segment")
	return nil
}

// settleRetention applies retention once more, so that what the
// background passes (after the last rotation) would still remove is gone
// and FirstSeq stays put.
func settleRetention(t *testing.T, j *Journal) {
	t.Helper()
	if _, err := j.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
}

// staleAfter returns the records of an older generation that verify in
// data[from:] (any offset, seq below first), and how many of them carry
// FlagBatchStart.
func staleAfter(data []byte, from int64, first uint64) (n, batchStarts int) {
	for p := from; p+record.HeaderSize <= int64(len(data)); p++ {
		l := int64(record.Length(data[p:]))
		if l < record.HeaderSize || p+l > int64(len(data)) {
			continue
		}
		v, _, err := record.Parse(data[p:])
		if err != nil || v.Verify() != nil || v.Seq() >= first {
			continue
		}
		n++
		if v.Flags()&record.FlagBatchStart != 0 {
			batchStarts++
		}
	}
	return n, batchStarts
}

func tmpFiles(t *testing.T, fs FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tmp []string
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			tmp = append(tmp, n)
		}
	}
	return tmp
}

// TestRecycleReusesRetiredSegments: retention hands its segments to the
// preallocator, which installs them as new segments (version 3 headers,
// generations counting up) without zero-filling; every record reads back,
// before and after a restart, and Close leaves no retired file behind.
func TestRecycleReusesRetiredSegments(t *testing.T) {
	fs := NewMemFS()
	opts := recycleOpts(t, fs)
	j := mustOpen(t, opts)
	for i := 0; i < 1500; i++ {
		appendDet(t, j)
		if i%50 == 0 {
			waitSynced(t, j, j.LastSeq())
		}
	}
	waitSynced(t, j, j.LastSeq())
	settleRetention(t, j)
	st := j.Stats()
	if st.RecycledSegments == 0 || st.RemovedSegments == 0 {
		t.Fatalf("recycled %d, removed %d segments: want both > 0", st.RecycledSegments, st.RemovedSegments)
	}
	if st.Bytes > opts.RetentionBytes+opts.SegmentSize {
		t.Fatalf("segments hold %d bytes, retention keeps %d", st.Bytes, opts.RetentionBytes)
	}
	first, last := j.FirstSeq(), j.LastSeq()
	verifyDet(t, j, first, last, true)
	var maxGen uint32
	j.segMu.RLock()
	for _, s := range j.segs {
		maxGen = max(maxGen, s.hdr.gen)
	}
	j.segMu.RUnlock()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if tmp := tmpFiles(t, fs, opts.Dir); len(tmp) != 0 {
		t.Fatalf("files left after Close: %v", tmp)
	}
	// The generations on disk: version 3 headers, some reused more than once.
	var v3 int
	for _, p := range segFiles(t, fs, opts.Dir) {
		b := readAll(t, fs, p)
		h, err := decodeSegHeader(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if binary.LittleEndian.Uint32(b[hdrOffVersion:]) == segVersionRecycled && h.gen > 0 {
			v3++
		}
	}
	if v3 == 0 || maxGen < 2 {
		t.Fatalf("%d version 3 headers, highest generation %d: want recycled files reused again", v3, maxGen)
	}
	j2 := mustOpen(t, opts)
	defer j2.Close()
	if j2.FirstSeq() != first || j2.LastSeq() != last || j2.Stats().TruncatedBytes != 0 {
		t.Fatalf("reopened: seqs %d..%d, truncated %d; want %d..%d, none", j2.FirstSeq(), j2.LastSeq(), j2.Stats().TruncatedBytes, first, last)
	}
	verifyDet(t, j2, first, last, true)
}

// TestRecycleNoRecycleDeletes: with NoRecycle retention deletes files and
// every segment is a zero-filled version 2 one, as before recycling.
func TestRecycleNoRecycleDeletes(t *testing.T) {
	fs := NewMemFS()
	opts := recycleOpts(t, fs)
	opts.NoRecycle = true
	j := mustOpen(t, opts)
	for i := 0; i < 600; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, j.LastSeq())
	settleRetention(t, j)
	if st := j.Stats(); st.RecycledSegments != 0 || st.RemovedSegments == 0 {
		t.Fatalf("recycled %d, removed %d: want 0 and > 0", st.RecycledSegments, st.RemovedSegments)
	}
	j.Close()
	for _, p := range segFiles(t, fs, opts.Dir) {
		if v := binary.LittleEndian.Uint32(readAll(t, fs, p)[hdrOffVersion:]); v != segVersion {
			t.Fatalf("%s: version %d, want %d", p, v, segVersion)
		}
	}
}

// TestRecycledTailStaleRecordsNeverReplayed: a recycled tail holds, after
// this generation's records, an older generation's records, which verify
// (CRCs intact) and include batch starts. A restart must end the data at
// the zero length field the flusher writes after every batch and replay
// none of them, and must not take their batch starts for evidence of
// corruption. It fails if recovery trusts any stale record.
func TestRecycledTailStaleRecordsNeverReplayed(t *testing.T) {
	fs := NewMemFS()
	opts := recycleOpts(t, fs)
	j := mustOpen(t, opts)
	tail := appendUntilRecycledTail(t, j, 3)
	settleRetention(t, j)
	first, last := j.FirstSeq(), j.LastSeq()
	tailPath := tail.path
	tailFirst := tail.first
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	data := readAll(t, fs, tailPath)
	_, end := recordOffsets(data)
	stale, starts := staleAfter(data, end, tailFirst)
	if stale == 0 || starts == 0 {
		t.Fatalf("the test needs stale records after the data: %d (%d batch starts)", stale, starts)
	}
	for _, verify := range []bool{false, true} {
		opts.VerifyAll = verify
		j2 := mustOpen(t, opts)
		if j2.FirstSeq() != first || j2.LastSeq() != last || j2.Stats().TruncatedBytes != 0 {
			t.Fatalf("VerifyAll %v: seqs %d..%d, truncated %d bytes; want %d..%d, nothing truncated",
				verify, j2.FirstSeq(), j2.LastSeq(), j2.Stats().TruncatedBytes, first, last)
		}
		verifyDet(t, j2, first, last, true)
		// New records go where the data ended, and stay readable.
		appendDet(t, j2)
		appendDet(t, j2)
		last += 2
		waitSynced(t, j2, last)
		verifyDet(t, j2, first, last, true)
		j2.Close()
	}
	if rep, err := Check(opts.Dir, fs); err != nil || rep.LastSeq != last || rep.TornTail {
		t.Fatalf("Check: %+v, %v", rep, err)
	}
}

// tornRecycledTail returns a MemFS holding a journal whose tail is a
// recycled segment, closed cleanly, with the tail's path, its data end and
// the next seq.
func tornRecycledTail(t *testing.T) (*MemFS, Options, string, int64, uint64) {
	t.Helper()
	fs := NewMemFS()
	opts := recycleOpts(t, fs)
	opts.Logger = quietLogger()
	j := mustOpen(t, opts)
	tail := appendUntilRecycledTail(t, j, 2)
	path := tail.path
	next := j.LastSeq() + 1
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	_, end := recordOffsets(readAll(t, fs, path))
	return fs, opts, path, end, next
}

// TestRecycledTailLostWriteIsTorn: the last batch of a recycled tail was
// written in part when the machine stopped: its first page reached the
// disk, the next one did not and still holds the older generation's
// bytes. That is a torn tail (the batch was never synced): Open truncates
// it. The rule for pre-zeroed segments (a lost write leaves zeros) would
// call it corruption and refuse to start.
func TestRecycledTailLostWriteIsTorn(t *testing.T) {
	fs, opts, path, end, next := tornRecycledTail(t)
	data := readAll(t, fs, path)
	// A batch of records reaching past the next page.
	page := (end/pageSize + 1) * pageSize
	n := 1
	for int64(len(batchBytes(next, n))) < page-end+2*sectorSize {
		n++
	}
	b := batchBytes(next, n)
	if end+int64(len(b)) > int64(len(data)) {
		t.Skip("tail too full for the test batch")
	}
	if s, _ := staleAfter(data[:end+int64(len(b))], page, next); s == 0 {
		t.Fatal("the test needs stale records where the lost page is")
	}
	writeAt(t, fs, path, end, b[:page-end]) // the first page landed, the rest did not
	j, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer j.Close()
	if j.LastSeq() != next-1+recordsBefore(b, int(page-end)) || j.Stats().TruncatedBytes == 0 {
		t.Fatalf("LastSeq %d, truncated %d: want %d, a torn tail cut", j.LastSeq(), j.Stats().TruncatedBytes, next-1+recordsBefore(b, int(page-end)))
	}
	verifyDet(t, j, j.FirstSeq(), j.LastSeq(), true)
	appendDet(t, j)
	waitSynced(t, j, j.LastSeq())
	verifyDet(t, j, j.FirstSeq(), j.LastSeq(), true)
}

// TestRecycledTailCorruption: damage in a recycled tail that a later batch
// start of this generation proves synced is corruption, as in a pre-zeroed
// segment: Open refuses, and RecoverTruncate cuts it.
func TestRecycledTailCorruption(t *testing.T) {
	fs, opts, path, end, next := tornRecycledTail(t)
	// Two more batches after the data, the first damaged.
	b1, b2 := batchBytes(next, 2), batchBytes(next+2, 2)
	writeAt(t, fs, path, end, append(append([]byte(nil), b1...), b2...))
	writeAt(t, fs, path, end+30, []byte{0xff ^ b1[30]}) // origin: the CRC fails
	_, err := Open(opts)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "batch written after") {
		t.Fatalf("Open: %v, want ErrCorrupt with a later batch start", err)
	}
	opts.RecoverTruncate = true
	j := mustOpen(t, opts)
	defer j.Close()
	if j.LastSeq() != next-1 {
		t.Fatalf("LastSeq %d after the repair, want %d", j.LastSeq(), next-1)
	}
	verifyDet(t, j, j.FirstSeq(), j.LastSeq(), true)
}

// TestRecycledTailDamagedLastRecord: the last record of a recycled tail,
// every sector of it written by this generation, fails its CRC: no lost
// write explains it (its sectors hold neither zeros nor stale records), so
// Open refuses.
func TestRecycledTailDamagedLastRecord(t *testing.T) {
	fs, opts, path, end, next := tornRecycledTail(t)
	data := readAll(t, fs, path)
	offs, _ := recordOffsets(data)
	last := offs[len(offs)-1]
	if end-last < 2 {
		t.Skip("last record too short")
	}
	writeAt(t, fs, path, end-1, []byte{data[end-1] ^ 0x55})
	_, err := Open(opts)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt (seq %d damaged)", err, next-1)
	}
}

// TestRecycleCrashMidInstall: the machine stops while a retired file is
// being installed (header written, not synced, not renamed): the next Open
// removes the *.tmp file and keeps every record.
func TestRecycleCrashMidInstall(t *testing.T) {
	for _, op := range []string{"sync", "rename", "syncdir"} {
		t.Run(op, func(t *testing.T) {
			fs := NewMemFS()
			var armed atomic.Bool
			var cloned atomic.Pointer[MemFS]
			efs := ErrorFS{FS: fs, Inject: func(o, name string) error {
				if armed.Load() && cloned.Load() == nil && o == op && (op == "syncdir" || strings.Contains(filepath.Base(name), "recycle-")) {
					cloned.CompareAndSwap(nil, fs.CrashClone())
				}
				return nil
			}}
			opts := recycleOpts(t, efs)
			opts.Logger = quietLogger()
			j := mustOpen(t, opts)
			for i := 0; i < 300; i++ {
				appendDet(t, j)
			}
			waitSynced(t, j, j.LastSeq())
			if j.Stats().RecycledSegments == 0 {
				t.Fatal("no segment recycled yet")
			}
			acked := j.LastSeq()
			armed.Store(true)
			for cloned.Load() == nil {
				appendDet(t, j)
				waitSynced(t, j, j.LastSeq())
			}
			j.Close()
			clone := cloned.Load()
			opts.FS = clone
			j2, err := Open(opts)
			if err != nil {
				t.Fatalf("Open after the crash: %v", err)
			}
			if j2.LastSeq() < acked {
				t.Fatalf("recovered up to %d, %d were acknowledged", j2.LastSeq(), acked)
			}
			verifyDet(t, j2, j2.FirstSeq(), j2.LastSeq(), true)
			if err := j2.Close(); err != nil {
				t.Fatal(err)
			}
			if tmp := tmpFiles(t, clone, opts.Dir); len(tmp) != 0 {
				t.Fatalf("left after Open and Close: %v", tmp)
			}
		})
	}
}

// TestRecycleOldJournalOpens: a journal written before recycling (version
// 2 headers, zero-filled files) opens, and its segments are recycled into
// version 3 ones as retention retires them.
func TestRecycleOldJournalOpens(t *testing.T) {
	fs := NewMemFS()
	opts := recycleOpts(t, fs)
	opts.NoRecycle = true
	last := buildJournal(t, opts, 100, 100, 100)
	opts.NoRecycle = false
	j := mustOpen(t, opts)
	first := j.FirstSeq()
	verifyDet(t, j, first, last, true)
	for i := 0; i < 400; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, j.LastSeq())
	if j.Stats().RecycledSegments == 0 {
		t.Fatal("no version 2 segment recycled")
	}
	verifyDet(t, j, j.FirstSeq(), j.LastSeq(), true)
	j.Close()
}

func TestSegHeaderV3RoundTrip(t *testing.T) {
	h := segHeader{first: 77, size: 1 << 20, created: 5, id: record.JournalID{1, 2, 3}, gen: 9}
	b := h.encode()
	if v := binary.LittleEndian.Uint32(b[hdrOffVersion:]); v != segVersionRecycled {
		t.Fatalf("version %d", v)
	}
	got, err := decodeSegHeader(b)
	if err != nil || got != h {
		t.Fatalf("decode: %+v, %v; want %+v", got, err, h)
	}
	h.gen = 0
	if v := binary.LittleEndian.Uint32(h.encode()[hdrOffVersion:]); v != segVersion {
		t.Fatalf("generation 0 encoded as version %d", v)
	}
	// Version 3 with generation 0 is invalid.
	b = h.encode()
	binary.LittleEndian.PutUint32(b[hdrOffVersion:], segVersionRecycled)
	binary.LittleEndian.PutUint32(b[hdrOffCRC:], record.Checksum(b[:hdrOffCRC]))
	if _, err := decodeSegHeader(b); err == nil {
		t.Fatal("version 3 header with generation 0 accepted")
	}
}

func TestPagePadRecycled(t *testing.T) {
	for _, c := range []struct {
		end, size int64
		recycled  bool
		want      int64
	}{
		{4096, 64 << 10, false, 0},
		{4096, 64 << 10, true, 4096},
		{4094, 64 << 10, true, 4098},
		{4000, 64 << 10, true, 96},
		{64<<10 - 2, 64 << 10, true, 2},
		{64 << 10, 64 << 10, true, 0},
		{10000, 10100, false, 0},
		{10000, 10100, true, 100},
	} {
		if got := pagePad(c.end, c.size, c.recycled); got != c.want {
			t.Errorf("pagePad(%d, %d, %v) = %d, want %d", c.end, c.size, c.recycled, got, c.want)
		}
	}
}

func FuzzSegHeader(f *testing.F) {
	f.Add(segHeader{first: 1, size: 1 << 20, id: record.JournalID{1}}.encode())
	f.Add(segHeader{first: 9, size: 1 << 20, id: record.JournalID{7}, gen: 3}.encode())
	f.Add(bytes.Repeat([]byte{0}, segHeaderSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeSegHeader(b)
		if err != nil {
			return
		}
		if h.id.IsZero() {
			return // version 1: encoded as version 2 once upgraded
		}
		if got, err := decodeSegHeader(h.encode()); err != nil || got != h {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", h, got, err)
		}
	})
}

// TestRecycleRealDisk: recycling on the OS file system, through both
// group-commit paths: every record reads back before and after a restart.
func TestRecycleRealDisk(t *testing.T) {
	for _, via := range []string{SyncSyscall, SyncUring} {
		t.Run(via, func(t *testing.T) {
			if via == SyncUring {
				if err := uring.Available(); err != nil {
					t.Skipf("io_uring not available: %v", err)
				}
			}
			opts := Options{Dir: t.TempDir(), SegmentSize: 64 << 10, IndexInterval: 8, SyncVia: via,
				RetentionBytes: 3 * (64 << 10), Logger: testLogger(t)}
			j := mustOpen(t, opts)
			for i := 0; i < 3000; i++ {
				appendDet(t, j)
				if i%37 == 0 {
					waitSynced(t, j, j.LastSeq())
				}
			}
			waitSynced(t, j, j.LastSeq())
			settleRetention(t, j)
			if j.Stats().RecycledSegments == 0 {
				t.Fatal("nothing recycled")
			}
			first, last := j.FirstSeq(), j.LastSeq()
			verifyDet(t, j, first, last, true)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j2 := mustOpen(t, opts)
			defer j2.Close()
			if j2.FirstSeq() != first || j2.LastSeq() != last || j2.Stats().TruncatedBytes != 0 {
				t.Fatalf("reopened: %d..%d, truncated %d; want %d..%d", j2.FirstSeq(), j2.LastSeq(), j2.Stats().TruncatedBytes, first, last)
			}
			verifyDet(t, j2, first, last, true)
		})
	}
}
