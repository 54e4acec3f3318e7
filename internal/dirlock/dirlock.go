// Package dirlock makes a directory belong to one process: an exclusive
// open-file-description lock (fcntl F_OFD_SETLK, a write lock over the
// whole file) on a file named LOCK in the directory. The kernel drops the
// lock when the last descriptor of that open file description is closed,
// which includes the process dying (kill -9, crash): there is no stale
// lock to clean up by hand. The fcntl form, unlike flock(2), is the one
// NFS forwards to the server, so the same lock guards a directory on
// shared storage.
//
// Because an OFD lock belongs to the open file description and not to the
// process, two Acquire calls in one process conflict exactly like two
// processes do (classic POSIX record locks would not).
//
// # Lock file
//
// LOCK is created 0600 if missing and never deleted (deleting it would let
// a process that still has the old inode open believe it holds the lock of
// a new file). Once the lock is held its content is replaced, and fsynced,
// with three lines of UTF-8 text describing the holder, each value quoted
// as a Go string literal (strconv.Quote):
//
//	host "db-7"
//	pid 4711
//	name "tandem-a"
//
// The content describes the last holder; it is meaningful only while the
// lock is held (a process that died leaves it behind, unlocked). Acquire
// reads it to name the holder when the lock is taken; a holder that has
// not written it yet (the instant between locking and writing) is
// reported as unknown.
package dirlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FileName is the lock file's name inside the locked directory.
const FileName = "LOCK"

// ErrLocked is wrapped by the error Acquire returns when another open file
// description (another process, or another Acquire in this one) holds the
// lock. The error is a *HeldError naming the holder.
var ErrLocked = errors.New("dirlock: directory is locked by another instance")

// Holder describes the process holding a directory's lock, as recorded in
// its lock file.
type Holder struct {
	Host string
	PID  int
	Name string // instance name
}

// String describes the holder for error messages.
func (h Holder) String() string {
	if h.PID == 0 && h.Host == "" && h.Name == "" {
		return "an unknown holder (lock file not written yet)"
	}
	return fmt.Sprintf("instance %q (pid %d on host %q)", h.Name, h.PID, h.Host)
}

// HeldError is returned when the directory is locked by someone else.
// errors.Is(err, ErrLocked) holds for it.
type HeldError struct {
	Dir    string
	Holder Holder
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("data directory %s is in use: locked by %s", e.Dir, e.Holder)
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *HeldError) Unwrap() error { return ErrLocked }

// Lock is a held directory lock. Close releases it.
type Lock struct {
	dir string
	f   *os.File
}

// Dir returns the locked directory.
func (l *Lock) Dir() string { return l.dir }

// Acquire takes the lock on dir for the instance called name, failing at
// once (with a *HeldError wrapping ErrLocked) if another holds it. dir is
// created with mode 0700 if missing (its parents too). Once the lock is
// held the lock file is rewritten with this process's host, pid and name,
// and fsynced.
func Acquire(dir, name string) (*Lock, error) {
	if dir == "" {
		return nil, errors.New("dirlock: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dirlock: create data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("dirlock: open lock file: %w", err)
	}
	if err := setLock(f, unix.F_WRLCK); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			h, _ := readHolder(f) // unreadable or half-written: unknown holder
			return nil, &HeldError{Dir: dir, Holder: h}
		}
		return nil, fmt.Errorf("dirlock: lock %s: %w", path, err)
	}
	host, _ := os.Hostname()
	content := fmt.Sprintf("host %s\npid %d\nname %s\n", strconv.Quote(host), os.Getpid(), strconv.Quote(name))
	if err := writeAll(f, content); err != nil {
		f.Close() // drops the lock
		return nil, fmt.Errorf("dirlock: write lock file %s: %w", path, err)
	}
	// Make the lock file's directory entry durable too (a new file).
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return &Lock{dir: dir, f: f}, nil
}

// waitHook, when set (tests), is called after every attempt of
// AcquireWait that found the lock held.
var waitHook func(error)

// AcquireWait is Acquire that, while the lock is held by another, tries
// again every poll (default 100ms) until it gets it or ctx is done; it
// then returns the last *HeldError joined with ctx's error (errors.Is
// works for ErrLocked and context.DeadlineExceeded/Canceled). It polls
// with F_OFD_SETLK rather than blocking in F_OFD_SETLKW so that ctx can
// stop it and NFS (which forwards no blocking notification reliably)
// behaves the same. For a standby waiting to take over a shared store.
func AcquireWait(ctx context.Context, dir, name string, poll time.Duration) (*Lock, error) {
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	t := time.NewTimer(poll)
	defer t.Stop()
	for {
		l, err := Acquire(dir, name)
		if err == nil || !errors.Is(err, ErrLocked) {
			return l, err
		}
		if waitHook != nil {
			waitHook(err)
		}
		t.Reset(poll)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// Close releases the lock (explicitly, then by closing the file). The
// lock file stays, describing the last holder.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	uerr := setLock(l.f, unix.F_UNLCK)
	cerr := l.f.Close()
	l.f = nil
	if uerr != nil {
		return fmt.Errorf("dirlock: unlock %s: %w", l.dir, uerr)
	}
	if cerr != nil {
		return fmt.Errorf("dirlock: close lock file in %s: %w", l.dir, cerr)
	}
	return nil
}

// ReadHolder returns the holder recorded in dir's lock file (the last
// holder if the lock is free).
func ReadHolder(dir string) (Holder, error) {
	f, err := os.Open(filepath.Join(dir, FileName))
	if err != nil {
		return Holder{}, fmt.Errorf("dirlock: %w", err)
	}
	defer f.Close()
	return readHolder(f)
}

// setLock sets (F_WRLCK) or clears (F_UNLCK) the whole-file OFD lock.
func setLock(f *os.File, typ int16) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 0} // Pid must be 0 for OFD locks
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

func writeAll(f *os.File, content string) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		return err
	}
	return f.Sync()
}

// readHolder parses the lock file's content (see the package
// documentation). Lines it does not know are ignored.
func readHolder(f *os.File) (Holder, error) {
	var buf [4096]byte
	n, err := f.ReadAt(buf[:], 0)
	if n == 0 && err != nil && !errors.Is(err, io.EOF) {
		return Holder{}, fmt.Errorf("dirlock: read lock file: %w", err)
	}
	var h Holder
	for _, line := range bytes.Split(buf[:n], []byte("\n")) {
		key, val, ok := strings.Cut(string(line), " ")
		if !ok {
			continue
		}
		switch key {
		case "host":
			h.Host, _ = strconv.Unquote(val)
		case "name":
			h.Name, _ = strconv.Unquote(val)
		case "pid":
			h.PID, _ = strconv.Atoi(val)
		}
	}
	return h, nil
}
