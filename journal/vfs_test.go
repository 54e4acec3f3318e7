package journal

import (
	"os"
	"path/filepath"
	"testing"
)

// CreateZeroed must produce exactly size zero bytes, with O_DIRECT (a disk
// file system) and without (tmpfs refuses O_DIRECT), aligned or not.
func TestOSFSCreateZeroed(t *testing.T) {
	dirs := []string{t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "journal-test")
		if err == nil {
			defer os.RemoveAll(shm)
			dirs = append(dirs, shm)
		}
	}
	for _, dir := range dirs {
		for _, size := range []int64{4096, 1<<20 + 100, 3 << 20} {
			name := filepath.Join(dir, "z.tmp")
			f, err := OSFS{}.CreateZeroed(name, size, nil)
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			got, _ := f.Size()
			b := make([]byte, got)
			if err := readFull(f, b, 0); err != nil {
				t.Fatal(err)
			}
			if got != size || nonZeroEnd(b, 0) != 0 {
				t.Fatalf("%s: size %d: got %d bytes, non-zero end %d", dir, size, got, nonZeroEnd(b, 0))
			}
			f.Close()
			os.Remove(name)
		}
	}
}
