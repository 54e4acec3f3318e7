package journal

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Issue 13: the data directory is created 0700 and journal segments 0600,
// whatever the umask lets through (messages are nobody else's to read).
func TestJournalFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	j, err := Open(Options{Dir: dir, SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o700 {
		t.Errorf("data directory mode %o, want 700", m)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) == 0 {
		t.Fatal("no files in the journal directory")
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue // preallocation may rename a file meanwhile
		}
		if m := info.Mode().Perm(); !info.IsDir() && m != 0o600 {
			t.Errorf("%s: mode %o, want 600", e.Name(), m)
		}
	}
}
