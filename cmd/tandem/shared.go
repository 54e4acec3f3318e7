package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/dirlock"
)

// Shared-store HA (`serve --shared-store`, docs/ha.md): every process on
// one data directory runs this; the one that gets the directory's lock is
// the active and runs the engine, the others are passives running an
// engine.StandbyServer on their --listen until the lock is theirs.

// defaultStallLimit is shared-store-stall-limit's default: well below an
// NFSv4 lease (90s by default) and above any healthy fdatasync.
const defaultStallLimit = 5 * time.Second

// mountinfoPath is where the mount table is read from (tests use fixtures).
const mountinfoPath = "/proc/self/mountinfo"

// lockPoll is how often a passive tries the lock.
const lockPoll = 100 * time.Millisecond

// standbyNow is true while this process is a shared-store passive (for a
// readiness probe: see isStandby).
var standbyNow atomic.Bool

// isStandby reports whether this `tandem serve` is a shared-store passive
// right now (a readiness probe answers 503 standby meanwhile).
func isStandby() bool { return standbyNow.Load() }

// errSharedStoreRefused is wrapped by the errors that refuse --shared-store
// on a data directory where the lock cannot guard it.
var errSharedStoreRefused = errors.New("shared-store refused")

// checkSharedStoreConfig refuses settings that cannot work with a shared
// store.
func (c *serveConfig) checkSharedStoreConfig(onStorageFailure string) error {
	if !c.SharedStore {
		if c.SharedStoreStallLimit.Duration != 0 {
			return errors.New("shared-store-stall-limit is set without shared-store")
		}
		return nil
	}
	if onStorageFailure == engine.StorageFailureStay {
		return errors.New("shared-store with on-storage-failure stay: a failed active that stays up keeps the data directory's lock, so no passive could ever take over; use exit (the default)")
	}
	if c.Name == "" {
		return errors.New("shared-store needs --name: every process on the directory must run as the same instance, and the default (the host name) differs between machines")
	}
	if c.SharedStoreStallLimit.Duration < 0 {
		return fmt.Errorf("shared-store-stall-limit: %v is negative", c.SharedStoreStallLimit.Duration)
	}
	return nil
}

// waitForSharedStore returns the data directory's lock once this process
// holds it, running a standby server on ec.Listen meanwhile. It returns a
// nil lock and the exit status when it stops instead: a refusal (1), or a
// signal while passive (0).
func waitForSharedStore(ec engine.Config, sigs <-chan os.Signal) (*dirlock.Lock, int) {
	log := ec.Logger
	dir, name := ec.DataDir, ec.Name
	if err := checkSharedStoreMount(dir, mountinfoPath); err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return nil, 1
	}
	// The directory's identity: the last holder's name must be ours.
	if h, err := dirlock.ReadHolder(dir); err == nil && h.Name != "" && h.Name != name {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", wrongName(dir, h, name))
		return nil, 1
	}
	lock, err := dirlock.Acquire(dir, name)
	if err == nil {
		log.Info("shared store: active (the data directory's lock is ours)", "data", dir)
		return lock, 0
	}
	if errors.Is(err, unix.ENOLCK) {
		fmt.Fprintf(os.Stderr, "tandem serve: %v: %v\n", errSharedStoreRefused,
			fmt.Errorf("the file system of %s does not support the lock (ENOLCK; an NFS mount without a lock manager?), so it cannot decide which process is active: %w", dir, err))
		return nil, 1
	}
	var held *dirlock.HeldError
	if !errors.As(err, &held) {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return nil, 1
	}
	if held.Holder.Name != "" && held.Holder.Name != name {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", wrongName(dir, held.Holder, name))
		return nil, 1
	}
	sb, err := engine.ListenStandby(ec.Listen, name, dir, ec.LogonTimeout, log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return nil, 1
	}
	standbyNow.Store(true)
	log.Info("shared store: passive, waiting for the data directory's lock", "listen", sb.Addr().String(),
		"data", dir, "active", held.Holder.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waited, watcherDone := make(chan struct{}), make(chan struct{})
	var signalled atomic.Bool
	go func() {
		defer close(watcherDone)
		select {
		case <-sigs:
			signalled.Store(true)
			cancel()
		case <-waited:
		}
	}()
	lock, err = dirlock.AcquireWait(ctx, dir, name, lockPoll)
	close(waited)
	<-watcherDone
	if err == nil && signalled.Load() { // a signal just as the lock came: stop, as asked
		lock.Close()
		err = ctx.Err()
	}
	start := time.Now()
	if cerr := sb.Close(); cerr != nil {
		log.Warn("shared store: closing the standby listener", "err", cerr)
	}
	standbyNow.Store(false)
	if err != nil {
		if signalled.Load() {
			log.Info("shutting down (passive)")
			return nil, 0
		}
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return nil, 1
	}
	log.Info("shared store: taking over (the data directory's lock is ours): recovering the journal",
		"data", dir, "standby_closed_in", time.Since(start))
	return lock, 0
}

