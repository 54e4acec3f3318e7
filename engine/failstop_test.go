package engine

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// failingSyncs returns a journal file system over the OS one whose data
// syncs fail with EIO once armed.
func failingSyncs(armed *atomic.Bool) journal.FS {
	return journal.ErrorFS{FS: journal.OSFS{}, Inject: func(op, name string) error {
		if op == "sync" && armed.Load() {
			return syscall.EIO
		}
		return nil
	}}
}

// untilError reads frames until an Error frame, then expects the close. It
// returns the error and the highest persisted ack (code 0) seen before it.
func (r *rawClient) untilError(d time.Duration) (wire.Error, uint64) {
	r.t.Helper()
	var acked uint64
	for {
		f, err := r.next(d)
		if err != nil {
			r.t.Fatalf("want an Error frame, connection ended: %v", err)
		}
		switch f.Type {
		case wire.TypeAck:
			var a wire.Ack
			if err := wire.DecodeAck(f.Body, &a); err != nil {
				r.t.Fatal(err)
			}
			if a.Kind == wire.AckKindPersisted && a.Code == 0 {
				acked = max(acked, a.Seq)
			}
			continue
		case wire.TypeError:
		default:
			continue // heartbeats, deliveries, positions
		}
		var e wire.Error
		if err := wire.DecodeError(f.Body, &e); err != nil {
			r.t.Fatal(err)
		}
		e.Text = append([]byte(nil), e.Text...)
		if f, err := r.next(d); !errors.Is(err, io.EOF) && !isReset(err) {
			r.t.Fatalf("after the Error frame %s %q: want the close, got %v (a %s frame %s)", e.Code, e.Text, err, f.Type, describe(f))
		}
		return e, acked
	}
}

// TestStorageFailureFailStop: once a journal sync fails (EIO), every
// connected client (publisher, subscriber, idle) gets an Error frame
// storage-failed naming the cause and is disconnected, the acks already
// durable arrive before it (and none beyond), Failed() closes with the
// cause, the listener is closed (exit mode: reconnects are refused) and
// stat reports the failure.
func TestStorageFailureFailStop(t *testing.T) {
	var armed atomic.Bool
	dir := t.TempDir()
	s := testServer(t, dir, func(c *Config) { c.Journal.FS = failingSyncs(&armed) })
	defer s.Close()

	idle := dialRaw(t, s)
	idle.logon("idle", 0)
	sub := dialRaw(t, s)
	sub.logon("sub", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))
	pub := dialRaw(t, s)
	pub.logon("pub", 0)
	pub.publishN("t", "m", 1, 50, wire.AckPersisted)
	pub.waitAck(wire.AckKindPersisted, 50)

	// Keep publishing (one write of 10 per round); syncs start failing
	// once 200 more are durable.
	go func() {
		var buf []byte
		for seq := uint64(51); seq < 100000; seq += 10 {
			buf = buf[:0]
			for i := seq; i < seq+10; i++ {
				buf = wire.AppendPublish(buf, i, wire.AckPersisted, []byte("t"), []byte("payload"))
			}
			pub.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := pub.c.Write(buf); err != nil {
				return // closed by the server
			}
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); s.Journal().SyncedSeq() < 250; {
		if time.Now().After(deadline) {
			t.Fatalf("journal durable through %d after 10s of publishing", s.Journal().SyncedSeq())
		}
		time.Sleep(time.Millisecond) // polling the condition, with a deadline
	}
	armed.Store(true)

	for _, c := range []struct {
		name string
		r    *rawClient
	}{{"pub", pub}, {"sub", sub}, {"idle", idle}} {
		e, acked := c.r.untilError(10 * time.Second)
		if e.Code != wire.CodeStorageFailed || !strings.Contains(string(e.Text), syscall.EIO.Error()) {
			t.Errorf("%s: Error %s %q, want storage-failed naming %q", c.name, e.Code, e.Text, syscall.EIO.Error())
		}
		if c.name == "pub" {
			if synced := s.Journal().SyncedSeq(); acked > synced || acked <= 50 {
				t.Errorf("pub: acked through %d; the journal is durable through %d", acked, synced)
			}
			t.Logf("pub: acked through %d, durable through %d, appended %d", acked, s.Journal().SyncedSeq(), s.Journal().LastSeq())
		}
	}
	select {
	case <-s.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed() not closed 10s after the journal failed")
	}
	if err := s.FailureCause(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FailureCause %v, want EIO", err)
	}
	if st := s.Stats().Storage; !strings.HasPrefix(st, "failed: ") || !strings.Contains(st, syscall.EIO.Error()) {
		t.Fatalf("stats storage %q", st)
	}
	if c, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the client listener still accepts connections after the fail-stop (exit mode)")
	}
}

