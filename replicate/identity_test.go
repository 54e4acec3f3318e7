package replicate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/wire"
)

// holds returns the pubSeqs of publisher name in n's durable journal.
func holds(t testing.TB, n *node, name string) map[uint64]bool {
	t.Helper()
	id := record.ID(name)
	have := map[uint64]bool{}
	for _, m := range readJournal(t, n.srv) {
		if m.key.publisher == id {
			have[m.key.pubSeq] = true
		}
	}
	return have
}

// publishAcked publishes n messages as name on to, each waited for with a
// persisted ack, and checks after every ack that peer's durable journal
// holds every message acknowledged so far.
func publishAcked(t *testing.T, ctx context.Context, to, peer *node, name string, n int) {
	t.Helper()
	c, err := client.Connect(ctx, to.srv.Addr().String(), client.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for s := uint64(1); s <= uint64(n); s++ {
		got, err := c.Publish(ctx, "id.t", []byte(payloadFor(name, s)))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitPersisted(ctx, got); err != nil {
			t.Fatalf("%s: ack of %d: %v (destination %+v)", name, got, err, to.dest(t, peer.name))
		}
		if s%25 == 0 || s == uint64(n) {
			have := holds(t, peer, name)
			for k := uint64(1); k <= got; k++ {
				if !have[k] {
					t.Fatalf("%s acknowledged %s's pubSeq %d as persisted (sync to %s) but %s's durable journal lacks it "+
						"(holds %d of %d); destination %+v", to.name, name, k, peer.name, peer.name, len(have), got,
						to.dest(t, peer.name))
				}
			}
		}
	}
}

// TestWipedSourceRestartsItsStream: A's data directory is lost and A
// restarts empty, under the same name. B still holds a position for A's old
// journal; the new journal is a new stream, shipped from its first record,
// and sync acks wait until B really holds each message.
func TestWipedSourceRestartsItsStream(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	o := nodeOpts{downgrade: time.Minute}
	b := startNode(t, "B", o, "A,async")
	o.listen = "-"
	a := startNode(t, "A", o, "B="+b.repl)
	a.waitState(t, "B", "sync", 5*time.Second)
	publishAll(t, ctx, []pubPlan{{name: "before", to: a, n: 300}}, nil)
	waitQuiet(t, 10*time.Second, map[*node]uint64{b: 300}, a, b)

	a.srv.Close()
	if err := os.RemoveAll(a.dir); err != nil {
		t.Fatal(err)
	}
	o.dir = t.TempDir()
	a = startNode(t, "A", o, "B="+b.repl)
	publishAcked(t, ctx, a, b, "after", 200)
	if n := len(holds(t, b, "after")); n != 200 {
		t.Fatalf("B holds %d of A's 200 new messages", n)
	}
	if n := len(holds(t, b, "before")); n != 300 {
		t.Fatalf("B holds %d of A's 300 old messages", n)
	}
	checkNoDuplicates(t, b)
	if d := a.dest(t, "B"); d.State != "sync" {
		t.Fatalf("A's destination B: %+v", d)
	}
}

// copyDir copies a data directory (regular files only).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoredSourceIsAFork: A's data directory is copied, A runs on,
// stops, the old copy is put back and A restarts. B holds records of A's
// journal that the restored A does not: the link refuses A's stream (a
// fork), both sides log it once, stat shows it, no sync ack passes through
// it, and it does not resume on its own, however often the link
// reconnects. repl-reset (ResetPeer) on B resolves it.
func TestRestoredSourceIsAFork(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	o := nodeOpts{downgrade: time.Minute}
	b := startNode(t, "B", o, "A,async")
	bdir := b.dir
	o.listen = "-"
	a := startNode(t, "A", o, "B="+b.repl)
	adir := a.dir
	a.waitState(t, "B", "sync", 5*time.Second)
	publishAll(t, ctx, []pubPlan{{name: "p1", to: a, n: 50}}, nil)
	waitQuiet(t, 10*time.Second, map[*node]uint64{b: 50}, a, b)
	a.srv.Close()
	old := t.TempDir()
	copyDir(t, adir, old)

	o.dir = adir
	a = startNode(t, "A", o, "B="+b.repl)
	publishAll(t, ctx, []pubPlan{{name: "p2", to: a, n: 50}}, nil)
	waitQuiet(t, 10*time.Second, map[*node]uint64{b: 100}, a, b)
	a.srv.Close()

	// Put the old copy back and restart A on it.
	if err := os.RemoveAll(adir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, old, adir)
	a = startNode(t, "A", o, "B="+b.repl)
	a.waitState(t, "B", "fork", 10*time.Second)
	if d := a.dest(t, "B"); !strings.Contains(d.Reason, "seq") {
		t.Fatalf("A's destination B in fork without a reason: %+v", d)
	}
	waitFor(t, 5*time.Second, "B to log the refusal", func() bool { return b.logs.count("refuses", "peer=A") == 1 },
		func() string { return "\nB: " + b.logs.String() })
	// What A published on the copy it lost (p2) is only on B now: B, seeing
	// A's journal end before the stream of it B holds, ships A its journal
	// afresh, and A holds p2's messages again, exactly once (found by the
	// simulator: rsm.LostOwnRecords).
	waitFor(t, 10*time.Second, "A to hold p2's messages again", func() bool { return len(holds(t, a, "p2")) == 50 },
		func() string { return "\nA: " + a.logs.String() + "\nB: " + b.logs.String() })
	if n := b.logs.count("lost records of its own stream"); n == 0 {
		t.Fatalf("B did not say why it ships A its journal afresh:\n%s", b.logs)
	}

	// A sync ack never passes through the refused link.
	c, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("p3"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seq, err := c.Publish(ctx, "id.t", []byte("after the restore"))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	err = c.WaitPersisted(short, seq)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("persisted ack through a forked sync link: %v (destination %+v)", err, a.dest(t, "B"))
	}
	// Reconnecting does not resolve it: cut the link (B closes), it comes
	// back and is refused again, logged once.
	b.srv.Close()
	b = startNode(t, "B", nodeOpts{downgrade: time.Minute, dir: bdir, listen: b.repl}, "A,async")
	waitFor(t, 10*time.Second, "A to reconnect and refuse again", func() bool {
		return a.srv.Replicator().LinkCount() == 1 && b.logs.count("refuses", "peer=A") == 1
	}, func() string { return "\nA: " + a.logs.String() + "\nB: " + b.logs.String() })
	if d := a.dest(t, "B"); d.State != "fork" {
		t.Fatalf("A's destination B after reconnecting: %+v", d)
	}
	if n := len(holds(t, b, "p3")); n != 0 {
		t.Fatalf("B holds %d messages of the forked stream", n)
	}
	if n := a.logs.count("replication fork"); n != 1 {
		t.Fatalf("A logged the fork %d times:\n%s", n, a.logs)
	}

	// The operator resolves it on B, stopped: B takes A's restored stream
	// afresh; what B held stays exactly once, the waiting ack comes.
	b.srv.Close()
	if ok, err := replicate.ResetPeer(bdir, "A"); !ok || err != nil {
		t.Fatalf("ResetPeer: %v, %v", ok, err)
	}
	b = startNode(t, "B", nodeOpts{downgrade: time.Minute, dir: bdir, listen: b.repl}, "A,async")
	if err := c.WaitPersisted(ctx, seq); err != nil {
		t.Fatalf("ack after the reset: %v (destination %+v)", err, a.dest(t, "B"))
	}
	if d := a.dest(t, "B"); d.State != "sync" || d.Reason != "" {
		t.Fatalf("A's destination B after the reset: %+v", d)
	}
	if a.logs.count("fork resolved") != 1 {
		t.Fatalf("A did not log the resolution:\n%s", a.logs)
	}
	for name, want := range map[string]int{"p1": 50, "p2": 50, "p3": 1} {
		if n := len(holds(t, b, name)); n != want {
			t.Fatalf("B holds %d messages of %s, want %d", n, name, want)
		}
	}
	checkNoDuplicates(t, b)
}

// checkNoDuplicates fails if n's journal holds a (publisher, pubSeq) twice.
func checkNoDuplicates(t *testing.T, n *node) {
	t.Helper()
	seen := map[msgKey]uint64{}
	for _, m := range readJournal(t, n.srv) {
		if prev, dup := seen[m.key]; dup {
			t.Fatalf("%s holds %v twice, at seqs %d and %d", n.name, m.key, prev, m.seq)
		}
		seen[m.key] = m.seq
	}
}

// TestStrictSyncWaitsForDisconnectedPeer: with DowngradeAfter Never a
// disconnected sync destination is never downgraded: a persisted ack waits
// for it however long it is away, and comes once it is back and holds the
// message.
func TestStrictSyncWaitsForDisconnectedPeer(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	o := nodeOpts{downgrade: replicateNever}
	b := startNode(t, "B", o, "A,async")
	bdir, baddr := b.dir, b.repl
	o.listen = "-"
	a := startNode(t, "A", o, "B="+b.repl)
	a.waitState(t, "B", "sync", 5*time.Second)
	b.srv.Close()
	waitFor(t, 5*time.Second, "A to see B gone", func() bool { return !a.dest(t, "B").Connected })

	c, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("strict"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seq, err := c.Publish(ctx, "id.t", []byte("wait for B"))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	err = c.WaitPersisted(short, seq)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("strict sync: ack while B is away: %v (destination %+v)", err, a.dest(t, "B"))
	}
	if d := a.dest(t, "B"); d.State != "sync" {
		t.Fatalf("strict sync destination: %+v", d)
	}
	b = startNode(t, "B", nodeOpts{downgrade: replicateNever, dir: bdir, listen: baddr}, "A,async")
	if err := c.WaitPersisted(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if !holds(t, b, "strict")[seq] {
		t.Fatal("ack came but B lacks the message")
	}
}

// TestRestartHoldsAcksForSyncPeers: an instance restarting while its sync
// peer is away holds acks until the peer is reached or the downgrade age
// has passed; then the peer is downgraded and acks flow.
func TestRestartHoldsAcksForSyncPeers(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	a := startNode(t, "A", nodeOpts{listen: "-", downgrade: 3 * time.Second}, "B="+freeAddr(t))
	c, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("early"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	seq, err := c.Publish(ctx, "id.t", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	err = c.WaitPersisted(short, seq)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ack %v after a restart with the sync peer never reached: %v (destination %+v)", time.Since(start), err, a.dest(t, "B"))
	}
	if err := c.WaitPersisted(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if d := a.dest(t, "B"); d.State != "downgraded" {
		t.Fatalf("destination B after the downgrade age: %+v", d)
	}
}

// TestDifferentMaxFrame: A takes frames far larger than B's link limit. A
// record too large for B is skipped for B (counted, logged once) instead of
// wedging the link; the messages after it arrive. MaxRecord reports B's
// limit while B is a sync destination.
func TestDifferentMaxFrame(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	b := startNode(t, "B", nodeOpts{}, "A,async")
	a := startNode(t, "A", nodeOpts{listen: "-", maxFrame: 16 << 20}, "B="+b.repl+",async", "C="+freeAddr(t)+",async")
	waitFor(t, 5*time.Second, "A's link to B", func() bool { return a.dest(t, "B").Connected })
	c, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("big"), client.WithMaxFrame(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, size := range []int{100, 10 << 20, 200, 9 << 20, 300} {
		if _, err := c.Publish(ctx, "big.t", make([]byte, size)); err != nil {
			t.Fatalf("publish %d (%d bytes): %v", i, size, err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B to get the small messages", func() bool { return b.stats().Stored == 3 },
		func() string { return "\nA: " + a.logs.String() })
	waitFor(t, 5*time.Second, "A to count the skipped records", func() bool {
		d := a.dest(t, "B")
		return d.SkippedTooLarge == 2 && d.AckedThrough == 5
	}, func() string { return fmt.Sprintf("\n%+v\nA: %s", a.dest(t, "B"), a.logs) })
	if n := a.logs.count("too large", "peer=B"); n != 1 {
		t.Fatalf("A logged %d too-large skips for B, want 1:\n%s", n, a.logs)
	}
	// (The link may go down and up on a loaded machine, a heartbeat late
	// while A takes the large frames: that is no wedge. A frame over B's
	// limit would be.)
	if n := b.logs.count("frame too large"); n != 0 {
		t.Fatalf("B refused %d frames as too large:\n%s", n, b.logs)
	}
	if a.srv.Replicator().MaxRecord() != 0 {
		t.Fatalf("MaxRecord %d with no sync destination", a.srv.Replicator().MaxRecord())
	}
}

// TestHoldAlarm: a destination that stays away makes the retention hold
// grow; past HoldAlarmBytes it is logged (once, not on every check) and
// flagged in stat, and the flag clears once the destination has caught up.
func TestHoldAlarm(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	baddr := freeAddr(t)
	a := startNode(t, "A", nodeOpts{listen: "-", holdAlarm: 64 << 10}, "B="+baddr+",async")
	plan := pubPlan{name: "hold", to: a, n: 400}
	publishAll(t, ctx, []pubPlan{plan}, nil) // ~60 KB of payload plus 400 headers: over 64 KiB
	waitFor(t, 5*time.Second, "the hold alarm", func() bool { d := a.dest(t, "B"); return d.HoldAlarm && d.HoldBytes > 64<<10 },
		func() string { return fmt.Sprintf("\n%+v", a.dest(t, "B")) })
	// Still one warning after further checks: more messages, and a hold
	// seen to have grown since (so a check ran while the alarm was on).
	held := a.dest(t, "B").HoldBytes
	publishAll(t, ctx, []pubPlan{{name: "hold2", to: a, n: 100}}, nil)
	waitFor(t, 5*time.Second, "a later hold check", func() bool { return a.dest(t, "B").HoldBytes > held })
	if n := a.logs.count("retention hold alarm:"); n != 1 {
		t.Fatalf("hold alarm logged %d times:\n%s", n, a.logs)
	}
	b := startNode(t, "B", nodeOpts{listen: baddr}, "A,async")
	waitFor(t, 10*time.Second, "the alarm to clear", func() bool { d := a.dest(t, "B"); return !d.HoldAlarm && d.AckedThrough == 500 },
		func() string { return fmt.Sprintf("\n%+v", a.dest(t, "B")) })
	if b.stats().Stored != 500 {
		t.Fatalf("B stored %d", b.stats().Stored)
	}
	// The state flips before the line is logged: wait for the line.
	waitFor(t, 5*time.Second, "the alarm-cleared line", func() bool { return a.logs.count("retention hold alarm cleared") >= 1 })
	if n := a.logs.count("retention hold alarm cleared"); n != 1 {
		t.Fatalf("alarm cleared %d times:\n%s", n, a.logs)
	}
}

// TestBatchesSplitToDestinationLimit: B reads link frames of at most 128
// KiB, A batches up to 1 MiB: A's batches to B are split to fit, B gets
// every message, and a record that alone exceeds B's limit is skipped for B.
func TestBatchesSplitToDestinationLimit(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	b := startNode(t, "B", nodeOpts{linkFrame: 128 << 10}, "A,async")
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+b.repl+",async")
	c, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("split"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 1; i <= 300; i++ {
		size := 10 << 10
		if i == 150 {
			size = 200 << 10 // alone over B's limit
		}
		if _, err := c.Publish(ctx, "split.t", make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B to get the 299 messages that fit", func() bool {
		d := a.dest(t, "B")
		return b.stats().Stored == 299 && d.AckedThrough == 300 && d.SkippedTooLarge == 1
	}, func() string {
		return fmt.Sprintf("\nB stored %d; %+v\nB: %s", b.stats().Stored, a.dest(t, "B"), b.logs)
	})
	if n := b.logs.count("frame too large"); n != 0 {
		t.Fatalf("B refused %d frames as too large:\n%s", n, b.logs)
	}
	if d := a.dest(t, "B"); d.MaxRecord != 128<<10-32 {
		t.Fatalf("B's max record as A sees it: %d", d.MaxRecord)
	}
}

// TestSyncPeerMaxFrameRefusesPublish: a publish a sync destination could
// never store (larger than its max-frame) is refused too-large at the
// source before it is stored, instead of being acked "on every sync peer"
// and then skipped for that peer (issue 10 item 7).
func TestSyncPeerMaxFrameRefusesPublish(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	b := startNode(t, "B", nodeOpts{}, "A,async")
	a := startNode(t, "A", nodeOpts{listen: "-", maxFrame: 16 << 20}, "B="+b.repl+",sync")
	waitFor(t, 5*time.Second, "A's sync link to B", func() bool {
		return a.dest(t, "B").State == "sync" && a.srv.Replicator().MaxRecord() > 0
	})
	var mu sync.Mutex
	refused := map[uint64]wire.Code{}
	c, err := client.Connect(ctx, a.srv.Addr().String(), client.WithName("big-sync"), client.WithMaxFrame(16<<20),
		client.WithFailedWriteHandler(func(seq uint64, code wire.Code, _ string) {
			mu.Lock()
			refused[seq] = code
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, size := range []int{100, 10 << 20, 200} {
		if _, err := c.Publish(ctx, "big.t", make([]byte, size)); err != nil {
			t.Fatalf("publish %d (%d bytes): %v", i, size, err)
		}
	}
	c.Flush(ctx)
	waitFor(t, 10*time.Second, "the refusal of message 2", func() bool { mu.Lock(); defer mu.Unlock(); return len(refused) == 1 })
	mu.Lock()
	if refused[2] != wire.CodeTooLarge {
		t.Fatalf("refusals %v, want message 2 too-large", refused)
	}
	mu.Unlock()
	waitFor(t, 10*time.Second, "B to hold the two small messages", func() bool { return b.stats().Stored == 2 })
	if st := a.stats(); st.Stored != 2 || st.Refused != 1 {
		t.Fatalf("A stored %d refused %d, want 2 and 1", st.Stored, st.Refused)
	}
}
