package journal

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemhq/tandem/record"
)

// headerID returns the journal id and version in a segment file's header.
func headerID(t testing.TB, fs FS, path string) (record.JournalID, uint32) {
	t.Helper()
	b := readAll(t, fs, path)
	var id record.JournalID
	copy(id[:], b[40:56])
	return id, binary.LittleEndian.Uint32(b[8:])
}

// rewriteHeader rewrites a segment header's version and id bytes [40,56)
// (zeroing [40,60) first) with a valid CRC, as the given release would.
func rewriteHeader(t testing.TB, fs FS, path string, version uint32, id record.JournalID) {
	t.Helper()
	b := readAll(t, fs, path)[:64]
	binary.LittleEndian.PutUint32(b[8:], version)
	clear(b[40:60])
	copy(b[40:], id[:])
	binary.LittleEndian.PutUint32(b[60:], record.Checksum(b[:60]))
	writeAt(t, fs, path, 0, b)
}

func TestJournalIDSurvivesRestart(t *testing.T) {
	for _, real := range []bool{false, true} {
		name := "memfs"
		if real {
			name = "osfs"
		}
		t.Run(name, func(t *testing.T) {
			var fs FS = NewMemFS()
			opts := memOpts(t, fs)
			if real {
				fs = OSFS{}
				opts.FS = fs
				opts.Dir = t.TempDir()
			}
			opts.SegmentSize = 8 << 10
			j := mustOpen(t, opts)
			id := j.ID()
			if id.IsZero() {
				t.Fatal("new journal has a zero id")
			}
			for i := 0; i < 100; i++ { // several segments
				appendDet(t, j)
			}
			waitSynced(t, j, 100)
			if j.ID() != id {
				t.Fatalf("id changed while running: %s, then %s", id, j.ID())
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segFiles(t, fs, opts.Dir)
			if len(segs) < 3 {
				t.Fatalf("only %d segments", len(segs))
			}
			for _, p := range segs {
				if got, v := headerID(t, fs, p); got != id || v != 2 {
					t.Fatalf("%s: header version %d id %s, want version 2 id %s", p, v, got, id)
				}
			}
			if rep, err := Check(opts.Dir, fs); err != nil || rep.ID != id {
				t.Fatalf("Check: id %s, %v; want id %s", rep.ID, err, id)
			}

			j = mustOpen(t, opts)
			if j.ID() != id {
				t.Fatalf("reopened journal has id %s, want %s", j.ID(), id)
			}
			verifyDet(t, j, 1, 100, true)
			j.Close()

			// Wipe the directory: a new journal, a new id.
			for _, p := range segFiles(t, fs, opts.Dir) {
				if err := fs.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			j = mustOpen(t, opts)
			defer j.Close()
			if j.ID().IsZero() || j.ID() == id {
				t.Fatalf("journal in a wiped directory has id %s (old %s)", j.ID(), id)
			}
		})
	}
}

func TestJournalIDDistinct(t *testing.T) {
	seen := map[record.JournalID]bool{}
	for i := 0; i < 20; i++ {
		fs := NewMemFS()
		opts := memOpts(t, fs)
		opts.Logger = quietLogger()
		j := mustOpen(t, opts)
		id := j.ID()
		j.Close()
		if seen[id] {
			t.Fatalf("id %s given twice", id)
		}
		seen[id] = true
	}
}

func TestJournalIDMismatchIsCorruption(t *testing.T) {
	for _, victim := range []int{0, 1, -1} {
		fs := NewMemFS()
		opts := memOpts(t, fs)
		opts.SegmentSize = 8 << 10
		buildJournal(t, opts, 40, 40, 40)
		segs := segFiles(t, fs, opts.Dir)
		if len(segs) < 3 {
			t.Fatalf("only %d segments", len(segs))
		}
		if victim < 0 {
			victim = len(segs) - 1
		}
		rewriteHeader(t, fs, segs[victim], 2, record.JournalID{0xde, 0xad})
		name := filepath.Base(segs[victim])
		_, err := Open(opts)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
			t.Fatalf("Open with %s from another journal: %v; want ErrCorrupt naming it", name, err)
		}
		t.Log(err)
		if _, err := Check(opts.Dir, fs); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Check: %v, want ErrCorrupt", err)
		}
	}
}