// TestStorageFailureStayServesOnlyStat: with OnStorageFailure "stay" the
// listener stays open; a stat client logs on and gets stats reporting the
// failure, but may do nothing else, and any other logon is refused with
// storage-failed.
func TestStorageFailureStayServesOnlyStat(t *testing.T) {
	var armed atomic.Bool
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.Journal.FS = failingSyncs(&armed)
		c.OnStorageFailure = StorageFailureStay
	})
	defer s.Close()
	if st := s.Stats().Storage; st != "ok" {
		t.Fatalf("storage %q before the failure", st)
	}
	pub := dialRaw(t, s)
	pub.logon("pub", 0)
	armed.Store(true)
	pub.publishN("t", "m", 1, 1, wire.AckPersisted)
	if e, _ := pub.untilError(10 * time.Second); e.Code != wire.CodeStorageFailed {
		t.Fatalf("publisher: %s %q", e.Code, e.Text)
	}
	select {
	case <-s.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed() not closed")
	}

	other := dialRaw(t, s)
	other.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte("pub2")}))
	if e, _ := other.untilError(5 * time.Second); e.Code != wire.CodeStorageFailed || !strings.Contains(string(e.Text), syscall.EIO.Error()) {
		t.Fatalf("logon after the failure: %s %q", e.Code, e.Text)
	}

	st := dialRaw(t, s)
	st.logon(StatClientPrefix+"test", 0)
	st.send(wire.AppendStatRequest(nil))
	f := st.nextSkipping(5 * time.Second)
	if f.Type != wire.TypeStatReply || !strings.Contains(string(f.Body), `"storage":"failed: `) {
		t.Fatalf("stat after the failure: %s %q", f.Type, f.Body)
	}
	st.publishN("t", "m", 1, 1, wire.AckPersisted)
	if e, _ := st.untilError(5 * time.Second); e.Code != wire.CodeStorageFailed {
		t.Fatalf("publish on a stat-only connection: %s %q", e.Code, e.Text)
	}
}

// tinyTmpfs mounts a tmpfs of size bytes on a new directory (unmounted at
// the end of the test); it skips the test when not root or mounting fails.
func tinyTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestNewRefusesFullDisk: a data directory whose file system cannot hold
// the first two segments is a start-up error naming it; with room for
// them the server starts.
func TestNewRefusesFullDisk(t *testing.T) {
	mnt := tinyTmpfs(t, 8<<20)
	dir := filepath.Join(mnt, "data")
	_, err := New(Config{Name: "full", Listen: "127.0.0.1:0", DataDir: dir, Engine: testEngine,
		Journal: journal.Options{SegmentSize: 5 << 20}, Logger: discardLogger()})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("New with two 5 MiB segments on an 8 MiB disk: %v", err)
	}
	s, err := New(Config{Name: "fits", Listen: "127.0.0.1:0", DataDir: dir, Engine: testEngine,
		Journal: journal.Options{SegmentSize: 3 << 20}, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("New with two 3 MiB segments on an 8 MiB disk: %v", err)
	}
	s.Close()
}

// TestStorageFailureDrainIsBounded: a subscriber that does not read (its
// output far above what the socket holds) cannot hold the fail-stop up:
// at the drain deadline its connection is closed and Failed() closes.
func TestStorageFailureDrainIsBounded(t *testing.T) {
	var armed atomic.Bool
	const drain = 300 * time.Millisecond
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.Journal.FS = failingSyncs(&armed)
		c.DrainTimeout = drain
	})
	defer s.Close()
	pub := dialRaw(t, s)
	pub.logon("pub", 0)
	big := make([]byte, 16<<10)
	var buf []byte
	for i := uint64(1); i <= 2000; i++ { // 32 MiB for a subscriber that never reads
		buf = wire.AppendPublish(buf[:0], i, wire.AckNone, []byte("t"), big)
		pub.send(buf)
	}
	pub.send(wire.AppendFlush(nil, 1))
	pub.waitAck(wire.AckKindFlushed, 1)
	slow := dialRaw(t, s)
	slow.logon("slow", 0)
	slow.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))

	armed.Store(true)
	pub.send(wire.AppendPublish(nil, 2001, wire.AckPersisted, []byte("t"), []byte("x")))
	start := time.Now()
	select {
	case <-s.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed() not closed 10s after the journal failed, with a subscriber that does not read")
	}
	took := time.Since(start)
	t.Logf("fail-stop took %v with a %v drain timeout", took.Round(time.Millisecond), drain)
	if took < drain {
		t.Errorf("fail-stop took %v: it did not wait the drain timeout (%v) for the unread output", took, drain)
	}
	// The slow subscriber's connection is closed: reading reaches its end.
	for {
		if _, err := slow.next(10 * time.Second); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the slow subscriber's connection is still open")
			}
			break
		}
	}
}
