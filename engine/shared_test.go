package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/dirlock"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

func dialStandby(t *testing.T, s *StandbyServer) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, buf: make([]byte, 1<<20)}
}

// TestStandbyServerRefusesClientsServesStat: a passive answers a client's
// logon with Error standby naming the active (host and pid from the lock
// file), accepts a tandem-stat logon and answers its stat requests with
// state standby, and never creates a journal segment.
func TestStandbyServerRefusesClientsServesStat(t *testing.T) {
	dir := t.TempDir()
	active, err := dirlock.Acquire(dir, "shared")
	if err != nil {
		t.Fatal(err)
	}
	defer active.Close()
	sb, err := ListenStandby("127.0.0.1:0", "shared", dir, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if !sb.Standby() {
		t.Fatal("Standby() false on a running standby server")
	}
	host, _ := os.Hostname()
	wantActive := fmt.Sprintf("%s pid %d", host, os.Getpid())

	r := dialStandby(t, sb)
	r.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte("app")}))
	if text := r.expectError(wire.CodeStandby); text != "standby: active is "+wantActive {
		t.Fatalf("standby text %q, want %q", text, "standby: active is "+wantActive)
	}

	st := dialStandby(t, sb)
	rep := st.logon(StatClientPrefix+"x", 0)
	if string(rep.Instance) != "shared" || rep.Version != wire.MaxVersion {
		t.Fatalf("stat logon reply %+v", rep)
	}
	for i := 0; i < 2; i++ {
		st.send(wire.AppendStatRequest(nil))
		f := st.mustNext(5 * time.Second)
		if f.Type != wire.TypeStatReply {
			t.Fatalf("got %s, want stat reply", f.Type)
		}
		var doc wire.Stats
		if err := json.Unmarshal(f.Body, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.State != "standby" || doc.Active != wantActive || doc.Instance != "shared" {
			t.Fatalf("standby stats %+v", doc)
		}
	}
	// A stat client may not publish.
	st.send(wire.AppendPublish(nil, 1, wire.AckNone, []byte("t"), []byte("p")))
	st.expectError(wire.CodeStandby)

	// A silent connection is closed at the logon timeout.
	silent := dialStandby(t, sb)
	if _, err := silent.next(5 * time.Second); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("silent connection: %v, want closed after the logon timeout", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != dirlock.FileName {
			t.Fatalf("the standby left %s in the data directory", e.Name())
		}
	}
	if err := sb.Close(); err != nil {
		t.Fatal(err)
	}
	if sb.Standby() {
		t.Fatal("Standby() true after Close")
	}
	// The address is free once Close returned (the engine binds it next).
	l, err := net.Listen("tcp", sb.Addr().String())
	if err != nil {
		t.Fatalf("address still taken after Close: %v", err)
	}
	l.Close()
}

// TestServerUsesGivenDirLock: New keeps a lock it is given (Config.DirLock)
// for the server's life and releases it at Close; a lock of another
// directory is refused, and released.
func TestServerUsesGivenDirLock(t *testing.T) {
	dir := t.TempDir()
	lock, err := dirlock.Acquire(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	s := testServer(t, dir, func(c *Config) { c.DirLock = lock })
	if _, err := dirlock.Acquire(dir, "test"); !errors.Is(err, dirlock.ErrLocked) {
		t.Fatalf("directory not locked while the server runs: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := dirlock.Acquire(dir, "test")
	if err != nil {
		t.Fatalf("lock not released by Close: %v", err)
	}
	l2.Close()

	other := t.TempDir()
	wrong, err := dirlock.Acquire(other, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Name: "test", Listen: "127.0.0.1:0", DataDir: dir, Loops: 1, Engine: testEngine, DirLock: wrong,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "not of the data directory") {
		t.Fatalf("New with another directory's lock: %v", err)
	}
	l3, err := dirlock.Acquire(other, "test")
	if err != nil {
		t.Fatalf("a failing New did not release the lock it was given: %v", err)
	}
	l3.Close()
}

// TestStallWatchFencesBlockedSync: once an fdatasync does not return for
// the stall limit, OnStall reports ErrStorageStalled (serve exits there).
func TestStallWatchFencesBlockedSync(t *testing.T) {
	var armed atomic.Bool
	release := make(chan struct{})
	defer close(release)
	stalled := make(chan error, 1)
	limit := 200 * time.Millisecond
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.Journal.FS = journal.ErrorFS{FS: journal.OSFS{}, Inject: func(op, name string) error {
			if op == "sync" && armed.Load() {
				<-release // a sync that does not return
			}
			return nil
		}}
		c.StallLimit = limit
		c.OnStall = func(err error) { stalled <- err }
	})
	defer func() {
		go s.Close() // its last sync waits for release
	}()
	r := dialRaw(t, s)
	r.logon("p", 0)
	r.send(wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("t"), []byte("before")))
	r.waitAck(wire.AckKindPersisted, 1)
	select {
	case err := <-stalled:
		t.Fatalf("stalled with every sync returning: %v", err)
	case <-time.After(2 * limit): // a negative check: nothing must happen within two limits
	}
	armed.Store(true)
	start := time.Now()
	r.send(wire.AppendPublish(nil, 2, wire.AckPersisted, []byte("t"), []byte("stuck")))
	select {
	case err := <-stalled:
		el := time.Since(start)
		if !errors.Is(err, ErrStorageStalled) || el < limit || el > limit+limit/2+500*time.Millisecond {
			t.Fatalf("OnStall after %v (limit %v): %v", el, limit, err)
		}
		t.Logf("fenced after %v: %v", el, err)
	case <-time.After(10 * time.Second):
		t.Fatal("no stall reported 10s into a sync that does not return")
	}
}

// TestStallWatchFencesLostLock: a lock file rewritten by another holder
// (the lock was lost) fences the active too.
func TestStallWatchFencesLostLock(t *testing.T) {
	dir := t.TempDir()
	stalled := make(chan error, 1)
	s := testServer(t, dir, func(c *Config) {
		c.StallLimit = 100 * time.Millisecond
		c.OnStall = func(err error) { stalled <- err }
	})
	defer s.Close()
	select {
	case err := <-stalled:
		t.Fatalf("fenced while holding the lock: %v", err)
	case <-time.After(300 * time.Millisecond): // a negative check over three limits
	}
	if err := os.WriteFile(filepath.Join(dir, dirlock.FileName), []byte("host \"other\"\npid 1\nname \"test\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stalled:
		if !errors.Is(err, ErrStorageStalled) || !strings.Contains(err.Error(), "the lock was lost") {
			t.Fatalf("OnStall: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("lost lock not noticed in 10s")
	}
}
