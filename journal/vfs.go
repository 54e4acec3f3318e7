package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// File is the journal's view of one open file. Implementations must make
// WriteAt visible through a mapping returned by Map (buffered writes and a
// shared page cache do this on Linux; never mix O_DIRECT with a mapping).
type File interface {
	WriteAt(p []byte, off int64) (int, error)
	ReadAt(p []byte, off int64) (int, error)
	// SyncData makes written data durable (fdatasync). After it fails the
	// file's state is unknown: the journal never retries it.
	SyncData() error
	Truncate(size int64) error
	Size() (int64, error)
	// Map returns a read-only mapping of the whole file (its size at the
	// time of the call). The slice stays valid until Unmap.
	Map() ([]byte, error)
	Unmap() error
	Close() error
}

// FS is the file-system seam: the real OS (OSFS), memory (MemFS) or an
// error-injecting wrapper (ErrorFS). Names are full paths.
type FS interface {
	// Create creates or truncates a file, opened read-write.
	Create(name string) (File, error)
	// Open opens an existing file read-write.
	Open(name string) (File, error)
	Remove(name string) error
	Rename(oldname, newname string) error
	// List returns the base names of the entries in dir.
	List(dir string) ([]string, error)
	MkdirAll(dir string) error
	// SyncDir makes creates, renames and removes in dir durable.
	SyncDir(dir string) error
}

// OSFS is the real file system.
type OSFS struct{}

var _ FS = OSFS{}

// Create implements FS.
func (OSFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return newOSFile(f), nil
}

// Open implements FS.
func (OSFS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return newOSFile(f), nil
}

// Remove implements FS.
func (OSFS) Remove(name string) error { return os.Remove(name) }

// Rename implements FS.
func (OSFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// List implements FS.
func (OSFS) List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

// MkdirAll implements FS.
func (OSFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

// SyncDir implements FS.
func (OSFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

type osFile struct {
	f  *os.File
	fd int // cached: os.File.Fd is not free and flips blocking mode
	m  mmap.MMap
}

func newOSFile(f *os.File) *osFile { return &osFile{f: f, fd: int(f.Fd())} }

// fdFile is implemented by Files backed by an OS file descriptor (OSFS's
// osFile; not MemFS or ErrorFS files). With Options.SyncVia "uring" the
// flusher writes and syncs such a tail segment through its io_uring ring;
// any other File keeps WriteAt and SyncData. Fd must stay valid until
// Close; Name is the path the file was opened with, which the errors of
// the ring path name exactly as os.File's do.
type fdFile interface {
	File
	Fd() uintptr
	Name() string
}

var _ fdFile = (*osFile)(nil)

// Fd returns the cached descriptor (never os.File.Fd, which would make
// the descriptor blocking; harmless for a regular file, but not free).
func (f *osFile) Fd() uintptr  { return uintptr(f.fd) }
func (f *osFile) Name() string { return f.f.Name() }

func (f *osFile) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }
func (f *osFile) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f *osFile) Truncate(size int64) error                { return f.f.Truncate(size) }

func (f *osFile) SyncData() error {
	for {
		err := unix.Fdatasync(f.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.f.Name(), Err: err}
		}
		return nil
	}
}

func (f *osFile) Size() (int64, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f *osFile) Map() ([]byte, error) {
	if f.m != nil {
		return nil, errors.New("journal: file already mapped")
	}
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	m, err := mmap.MapRegion(f.f, int(size), mmap.RDONLY, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", f.f.Name(), err)
	}
	f.m = m
	return m, nil
}

func (f *osFile) Unmap() error {
	if f.m == nil {
		return nil
	}
	err := f.m.Unmap()
	f.m = nil
	return err
}

func (f *osFile) Close() error {
	err := f.Unmap()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readFull reads len(p) bytes at off, treating a short read as an error.
func readFull(f File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func join(dir, name string) string { return filepath.Join(dir, name) }

// zeroCreator is implemented by file systems that can create a zero-filled,
// synced file more cheaply than WriteAt of zeros through the page cache.
type zeroCreator interface {
	CreateZeroed(name string, size int64, pace func(done int64)) (File, error)
}

// CreateZeroed creates name with size zero bytes, written (not fallocated:
// unwritten extents make each later fdatasync slower) with O_DIRECT so the
// zeros bypass the page cache, and synced. The O_DIRECT descriptor is
// closed before the file is reopened for buffered I/O and mapped, so
// O_DIRECT never mixes with a mapping.
//
// pace, if not nil, is called after each chunk with the bytes written so
// far; it may sleep to keep zeroing from starving group commits of disk
// bandwidth.
func (OSFS) CreateZeroed(name string, size int64, pace func(done int64)) (File, error) {
	if err := writeZerosDirect(name, size, pace); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	of := newOSFile(f)
	// Whatever O_DIRECT did not write (an unaligned tail, or all of it where
	// O_DIRECT is unsupported, e.g. tmpfs) is written buffered; then sync.
	written, err := of.Size()
	if err != nil {
		of.Close()
		return nil, err
	}
	if written < size {
		zeros := make([]byte, min(size-written, 1<<20))
		for off := written; off < size; {
			n := min(int64(len(zeros)), size-off)
			if _, err := of.WriteAt(zeros[:n], off); err != nil {
				of.Close()
				return nil, err
			}
			off += n
		}
	}
	if err := of.SyncData(); err != nil {
		of.Close()
		return nil, err
	}
	return of, nil
}

// writeZerosDirect creates (truncates) name and writes as much of size
// zero bytes as it can with O_DIRECT, in whole 4 KiB blocks. It returns nil
// without writing where O_DIRECT is unsupported.
func writeZerosDirect(name string, size int64, pace func(done int64)) error {
	fd, err := unix.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err == unix.EINVAL {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		return f.Close()
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	// Small chunks: each one holds the device queue for less time, so a
	// group commit's fdatasync waits behind at most one of them.
	const chunk = 256 << 10
	buf, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ, unix.MAP_ANON|unix.MAP_PRIVATE) // page-aligned zeros
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for off := int64(0); size-off >= 4096; {
		n := int(min(int64(chunk), size-off) &^ 4095)
		w, err := unix.Pwrite(fd, buf[:n], off)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EINVAL && off == 0 {
			return nil // O_DIRECT refused by this file system: go buffered
		}
		if err != nil {
			return &os.PathError{Op: "pwrite", Path: name, Err: err}
		}
		off += int64(w)
		if pace != nil {
			pace(off)
		}
	}
	return nil
}
