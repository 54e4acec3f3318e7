package journal

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"sync"
)

// memPageSize is the granularity at which MemFS tracks unsynced writes (and
// at which CrashCloneTorn keeps or drops them).
const memPageSize = 4096

// MemFS is an in-memory FS for tests that models what survives a crash:
// file contents become durable on SyncData, and creates, renames and
// removes become durable on SyncDir of their directory. CrashClone returns
// the state a machine would find after losing power.
//
// Map returns the live contents of a file: like mmap of a regular file,
// writes within the mapped length are visible through it. Growing a mapped
// file is not reflected in the mapping (the journal maps fully
// preallocated files only).
type MemFS struct {
	mu      sync.Mutex
	files   map[string]*memFile // current namespace
	durable map[string]*memFile // namespace as of the last SyncDir of each dir
	dirs    map[string]bool
}

type memFile struct {
	mu     sync.Mutex
	data   []byte
	synced []byte         // contents as of the last SyncData
	dirty  map[int64]bool // pages written since the last SyncData
	mapped bool
}

var _ FS = (*MemFS)(nil)

// NewMemFS returns an empty MemFS.
func NewMemFS() *MemFS {
	return &MemFS{files: map[string]*memFile{}, durable: map[string]*memFile{}, dirs: map[string]bool{}}
}

func clean(name string) string { return filepath.Clean(name) }

func notExist(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
}

// Create implements FS.
func (m *MemFS) Create(name string) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[filepath.Dir(name)] {
		return nil, notExist("create", name)
	}
	f := &memFile{dirty: map[int64]bool{}}
	m.files[name] = f
	return &memHandle{f: f}, nil
}

// Open implements FS.
func (m *MemFS) Open(name string) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[name]
	if !ok {
		return nil, notExist("open", name)
	}
	return &memHandle{f: f}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return notExist("remove", name)
	}
	delete(m.files, name)
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[oldname]
	if !ok {
		return notExist("rename", oldname)
	}
	delete(m.files, oldname)
	m.files[newname] = f
	return nil
}

// List implements FS.
func (m *MemFS) List(dir string) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return nil, notExist("list", dir)
	}
	var names []string
	for name := range m.files {
		if filepath.Dir(name) == dir {
			names = append(names, filepath.Base(name))
		}
	}
	sort.Strings(names)
	return names, nil
}

// MkdirAll implements FS. Directories are durable at once.
func (m *MemFS) MkdirAll(dir string) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := dir; ; d = filepath.Dir(d) {
		m.dirs[d] = true
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// SyncDir implements FS.
func (m *MemFS) SyncDir(dir string) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return notExist("syncdir", dir)
	}
	for name := range m.durable {
		if filepath.Dir(name) == dir {
			delete(m.durable, name)
		}
	}
	for name, f := range m.files {
		if filepath.Dir(name) == dir {
			m.durable[name] = f
		}
	}
	return nil
}

// CrashClone returns a MemFS holding only what was made durable: the
// namespace as of each directory's last SyncDir and each file's contents as
// of its last SyncData. Unsynced writes are lost.
func (m *MemFS) CrashClone() *MemFS { return m.crashClone(nil) }

// CrashCloneTorn is CrashClone, except that each unsynced page written since
// the last SyncData survives with probability 1/2 (decided by rng), which
// models torn writes: the disk wrote some pages of an unfinished batch.
func (m *MemFS) CrashCloneTorn(rng *rand.Rand) *MemFS { return m.crashClone(rng) }

func (m *MemFS) crashClone(rng *rand.Rand) *MemFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := NewMemFS()
	for d := range m.dirs {
		c.dirs[d] = true
	}
	// Iterate in a deterministic order so a seeded rng replays.
	names := make([]string, 0, len(m.durable))
	for name := range m.durable {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		f := m.durable[name]
		f.mu.Lock()
		data := append([]byte(nil), f.synced...)
		if rng != nil {
			pages := make([]int64, 0, len(f.dirty))
			for p := range f.dirty {
				pages = append(pages, p)
			}
			sort.Slice(pages, func(a, b int) bool { return pages[a] < pages[b] })
			for _, p := range pages {
				if rng.IntN(2) == 0 {
					continue
				}
				lo := p * memPageSize
				hi := min(lo+memPageSize, int64(len(f.data)))
				if lo >= hi {
					continue
				}
				if int64(len(data)) < hi {
					data = append(data, make([]byte, hi-int64(len(data)))...)
				}
				copy(data[lo:hi], f.data[lo:hi])
			}
		}
		f.mu.Unlock()
		nf := &memFile{data: data, synced: append([]byte(nil), data...), dirty: map[int64]bool{}}
		c.files[name] = nf
		c.durable[name] = nf
	}
	return c
}

// ReadFile returns a copy of a file's current contents (for tests).
func (m *MemFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	f, ok := m.files[clean(name)]
	m.mu.Unlock()
	if !ok {
		return nil, notExist("read", name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.data...), nil
}

type memHandle struct {
	f      *memFile
	closed bool
}

var errMemClosed = errors.New("memfs: file closed")

func (h *memHandle) WriteAt(p []byte, off int64) (int, error) {
	if h.closed {
		return 0, errMemClosed
	}
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	end := off + int64(len(p))
	if end > int64(len(f.data)) {
		if f.mapped {
			return 0, errors.New("memfs: growing a mapped file")
		}
		if end <= int64(cap(f.data)) {
			f.data = f.data[:end]
		} else {
			nd := make([]byte, end, max(end, 2*int64(cap(f.data))))
			copy(nd, f.data)
			f.data = nd
		}
	}
	copy(f.data[off:], p)
	for pg := off / memPageSize; pg*memPageSize < end; pg++ {
		f.dirty[pg] = true
	}
	return len(p), nil
}

func (h *memHandle) ReadAt(p []byte, off int64) (int, error) {
	if h.closed {
		return 0, errMemClosed
	}
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *memHandle) SyncData() error {
	if h.closed {
		return errMemClosed
	}
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.synced) != len(f.data) {
		ns := make([]byte, len(f.data))
		copy(ns, f.synced)
		f.synced = ns
	}
	for pg := range f.dirty {
		lo := pg * memPageSize
		hi := min(lo+memPageSize, int64(len(f.data)))
		if lo < hi {
			copy(f.synced[lo:hi], f.data[lo:hi])
		}
	}
	clear(f.dirty)
	return nil
}

func (h *memHandle) Truncate(size int64) error {
	if h.closed {
		return errMemClosed
	}
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mapped {
		return errors.New("memfs: truncating a mapped file")
	}
	if size <= int64(len(f.data)) {
		f.data = f.data[:size:size]
	} else {
		f.data = append(f.data, make([]byte, size-int64(len(f.data)))...)
	}
	// The new size is durable only after SyncData.
	for pg := range f.dirty {
		if pg*memPageSize >= size {
			delete(f.dirty, pg)
		}
	}
	return nil
}

func (h *memHandle) Size() (int64, error) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	return int64(len(h.f.data)), nil
}

func (h *memHandle) Map() ([]byte, error) {
	f := h.f
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mapped = true
	return f.data[:len(f.data):len(f.data)], nil
}

func (h *memHandle) Unmap() error {
	f := h.f
	f.mu.Lock()
	f.mapped = false
	f.mu.Unlock()
	return nil
}

func (h *memHandle) Close() error {
	if h.closed {
		return errMemClosed
	}
	h.closed = true
	return nil
}
