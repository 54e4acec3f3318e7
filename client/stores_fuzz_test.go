package client

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tandemhq/tandem/client/internal/logfile"
)

// FuzzFilePublishStoreOpen: any file content either fails Open with
// ErrStoreCorrupt, or opens (a torn tail reaching the end of the file at
// most), and the file Open rewrote holds the same messages.
func FuzzFilePublishStoreOpen(f *testing.F) {
	skipOtherBackends(f)
	dir := f.TempDir()
	clean := writePubStore(f, filepath.Join(dir, "p"), 4)
	f.Add(clean)
	f.Add(clean[:len(clean)-3])
	f.Add([]byte{})
	c := slices.Clone(clean)
	c[len(c)/2] ^= 1
	f.Add(c)
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys := logfile.NewMemFS()
		fsys.SetBytes("/p", b)
		s, err := OpenFilePublishStore("/p", SyncNone, StoreLimits{}, WithStoreFS(fsys))
		if err != nil {
			if !errors.Is(err, ErrStoreCorrupt) {
				t.Fatalf("open failed with %v, not ErrStoreCorrupt", err)
			}
			return
		}
		if torn := s.Recovery().Torn; torn.Bytes > 0 && torn.Offset+torn.Bytes != int64(len(b)) {
			t.Fatalf("torn tail %+v does not end the %d-byte file", torn, len(b))
		}
		type msg struct {
			seq  uint64
			data string
		}
		var got []msg
		s.Replay(func(seq uint64, topic, payload []byte) error {
			got = append(got, msg{seq, string(topic) + "\x00" + string(payload)})
			return nil
		})
		last := s.LastSeq()
		s.Close()
		r, err := OpenFilePublishStore("/p", SyncNone, StoreLimits{}, WithStoreFS(fsys))
		if err != nil {
			t.Fatalf("reopening the rewritten file: %v", err)
		}
		defer r.Close()
		var again []msg
		r.Replay(func(seq uint64, topic, payload []byte) error {
			again = append(again, msg{seq, string(topic) + "\x00" + string(payload)})
			return nil
		})
		if !slices.Equal(got, again) || r.LastSeq() < last || r.Recovery().Torn.Bytes != 0 {
			t.Fatalf("rewritten store differs: %d messages then %d, last %d then %d", len(got), len(again), last, r.LastSeq())
		}
	})
}

// FuzzFileBookmarkStoreOpen: as FuzzFilePublishStoreOpen, for progress.
func FuzzFileBookmarkStoreOpen(f *testing.F) {
	skipOtherBackends(f)
	dir := f.TempDir()
	clean := writeBookmarkStore(f, filepath.Join(dir, "b"), 5)
	f.Add(clean)
	f.Add(clean[:len(clean)-3])
	f.Add([]byte{})
	c := slices.Clone(clean)
	c[len(c)/2] ^= 1
	f.Add(c)
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys := logfile.NewMemFS()
		fsys.SetBytes("/b", b)
		s, err := OpenFileBookmarkStore("/b", SyncNone, WithStoreFS(fsys))
		if err != nil {
			if !errors.Is(err, ErrStoreCorrupt) {
				t.Fatalf("open failed with %v, not ErrStoreCorrupt", err)
			}
			return
		}
		if torn := s.Recovery().Torn; torn.Bytes > 0 && torn.Offset+torn.Bytes != int64(len(b)) {
			t.Fatalf("torn tail %+v does not end the %d-byte file", torn, len(b))
		}
		for _, p := range s.subs {
			if p.nRanges > MaxProgressRanges {
				t.Fatalf("%d ranges loaded, bound %d", p.nRanges, MaxProgressRanges)
			}
		}
		got := bmState(s)
		s.Close()
		r, err := OpenFileBookmarkStore("/b", SyncNone, WithStoreFS(fsys))
		if err != nil {
			t.Fatalf("reopening the rewritten file: %v", err)
		}
		defer r.Close()
		if again := bmState(r); again != got {
			t.Fatalf("rewritten store differs:\n%s\nthen\n%s", got, again)
		}
	})
}

// skipOtherBackends: TestMain runs the package once per engine backend; the
// stores do not use one, so their fuzz targets run on the first pass only.
func skipOtherBackends(f *testing.F) {
	if testEngine != "epoll" {
		f.Skip("store loaders do not depend on the engine backend: fuzzed on the epoll pass")
	}
}
