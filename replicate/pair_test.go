package replicate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/replicate"
)

// instance is one in-process server with replication.
type instance struct {
	name string
	dir  string
	srv  *engine.Server
	repl string // replication listen address
}

func logger() *slog.Logger {
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startInstance(t testing.TB, name, dir, replListen string, peers ...string) *instance {
	t.Helper()
	rc := &replicate.Config{Listen: replListen, Secret: []byte("s3cret"), Heartbeat: 50 * time.Millisecond,
		DowngradeAfter: 500 * time.Millisecond, UpgradeBelow: 50 * time.Millisecond, IO: testIO}
	for _, p := range peers {
		d, err := replicate.ParseDestination(p)
		if err != nil {
			t.Fatal(err)
		}
		rc.Destinations = append(rc.Destinations, d)
	}
	s, err := engine.New(engine.Config{Name: name, Listen: "127.0.0.1:0", DataDir: dir, Loops: 1,
		Journal: journal.Options{SegmentSize: 8 << 20}, Replication: rc, Logger: logger().With("i", name)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, dir: dir, srv: s}
	if a := s.Replicator().Addr(); a != nil {
		in.repl = a.String()
	}
	return in
}

// waitFor polls cond until it holds or d passes; diag, if given, describes
// the state in the failure message.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool, diag ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			extra := ""
			for _, f := range diag {
				extra += f()
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, extra)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition with a deadline
	}
}

func TestHotHotPairSmoke(t *testing.T) {
	ctx := context.Background()
	// B listens first so A can be configured with B's address; A's address
	// is then given to B through an accept-only + dial pair.
	b := startInstance(t, "B", t.TempDir(), "127.0.0.1:0", "A")
	defer b.srv.Close()
	a := startInstance(t, "A", t.TempDir(), "127.0.0.1:0", "B="+b.repl+",sync")
	defer a.srv.Close()

	waitFor(t, 5*time.Second, "A->B sync", func() bool {
		st := a.srv.Stats()
		return len(st.Replication) == 1 && st.Replication[0].State == "sync"
	})
	ca, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("pa"))
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := client.Connect(ctx, b.srv.Addr().String(), client.WithName("pb"))
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	for i := 0; i < 1000; i++ {
		ca.Publish(ctx, "t", []byte(fmt.Sprint("a", i)))
		cb.Publish(ctx, "t", []byte(fmt.Sprint("b", i)))
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := ca.Flush(fctx); err != nil {
		t.Fatalf("flush A: %v; A %+v B %+v", err, a.srv.Stats(), b.srv.Stats())
	}
	if err := cb.Flush(fctx); err != nil {
		t.Fatalf("flush B: %v; A %+v B %+v", err, a.srv.Stats(), b.srv.Stats())
	}
	// A's acks waited for B (sync): B already holds A's 1000.
	if got := b.srv.Stats().Stored; got < 1000 {
		t.Fatalf("after A's flush, B holds %d messages", got)
	}
	waitFor(t, 5*time.Second, "both hold 2000", func() bool {
		return a.srv.Stats().Stored == 2000 && b.srv.Stats().Stored == 2000
	})
	t.Logf("A: %+v", a.srv.Stats().Replication)
	t.Logf("B: %+v", b.srv.Stats().Replication)
}
