package dirlock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTwoAcquirersConflict: OFD locks belong to the open file description,
// so a second Acquire in the same process is refused like another process
// would be, naming the holder; after Close the directory can be taken
// again.
func TestTwoAcquirersConflict(t *testing.T) {
	dir := t.TempDir()
	l1, err := Acquire(dir, "first")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(dir, "second")
	if err == nil {
		l2.Close()
		t.Fatal("second Acquire on a locked directory succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("error %v does not wrap ErrLocked", err)
	}
	var he *HeldError
	if !errors.As(err, &he) {
		t.Fatalf("error %T is not a *HeldError", err)
	}
	host, _ := os.Hostname()
	if he.Dir != dir || he.Holder != (Holder{Host: host, PID: os.Getpid(), Name: "first"}) {
		t.Fatalf("held error %+v, want dir %s held by first/%d/%s", he, dir, os.Getpid(), host)
	}
	for _, want := range []string{dir, `"first"`, "pid "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not name %q", err, want)
		}
	}
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	l3, err := Acquire(dir, "third")
	if err != nil {
		t.Fatalf("Acquire after Close: %v", err)
	}
	defer l3.Close()
	h, err := ReadHolder(dir)
	if err != nil || h.Name != "third" || h.PID != os.Getpid() {
		t.Fatalf("holder after re-acquire: %+v, %v", h, err)
	}
}

// TestAcquireCreatesDir0700: a missing data directory is created private.
func TestAcquireCreatesDir0700(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "data")
	l, err := Acquire(dir, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("data directory mode %v, want 0700", fi.Mode().Perm())
	}
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	want := "host \"" + host + "\"\npid " + strconv.Itoa(os.Getpid()) + "\nname \"x\"\n"
	if string(b) != want {
		t.Fatalf("lock file %q, want %q", b, want)
	}
}

// TestAcquireBadInput: no directory, or a path that is a file.
func TestAcquireBadInput(t *testing.T) {
	if _, err := Acquire("", "x"); err == nil {
		t.Fatal("Acquire(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := Acquire(file, "x"); err == nil {
		l.Close()
		t.Fatal("Acquire on a regular file succeeded")
	} else if errors.Is(err, ErrLocked) {
		t.Fatalf("a file path reported as locked: %v", err)
	}
}

// TestUnknownHolder: a lock file the holder has not written yet (or
// garbage) is reported as an unknown holder, still ErrLocked.
func TestUnknownHolder(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir, "h")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "other")
	var he *HeldError
	if !errors.As(err, &he) || he.Holder != (Holder{}) || !strings.Contains(err.Error(), "unknown holder") {
		t.Fatalf("got %v", err)
	}
}

// TestAcquireWait: the waiting form gets the lock once the holder releases
// it, and gives up with both ErrLocked and the context's error.
func TestAcquireWait(t *testing.T) {
	dir := t.TempDir()
	l1, err := Acquire(dir, "holder")
	if err != nil {
		t.Fatal(err)
	}
	tried := make(chan struct{}, 1)
	waitHook = func(error) {
		select {
		case tried <- struct{}{}:
		default:
		}
	}
	defer func() { waitHook = nil }()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = AcquireWait(ctx, dir, "waiter", time.Millisecond)
	cancel()
	if !errors.Is(err, ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcquireWait on a held lock: %v", err)
	}

	got := make(chan error, 1)
	var l2 *Lock
	go func() {
		var err error
		l2, err = AcquireWait(context.Background(), dir, "waiter", time.Millisecond)
		got <- err
	}()
	<-tried // drain the earlier attempt's signal or this one's
	<-tried // at least one attempt of this call found it held
	if err := l1.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AcquireWait did not get the lock within 10s of its release")
	}
	defer l2.Close()
	if h, _ := ReadHolder(dir); h.Name != "waiter" {
		t.Fatalf("holder %+v", h)
	}
}