func wrongName(dir string, h dirlock.Holder, name string) error {
	return fmt.Errorf("%w: data directory %s belongs to instance %q (its lock file names it; last holder pid %d on %q), not %q: "+
		"every process on a shared store runs with the same --name, so clients and replication peers see one instance that moved",
		errSharedStoreRefused, dir, h.Name, h.PID, h.Host, name)
}

// checkSharedStoreMount refuses a data directory on a mount where the
// fcntl lock would be local to one machine and so could not tell two
// machines' processes apart: NFS mounted nolock, or with
// local_lock=posix or local_lock=all (local_lock=flock and none keep
// fcntl locks on the server; dirlock uses fcntl). mountinfo is the path of
// a /proc/PID/mountinfo table; the mount is the one with the longest
// mount point containing dir (symbolic links resolved; a directory that
// does not exist yet is judged by its nearest existing parent).
func checkSharedStoreMount(dir, mountinfo string) error {
	path, err := resolveExisting(dir)
	if err != nil {
		return fmt.Errorf("shared-store: data directory %s: %w", dir, err)
	}
	f, err := os.Open(mountinfo)
	if err != nil {
		return fmt.Errorf("shared-store: read the mount table: %w", err)
	}
	defer f.Close()
	var best mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountinfoLine(sc.Text())
		if !ok || !pathWithin(path, m.point) {
			continue
		}
		if len(m.point) >= len(best.point) {
			best = m
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("shared-store: read %s: %w", mountinfo, err)
	}
	if !strings.HasPrefix(best.fstype, "nfs") {
		return nil
	}
	for _, o := range best.options {
		switch o {
		case "nolock", "local_lock=posix", "local_lock=all":
			return fmt.Errorf("%w: data directory %s is on NFS mount %s (%s) with option %s: its fcntl locks stay on this machine, "+
				"so a process on another machine would take the same lock and both would write the journal; remount without it",
				errSharedStoreRefused, dir, best.point, best.source, o)
		}
	}
	return nil
}

type mountEntry struct {
	point, fstype, source string
	options               []string // per-mount and super-block options
}

// parseMountinfoLine reads one line of proc(5) mountinfo:
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)  (4)   (5)         (6)        (7)      (8)(9)  (10)      (11)
//
// (5) is the mount point (octal escapes such as \040 for a space), (6) the
// per-mount options, (7) optional fields ended by "-" (8), then the file
// system type, the source and the super-block options.
func parseMountinfoLine(line string) (mountEntry, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(fields) {
		return mountEntry{}, false
	}
	m := mountEntry{point: unescapeMount(fields[4]), fstype: fields[sep+1], source: fields[sep+2]}
	m.options = strings.Split(fields[5], ",")
	if sep+3 < len(fields) {
		m.options = append(m.options, strings.Split(fields[sep+3], ",")...)
	}
	return m, true
}

// unescapeMount undoes mountinfo's octal escapes (\040 space, \011 tab,
// \012 newline, \134 backslash).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pathWithin reports whether path is point or below it.
func pathWithin(path, point string) bool {
	if point == "/" {
		return true
	}
	return path == point || strings.HasPrefix(path, point+"/")
}

// resolveExisting returns dir made absolute with symbolic links resolved,
// through its nearest existing parent when it does not exist yet.
func resolveExisting(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	var rest []string
	p := abs
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", err
		}
		rest = append([]string{filepath.Base(p)}, rest...)
		p = parent
	}
}
