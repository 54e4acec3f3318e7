package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/client/internal/logfile"
	"github.com/tandemhq/tandem/record"
)

// recordOffsets returns the offsets of the records of a clean store file.
func recordOffsets(t testing.TB, b []byte) []int64 {
	t.Helper()
	var offs []int64
	for off := 0; off < len(b); {
		offs = append(offs, int64(off))
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n < logfile.HeaderSize || off+n > len(b) {
			t.Fatalf("bad test file at %d", off)
		}
		off += n
	}
	return offs
}

// writePubStore writes messages 1..n to a fresh store at path, one record
// per Sync, and returns the file's bytes.
func writePubStore(t testing.TB, path string, n int) []byte {
	t.Helper()
	s, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if err := s.Store(uint64(i), []byte("t"), []byte("message "+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	s.log.Close() // as a killed process leaves it
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pubSeqs(t testing.TB, s *FilePublishStore) []uint64 {
	var seqs []uint64
	s.Replay(func(seq uint64, topic, payload []byte) error {
		if string(topic) != "t" || string(payload) != "message "+strconv.FormatUint(seq, 10) {
			t.Fatalf("message %d: topic %q payload %q", seq, topic, payload)
		}
		seqs = append(seqs, seq)
		return nil
	})
	return seqs
}

func seqsUpTo(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(i + 1)
	}
	return out
}

// Issue 11 item 3's report: a flipped bit in record 3 of 10 must not
// silently drop the 8 messages after it.
func TestFilePublishStoreCorruptRecordFailsOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pub.store")
	b := writePubStore(t, path, 10)
	offs := recordOffsets(t, b)
	// Records: header, persisted-up-to, then messages 1..10.
	third := offs[len(offs)-10+2]
	b[third+logfile.HeaderSize+12] ^= 0x10 // a bit of message 3's payload
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
	if !errors.Is(err, ErrStoreCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", third)) {
		t.Fatalf("open of a corrupt store: %v; want ErrStoreCorrupt naming %s and offset %d", err, path, third)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
		t.Fatal("a failed open changed the file")
	}

	rep, err := RepairFilePublishStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Dropped) != 1 || rep.Dropped[0].Offset != third || rep.Dropped[0].Bytes != offs[len(offs)-10+3]-third ||
		rep.Dropped[0].After != 2 || rep.Dropped[0].Before != 4 || rep.Messages != 9 || rep.Backup != path+".corrupt" {
		t.Fatalf("repair report %+v", rep)
	}
	if !strings.Contains(rep.String(), fmt.Sprintf("offset %d", third)) {
		t.Fatalf("report %q does not name the offset", rep)
	}
	if orig, _ := os.ReadFile(path + ".corrupt"); !bytes.Equal(orig, b) {
		t.Fatal("repair did not keep the original")
	}
	s, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := pubSeqs(t, s); !slices.Equal(got, []uint64{1, 2, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("after repair: %v", got)
	}
	if rep, err := RepairFilePublishStore(path); err != nil || !rep.Clean() {
		t.Fatalf("second repair: %+v, %v", rep, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("store file mode %v, want 0600", st.Mode().Perm())
	}
}

// A cut-off last record is a torn tail: dropped and reported.
func TestFilePublishStoreTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pub.store")
	b := writePubStore(t, path, 10)
	offs := recordOffsets(t, b)
	last := offs[len(offs)-1]
	cut := b[:last+5]
	os.WriteFile(path, cut, 0o600)
	s, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rerr := s.Recovery().Err()
	if !errors.Is(rerr, ErrTornTail) || !strings.Contains(rerr.Error(), fmt.Sprintf("5 bytes at offset %d", last)) {
		t.Fatalf("recovery %v", rerr)
	}
	if got := pubSeqs(t, s); !slices.Equal(got, seqsUpTo(9)) {
		t.Fatalf("after a torn tail: %v", got)
	}
}

// A corrupt length must not make the loader allocate it.
func TestFileStoreHugeLength(t *testing.T) {
	for _, kind := range []string{"pub", "bookmarks"} {
		path := filepath.Join(t.TempDir(), kind)
		var b []byte
		if kind == "pub" {
			b = writePubStore(t, path, 3)
		} else {
			b = writeBookmarkStore(t, path, 3)
		}
		offs := recordOffsets(t, b)
		for _, at := range []int64{offs[len(offs)-1], offs[2]} { // the tail, then the middle
			c := slices.Clone(b)
			binary.LittleEndian.PutUint32(c[at:], 1<<30)
			os.WriteFile(path, c, 0o600)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			var err error
			var rec StoreRecovery
			if kind == "pub" {
				var s *FilePublishStore
				if s, err = OpenFilePublishStore(path, SyncNone, StoreLimits{}); err == nil {
					rec = s.Recovery()
					s.Close()
				}
			} else {
				var s *FileBookmarkStore
				if s, err = OpenFileBookmarkStore(path, SyncNone); err == nil {
					rec = s.Recovery()
					s.Close()
				}
			}
			runtime.ReadMemStats(&ms1)
			if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 16<<20 {
				t.Fatalf("%s: open allocated %d bytes for a corrupt length", kind, d)
			}
			if at == offs[len(offs)-1] {
				if err != nil || rec.Torn.Offset != at {
					t.Fatalf("%s: huge length in the last record: %v, %+v", kind, err, rec)
				}
			} else if !errors.Is(err, ErrStoreCorrupt) {
				t.Fatalf("%s: huge length in the middle: %v", kind, err)
			}
		}
	}
}

// writeBookmarkStore writes n flushes of progress for sub "s" to path and
// returns the file's bytes.
func writeBookmarkStore(t testing.TB, path string, n int) []byte {
	t.Helper()
	s, err := OpenFileBookmarkStore(path, SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	s.SetPosition("s", nil)
	for i := 1; i <= n; i++ {
		// Out of order, so ranges are exercised: 2, 1, 4, 3, ...
		q := uint64(i + 1)
		if i%2 == 0 {
			q = uint64(i - 1)
		}
		s.Discard(&Message{SubName: "s", Origin: 7, OriginSeq: q, Bookmark: record.Bookmark{Publisher: 3, PubSeq: q}})
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	s.log.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bmState is a comparable view of a bookmark store's progress.
func bmState(b *FileBookmarkStore) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sb strings.Builder
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range b.subs {
			if !yield(n) {
				return
			}
		}
	}) {
		p := b.subs[name]
		fmt.Fprintf(&sb, "%s:", name)
		for _, o := range p.origins {
			fmt.Fprintf(&sb, " o%d=%d%v", o.id, o.set.Floor(), o.set.Ranges())
		}
		for _, id := range slices.Sorted(func(yield func(uint64) bool) {
			for id := range p.pubs {
				if !yield(id) {
					return
				}
			}
		}) {
			fmt.Fprintf(&sb, " p%d=%d%v", id, p.pubs[id].Floor(), p.pubs[id].Ranges())
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// TestFileStoresCorruptedSeeded damages store files at random (bit flips
// at random offsets, truncations, huge lengths) and opens them: Open never
// panics and never drops a record silently. Either it fails naming the
// file and the offset, or everything written is there, or what is missing
// is exactly the reported torn tail.
func TestFileStoresCorruptedSeeded(t *testing.T) {
	seed := testSeed(t)
	rng := newRand(seed)
	fsys := logfile.NewMemFS()
	dir := t.TempDir()
	pubClean := writePubStore(t, filepath.Join(dir, "p"), 20)
	bmClean := writeBookmarkStore(t, filepath.Join(dir, "b"), 20)
	rounds := envInt("TANDEM_STORE_ROUNDS", 400)
	for round := 0; round < rounds; round++ {
		for _, kind := range []string{"pub", "bookmarks"} {
			clean := pubClean
			if kind == "bookmarks" {
				clean = bmClean
			}
			offs := recordOffsets(t, clean)
			b := slices.Clone(clean)
			what := ""
			// A cut at a record boundary leaves a valid shorter file (as a
			// crash between two appends does): limit is what the test can
			// expect back.
			limit := int64(len(b))
			switch rng.IntN(3) {
			case 0:
				for range 1 + rng.IntN(3) {
					i := rng.IntN(len(b))
					bit := byte(1) << rng.IntN(8)
					b[i] ^= bit
					what += fmt.Sprintf("flip byte %d bit %#x; ", i, bit)
				}
			case 1:
				n := rng.IntN(len(b))
				b = b[:n]
				limit = int64(n)
				what = fmt.Sprintf("truncate to %d", n)
			case 2:
				at := offs[rng.IntN(len(offs))]
				l := uint32(1<<20 + rng.IntN(1<<31))
				binary.LittleEndian.PutUint32(b[at:], l)
				what = fmt.Sprintf("length %d at %d", l, at)
			}
			path := fmt.Sprintf("/%s-%d", kind, round)
			fsys.SetBytes(path, b)
			// The expected content if the damage is a torn tail at T: the
			// clean records that end at or before T.
			expectUpTo := func(torn int64) []byte {
				end := int64(0)
				for _, o := range append(offs[1:], int64(len(clean))) {
					if o <= torn {
						end = o
					}
				}
				return clean[:end]
			}
			ctx := fmt.Sprintf("seed %d round %d %s: %s", seed, round, kind, what)
			if kind == "pub" {
				s, err := OpenFilePublishStore(path, SyncNone, StoreLimits{}, WithStoreFS(fsys))
				if err != nil {
					checkCorruptErr(t, ctx, err, path)
					continue
				}
				got := pubSeqs(t, s)
				s.Close()
				want := seqsUpTo(20)
				if torn := s.Recovery().Torn; torn.Bytes > 0 || limit < int64(len(clean)) {
					upTo := limit
					if torn.Bytes > 0 {
						upTo = min(upTo, torn.Offset)
					}
					fsys.SetBytes("/ref", expectUpTo(upTo))
					r, err := OpenFilePublishStore("/ref", SyncNone, StoreLimits{}, WithStoreFS(fsys))
					if err != nil {
						t.Fatalf("%s: reference: %v", ctx, err)
					}
					want = pubSeqs(t, r)
					r.Close()
					if torn.Bytes > 0 && torn.Offset+torn.Bytes != int64(len(b)) {
						t.Fatalf("%s: torn tail %+v does not reach the end (%d)", ctx, torn, len(b))
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s: store holds %v, want %v (recovery %+v)", ctx, got, want, s.Recovery())
				}
			} else {
				s, err := OpenFileBookmarkStore(path, SyncNone, WithStoreFS(fsys))
				if err != nil {
					checkCorruptErr(t, ctx, err, path)
					continue
				}
				got := bmState(s)
				s.Close()
				upTo := limit
				if torn := s.Recovery().Torn; torn.Bytes > 0 {
					upTo = min(upTo, torn.Offset)
					if torn.Offset+torn.Bytes != int64(len(b)) {
						t.Fatalf("%s: torn tail %+v does not reach the end (%d)", ctx, torn, len(b))
					}
				}
				ref := expectUpTo(upTo)
				fsys.SetBytes("/ref", ref)
				r, err := OpenFileBookmarkStore("/ref", SyncNone, WithStoreFS(fsys))
				if err != nil {
					t.Fatalf("%s: reference: %v", ctx, err)
				}
				want := bmState(r)
				r.Close()
				if got != want {
					t.Fatalf("%s: store holds\n%s want\n%s(recovery %+v)", ctx, got, want, s.Recovery())
				}
			}
		}
	}
}

func checkCorruptErr(t *testing.T, ctx string, err error, path string) {
	t.Helper()
	if !errors.Is(err, ErrStoreCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("%s: open failed with %v; want ErrStoreCorrupt naming %s and an offset", ctx, err, path)
	}
}

func TestPublishStoreRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pub.store")
	fs, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { fs.Close() }()
	for _, s := range []PublishStore{NewMemoryPublishStore(StoreLimits{}), fs} {
		for i := uint64(1); i <= 10; i++ {
			s.Store(i, []byte("t"), []byte("message "+strconv.FormatUint(i, 10)))
		}
		s.Remove(4)
		s.Remove(7)
		if err := s.Remove(99); err != nil { // not held: no error
			t.Fatal(err)
		}
		s.Remove(4) // twice: no effect
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		var got []uint64
		s.Replay(func(seq uint64, _, _ []byte) error { got = append(got, seq); return nil })
		if want := []uint64{1, 2, 3, 5, 6, 8, 9, 10}; !slices.Equal(got, want) || s.UnpersistedCount() != 8 {
			t.Fatalf("%T after Remove(4, 7): %v (count %d)", s, got, s.UnpersistedCount())
		}
		s.Discard(5)
		s.Remove(10)
		if s.UnpersistedCount() != 3 {
			t.Fatalf("%T: count %d after Discard(5), Remove(10), want 3 (6, 8, 9)", s, s.UnpersistedCount())
		}
		s.Remove(6)
		s.Remove(8)
		s.Remove(9)
		if s.UnpersistedCount() != 0 {
			t.Fatalf("%T: count %d, want 0", s, s.UnpersistedCount())
		}
		if err := s.Flush(ctxT(t)); err != nil {
			t.Fatalf("%T: Flush with everything removed: %v", s, err)
		}
		s.Store(11, []byte("t"), []byte("message 11"))
		s.Store(12, []byte("t"), []byte("message 12"))
		s.Remove(11)
	}
	// The file store after reopening (killed: no Close) and after a rewrite.
	fs.Sync()
	fs.log.Close()
	for range 2 {
		r, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
		if err != nil {
			t.Fatal(err)
		}
		if got := pubSeqs(t, r); !slices.Equal(got, []uint64{12}) || r.LastSeq() != 12 {
			t.Fatalf("reopened: %v, last %d", got, r.LastSeq())
		}
		r.Close()
	}
	fs, _ = OpenFilePublishStore(path, SyncBatch, StoreLimits{})
}

// A Flush that fails keeps its progress dirty: the next one writes it.
func TestFileBookmarkStoreFlushFailureRetried(t *testing.T) {
	fsys := logfile.NewMemFS()
	s, err := OpenFileBookmarkStore("/b", SyncBatch, WithStoreFS(fsys))
	if err != nil {
		t.Fatal(err)
	}
	s.SetPosition("s", nil)
	m := &Message{SubName: "s", Origin: 7, OriginSeq: 1, Bookmark: record.Bookmark{Publisher: 3, PubSeq: 1}}
	s.Discard(m)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	m.OriginSeq, m.Bookmark.PubSeq = 2, 2
	s.Discard(m)
	boom := errors.New("disk full")
	for _, op := range []string{"write", "sync"} {
		fsys.Fail = func(o, _ string) error {
			if o == op {
				return boom
			}
			return nil
		}
		if err := s.Flush(); !errors.Is(err, boom) {
			t.Fatalf("flush with %s failing: %v", op, err)
		}
	}
	fsys.Fail = nil
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenFileBookmarkStore("/b", SyncBatch, WithStoreFS(fsys))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if e, _ := r.MostRecent("s"); len(e) != 2 || e[0].Seq != 2 || e[1].Seq != 2 {
		t.Fatalf("after a failed flush and a good one: %+v, want both at 2", e)
	}
	if names := fsys.Names(); !slices.Equal(names, []string{"/b"}) {
		t.Fatalf("files left: %v", names)
	}
}

// A torn tail dropped on open reaches OnError through the HA client.
func TestHAReportsTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pub.store")
	b := writePubStore(t, path, 3)
	os.WriteFile(path, b[:len(b)-4], 0o600)
	ps, err := OpenFilePublishStore(path, SyncBatch, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	errs := make(chan error, 16)
	cfg := haConfig("torn", "127.0.0.1:1")
	cfg.PublishStore = ps
	cfg.OnError = func(err error) { errs <- err }
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	select {
	case err := <-errs:
		if !errors.Is(err, ErrTornTail) || !strings.Contains(err.Error(), path) {
			t.Fatalf("OnError got %v, want the torn tail of %s", err, path)
		}
	case <-ctxT(t).Done():
		t.Fatal("no torn-tail report")
	}
}

// Files that are not stores of this version are refused, never read as
// empty: the earlier high-water bookmark format, and one store's file
// opened as the other.
func TestFileStoresRefuseForeignFiles(t *testing.T) {
	dir := t.TempDir()
	// The earlier format: [len u16][crc32c u32][kind][subLen u16][sub][id u64][seq u64].
	var old []byte
	for _, r := range []struct {
		kind    byte
		id, seq uint64
	}{{'R', 0, 0}, {'O', 7, 11}, {'P', 3, 6}} {
		body := []byte{r.kind}
		body = binary.LittleEndian.AppendUint16(body, 1)
		body = append(body, 'x')
		body = binary.LittleEndian.AppendUint64(body, r.id)
		body = binary.LittleEndian.AppendUint64(body, r.seq)
		old = binary.LittleEndian.AppendUint16(old, uint16(6+len(body)))
		old = binary.LittleEndian.AppendUint32(old, crc32c(body))
		old = append(old, body...)
	}
	oldPath := filepath.Join(dir, "old.bookmarks")
	os.WriteFile(oldPath, old, 0o600)
	if _, err := OpenFileBookmarkStore(oldPath, SyncNone); !errors.Is(err, ErrStoreCorrupt) || !strings.Contains(err.Error(), oldPath) {
		t.Fatalf("old-format bookmark file: %v", err)
	}
	if b, _ := os.ReadFile(oldPath); !bytes.Equal(b, old) {
		t.Fatal("old-format file changed")
	}
	pubPath, bmPath := filepath.Join(dir, "p"), filepath.Join(dir, "b")
	writePubStore(t, pubPath, 2)
	writeBookmarkStore(t, bmPath, 2)
	if _, err := OpenFileBookmarkStore(pubPath, SyncNone); !errors.Is(err, ErrStoreCorrupt) {
		t.Fatalf("publish store opened as a bookmark store: %v", err)
	}
	if _, err := OpenFilePublishStore(bmPath, SyncNone, StoreLimits{}); !errors.Is(err, ErrStoreCorrupt) {
		t.Fatalf("bookmark store opened as a publish store: %v", err)
	}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
