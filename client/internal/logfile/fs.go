package logfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// File is one open store file. Writes go through WriteAt at offsets the
// caller tracks (no O_APPEND), so a failed append can be cut off with
// Truncate before the next one.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes written data durable (fdatasync for OSFS).
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
}

// FS is the file-system seam of the client stores: the real OS (OSFS), a
// small in-memory one (MemFS), or a simulator's. Names are full paths.
type FS interface {
	// Open opens an existing file read-write; a missing file is an error
	// matching os.ErrNotExist.
	Open(name string) (File, error)
	// Create creates or truncates a file, opened read-write, mode 0600.
	Create(name string) (File, error)
	Rename(oldname, newname string) error
	Remove(name string) error
	// SyncDir makes creates, renames and removes in dir durable.
	SyncDir(dir string) error
}

// OSFS is the real file system.
type OSFS struct{}

var _ FS = OSFS{}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// Open implements FS.
func (OSFS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Create implements FS.
func (OSFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Rename implements FS.
func (OSFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove implements FS.
func (OSFS) Remove(name string) error { return os.Remove(name) }

// SyncDir implements FS.
func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if e := d.Close(); err == nil {
		err = e
	}
	return err
}

// MemFS is a small in-memory FS for tests: every write is durable at once
// (it does not simulate crashes). Fail, when set, is asked before every
// write, sync and truncate ("write", "sync", "truncate" with the file's
// name) and a non-nil error is returned instead of doing it (a failing
// write writes the first half of its bytes first: a short write).
type MemFS struct {
	mu    sync.Mutex
	files map[string]*memData
	Fail  func(op, name string) error
}

type memData struct{ b []byte }

// NewMemFS returns an empty MemFS.
func NewMemFS() *MemFS { return &MemFS{files: map[string]*memData{}} }

var _ FS = (*MemFS)(nil)

type memFile struct {
	fs   *MemFS
	name string
	d    *memData
}

func (m *MemFS) fail(op, name string) error {
	if m.Fail != nil {
		return m.Fail(op, name)
	}
	return nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.files[name]
	if !ok {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	return &memFile{fs: m, name: name, d: d}, nil
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	d := &memData{}
	m.files[name] = d
	return &memFile{fs: m, name: name, d: d}, nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.files[oldname]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldname, Err: os.ErrNotExist}
	}
	delete(m.files, oldname)
	m.files[newname] = d
	return nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(m.files, name)
	return nil
}

// SyncDir implements FS.
func (m *MemFS) SyncDir(string) error { return nil }

// Names lists the files, sorted.
func (m *MemFS) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for n := range m.files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Bytes returns a copy of a file's contents (nil if missing).
func (m *MemFS) Bytes(name string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.files[filepath.Clean(name)]
	if !ok {
		return nil
	}
	return append([]byte(nil), d.b...)
}

// SetBytes replaces (or creates) a file's contents.
func (m *MemFS) SetBytes(name string, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[filepath.Clean(name)] = &memData{b: append([]byte(nil), b...)}
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("memfs: negative offset")
	}
	if off >= int64(len(f.d.b)) {
		return 0, io.EOF
	}
	n := copy(p, f.d.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.fs.fail("write", f.name); err != nil {
		n, _ := f.write(p[:len(p)/2], off) // a short write, then the error
		return n, err
	}
	return f.write(p, off)
}

func (f *memFile) write(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.d.b)) {
		f.d.b = append(f.d.b, make([]byte, end-int64(len(f.d.b)))...)
	}
	return copy(f.d.b[off:], p), nil
}

func (f *memFile) Sync() error { return f.fs.fail("sync", f.name) }

func (f *memFile) Truncate(size int64) error {
	if err := f.fs.fail("truncate", f.name); err != nil {
		return err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if size < int64(len(f.d.b)) {
		f.d.b = f.d.b[:size]
	} else {
		f.d.b = append(f.d.b, make([]byte, size-int64(len(f.d.b)))...)
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return int64(len(f.d.b)), nil
}

func (f *memFile) Close() error { return nil }

var errNotExist = os.ErrNotExist