func TestJournalIDZeroInVersion2IsCorruption(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	buildJournal(t, opts, 3)
	segs := segFiles(t, fs, opts.Dir)
	rewriteHeader(t, fs, segs[0], 2, record.JournalID{})
	if _, err := Open(opts); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(segs[0])) {
		t.Fatalf("Open: %v; want ErrCorrupt naming %s", err, segs[0])
	}
}

// TestJournalIDUpgradesVersion1 opens journals written by the release before
// journal ids (header version 1): every header is rewritten with a new id.
// A crash half-way through leaves some headers upgraded: the rest adopt
// their id.
func TestJournalIDUpgradesVersion1(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upgraded []int // segments already carrying an id (a crash mid-upgrade)
	}{
		{"all version 1", nil},
		{"crash after the first", []int{0}},
		{"crash after all but the tail", []int{0, 1, 2}},
		{"crash after the tail only", []int{-1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewMemFS()
			opts := memOpts(t, fs)
			opts.SegmentSize = 8 << 10
			last := buildJournal(t, opts, 40, 40, 40, 40)
			segs := segFiles(t, fs, opts.Dir)
			if len(segs) < 4 {
				t.Fatalf("only %d segments", len(segs))
			}
			for _, p := range segs {
				rewriteHeader(t, fs, p, 1, record.JournalID{})
			}
			var partial record.JournalID
			if len(tc.upgraded) > 0 {
				partial = record.JournalID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
				for _, i := range tc.upgraded {
					if i < 0 {
						i = len(segs) - 1
					}
					rewriteHeader(t, fs, segs[i], 2, partial)
				}
			}
			if rep, err := Check(opts.Dir, fs); err != nil || rep.ID != partial {
				t.Fatalf("Check before upgrade: id %s, %v; want %s", rep.ID, err, partial)
			}

			j := mustOpen(t, opts)
			id := j.ID()
			if id.IsZero() || (!partial.IsZero() && id != partial) {
				t.Fatalf("upgraded journal has id %s (partial upgrade to %s)", id, partial)
			}
			verifyDet(t, j, 1, last, true)
			seq := appendDet(t, j)
			waitSynced(t, j, seq)
			j.Close()
			for _, p := range segFiles(t, fs, opts.Dir) {
				if got, v := headerID(t, fs, p); got != id || v != 2 {
					t.Fatalf("%s: header version %d id %s after upgrade, want version 2 id %s", p, v, got, id)
				}
			}
			j = mustOpen(t, opts)
			defer j.Close()
			if j.ID() != id {
				t.Fatalf("id after reopen %s, want %s", j.ID(), id)
			}
			verifyDet(t, j, 1, seq, true)
		})
	}
}

// TestJournalIDUpgradeCrash crashes (MemFS CrashClone) at every write of a
// version-1 upgrade: the journal must open afterwards with every record and
// one id on every segment.
func TestJournalIDUpgradeCrash(t *testing.T) {
	base := NewMemFS()
	opts := memOpts(t, base)
	opts.SegmentSize = 8 << 10
	opts.Logger = quietLogger()
	last := buildJournal(t, opts, 40, 40, 40, 40)
	segs := segFiles(t, base, opts.Dir)
	for _, p := range segs {
		rewriteHeader(t, base, p, 1, record.JournalID{})
	}
	for crashAt := 1; crashAt <= len(segs); crashAt++ {
		fs := base.CrashClone()
		var clone *MemFS
		writes := 0
		efs := ErrorFS{FS: fs, Inject: func(op, name string) error {
			if op == "write" && strings.HasSuffix(name, segSuffix) {
				if writes++; writes == crashAt {
					clone = fs.CrashClone() // the write is issued, not synced
				}
			}
			return nil
		}}
		o := opts
		o.FS = efs
		j := mustOpen(t, o)
		j.Close()
		if clone == nil {
			t.Fatalf("crash point %d: only %d segment writes", crashAt, writes)
		}
		o.FS = clone
		j = mustOpen(t, o)
		if j.ID().IsZero() {
			t.Fatalf("crash point %d: zero id", crashAt)
		}
		verifyDet(t, j, 1, last, true)
		id := j.ID()
		j.Close()
		for _, p := range segFiles(t, clone, opts.Dir) {
			if got, v := headerID(t, clone, p); got != id || v != 2 {
				t.Fatalf("crash point %d: %s: version %d id %s, want 2 %s", crashAt, p, v, got, id)
			}
		}
	}
}
