package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// waitRefusal reads acks until the refusal of pubSeq arrives and returns
// it; persisted acks on the way must not cover pubSeq's neighbours wrongly
// (they are cumulative and may arrive before or after).
func (r *rawClient) waitRefusal(pubSeq uint64) wire.Ack {
	r.t.Helper()
	for {
		f := r.nextSkipping(10 * time.Second)
		if f.Type != wire.TypeAck {
			r.t.Fatalf("waiting for the refusal of %d: got %s %s", pubSeq, f.Type, describe(f))
		}
		var a wire.Ack
		if err := wire.DecodeAck(f.Body, &a); err != nil {
			r.t.Fatal(err)
		}
		if a.Code == 0 {
			continue
		}
		if a.Kind != wire.AckKindPersisted || a.Seq != pubSeq {
			r.t.Fatalf("unexpected refusal %s %d %s: %s", a.Kind, a.Seq, a.Code, a.Text)
		}
		a.Text = bytes.Clone(a.Text)
		return a
	}
}

// Issue 10 §3: a publisher restarted without its store reuses sequences
// for other messages. Before, the server acked them as duplicates of the
// stored ones (the new messages vanished); now each is refused
// sequence-reused, a true re-send is still a duplicate, and the connection
// stays up.
func TestSequenceReusedIsRefused(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("reuser", 0)
	c.publishN("t", "a", 1, 3, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 3)

	c.publishN("t", "a", 2, 1, wire.AckPersisted) // the same message again: a duplicate
	c.waitAck(wire.AckKindPersisted, 2)
	c.publishN("t", "other", 2, 1, wire.AckPersisted) // another message under 2
	a := c.waitRefusal(2)
	if a.Code != wire.CodeSequenceReused || !strings.Contains(string(a.Text), "different topic or payload") {
		t.Fatalf("refusal %s %q", a.Code, a.Text)
	}
	c.send(wire.AppendPublish(nil, 3, wire.AckPersisted, []byte("u"), []byte("a3"))) // other topic, same payload
	if a := c.waitRefusal(3); a.Code != wire.CodeSequenceReused {
		t.Fatalf("topic change: %s", a.Code)
	}
	c.publishN("t", "a", 4, 1, wire.AckPersisted) // the connection is still up
	c.waitAck(wire.AckKindPersisted, 4)
	st := s.Stats()
	if st.Conflicts != 2 || st.Duplicates != 1 || st.Stored != 4 || st.Refused != 2 {
		t.Fatalf("stats: conflicts %d duplicates %d stored %d refused %d", st.Conflicts, st.Duplicates, st.Stored, st.Refused)
	}

	// The digests are rebuilt from the journal at restart.
	c.c.Close()
	dir := s.cfg.DataDir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = testServer(t, dir)
	defer s.Close()
	c = dialRaw(t, s)
	c.logon("reuser", 0)
	c.publishN("t", "b", 1, 1, wire.AckPersisted)
	if a := c.waitRefusal(1); a.Code != wire.CodeSequenceReused {
		t.Fatalf("after restart: %s", a.Code)
	}
}

// Issue 10 §7: a message that can never be stored (a Publish frame above
// max-frame, an empty topic) is refused for that message with a permanent
// code; the messages around it are stored and the connection stays up.
func TestPoisonMessagesAreRefusedNotFatal(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.MaxFrame = 64 << 10 })
	defer s.Close()
	c := dialRaw(t, s)
	r := c.logon("poison", 0)
	if r.Version != wire.Version2 || r.MaxFrame != 64<<10 || r.MaxTopic != 1024 {
		t.Fatalf("logon reply limits: version %d max-frame %d max-topic %d", r.Version, r.MaxFrame, r.MaxTopic)
	}
	c.publishN("t", "good", 1, 2, wire.AckPersisted)
	big := wire.AppendPublish(nil, 3, wire.AckPersisted, []byte("t"), make([]byte, 100_000))
	// Sent in pieces, so the server sees its header alone first.
	c.send(big[:10])
	c.send(big[10:50_000])
	c.send(big[50_000:])
	c.send(wire.AppendPublish(nil, 4, wire.AckPersisted, nil, []byte("no topic")))
	c.publishN("t", "good", 5, 2, wire.AckPersisted)
	if a := c.waitRefusal(3); a.Code != wire.CodeTooLarge || !strings.Contains(string(a.Text), fmt.Sprintf("max-frame %d", 64<<10)) {
		t.Fatalf("oversized: %s %q", a.Code, a.Text)
	}
	if a := c.waitRefusal(4); a.Code != wire.CodeBadTopic {
		t.Fatalf("empty topic: %s %q", a.Code, a.Text)
	}
	c.waitAck(wire.AckKindPersisted, 6)
	if got := s.Journal().LastSeq(); got != 4 {
		t.Fatalf("journal holds %d records, want the 4 good ones", got)
	}
	if st := s.Stats(); st.Connections != 1 || st.Refused != 2 {
		t.Fatalf("connections %d refused %d", st.Connections, st.Refused)
	}
}

// A record larger than a segment holds is refused too-large (the journal's
// ErrTooLarge), not treated as a storage failure.
func TestRecordLargerThanSegmentRefused(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.Journal.SegmentSize = 1 << 20
		c.MaxFrame = 2 << 20 // explicitly above what a segment holds (tests only)
		c.allowMaxFrameAboveSegment = true
	})
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("huge", 0)
	c.send(wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("t"), make([]byte, 1<<20+1)))
	c.publishN("t", "ok", 2, 1, wire.AckPersisted)
	if a := c.waitRefusal(1); a.Code != wire.CodeTooLarge {
		t.Fatalf("%s %q", a.Code, a.Text)
	}
	c.waitAck(wire.AckKindPersisted, 2)
	if err := s.Journal().Err(); err != nil {
		t.Fatalf("journal failed: %v", err)
	}
}

// Issue 10 §8: the logon reply's AckedPubSeq covers only what the ack
// point covers. Before, the HA client was told the highest *stored*
// sequence and dropped messages appended but not yet synced from its
// store. Here the flusher is held (a long sync delay on an injected timer)
// while the publisher's connection is cut between append and sync.
func TestLogonReplyAckedPubSeq(t *testing.T) {
	tm := newManualTimer()
	s := testServer(t, t.TempDir(), func(c *Config) {
		c.Journal.MaxSyncDelay = time.Hour
		c.Journal.NewTimer = func() journal.Timer { return tm }
	})
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("cut", 0)
	c.publishN("t", "m", 1, 5, wire.AckPersisted)
	waitFor(t, func() bool { return s.Journal().LastSeq() == 5 })
	c.c.Close()
	waitFor(t, func() bool { return s.Stats().Connections == 0 })

	c = dialRaw(t, s)
	r := c.logon("cut", 0)
	if r.LastPubSeq != 5 || r.AckedPubSeq != 0 {
		t.Fatalf("before the sync: last %d acked %d, want 5 and 0", r.LastPubSeq, r.AckedPubSeq)
	}
	c.c.Close()
	waitFor(t, func() bool { return s.Stats().Connections == 0 })
	tm.fire()
	waitFor(t, func() bool { return s.Journal().SyncedSeq() == 5 })
	c = dialRaw(t, s)
	if r := c.logon("cut", 0); r.LastPubSeq != 5 || r.AckedPubSeq != 5 {
		t.Fatalf("after the sync: last %d acked %d, want 5 and 5", r.LastPubSeq, r.AckedPubSeq)
	}
}

// The v1 logon reply still decodes for old clients.
func TestLogonVersion1(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	c := dialRaw(t, s)
	c.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1, Name: []byte("old")}))
	f := c.mustNext(5 * time.Second)
	if f.Type != wire.TypeLogonReply || len(f.Body) != 24+len("test") || binary.LittleEndian.Uint16(f.Body) != 1 {
		t.Fatalf("v1 logon reply: %s %d bytes", f.Type, len(f.Body))
	}
}

func TestAckedThroughRule(t *testing.T) {
	p := &publisher{}
	store := func(pubSeq, local uint64) {
		p.add(pubSeq, local)
		p.remember(pubSeq, local, pubSeq)
	}
	for i := uint64(1); i <= 10; i++ {
		store(i, i)
	}
	for _, tc := range []struct{ ack, want uint64 }{{0, 0}, {3, 3}, {10, 10}, {99, 10}} {
		if got := p.ackedThrough(tc.ack); got != tc.want {
			t.Errorf("in order, ack point %d: %d, want %d", tc.ack, got, tc.want)
		}
	}
	store(20, 11) // a gap: the first run stays 1..10
	if got := p.ackedThrough(11); got != 10 {
		t.Errorf("with a gap: %d", got)
	}
	store(15, 12) // a late fill, not yet covered: nothing may be claimed
	if got := p.ackedThrough(11); got != 0 {
		t.Errorf("uncovered out-of-order record: %d, want 0", got)
	}
	if got := p.ackedThrough(12); got != 10 {
		t.Errorf("all covered: %d", got)
	}
	// Beyond the digest window the rule still holds.
	q := &publisher{}
	for i := uint64(1); i <= 3*digestWindow; i++ {
		q.add(i, i)
		q.remember(i, i, i)
	}
	if got := q.ackedThrough(2*digestWindow + 5); got != 2*digestWindow+5 {
		t.Errorf("long run: %d", got)
	}
	if got := q.ackedThrough(5); got != 0 {
		t.Errorf("ack point below the window: %d, want 0 (cannot tell)", got)
	}
	if d, ok := q.digestOf(1); ok {
		t.Errorf("sequence 1 is outside the window, got digest %d", d)
	}
	if d, ok := q.digestOf(3 * digestWindow); !ok || d != 3*digestWindow {
		t.Errorf("newest digest %d %v", d, ok)
	}
}

// manualTimer is a journal.Timer that fires only when told.
type manualTimer struct{ c chan time.Time }

func newManualTimer() *manualTimer { return &manualTimer{c: make(chan time.Time, 1)} }

func (m *manualTimer) C() <-chan time.Time { return m.c }
func (m *manualTimer) Reset(time.Duration) {}
func (m *manualTimer) Stop()               {}
func (m *manualTimer) fire() {
	select {
	case m.c <- time.Now():
	default:
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMaxFrameAboveSegmentIsAConfigError(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), MaxFrame: 2 << 20, Journal: journal.Options{SegmentSize: 1 << 20}, Logger: discardLogger()})
	if err == nil || !strings.Contains(err.Error(), "larger than a journal segment can hold") {
		t.Fatalf("want a start-up error, got %v", err)
	}
	s, err := New(Config{DataDir: t.TempDir(), Journal: journal.Options{SegmentSize: 1 << 20}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := MaxFrameForSegment(1 << 20); s.cfg.MaxFrame != want {
		t.Fatalf("default max-frame with 1 MiB segments: %d, want %d", s.cfg.MaxFrame, want)
	}
}

// Issue 10 §3, replication side: a replicated copy of a stored (publisher,
// pubSeq) with another payload is not stored, not counted as a duplicate,
// but counted as a conflict; a true copy is a duplicate.
func TestConflictingReplicatedRecordNotStored(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("pubA", 0)
	c.publishN("t", "a", 1, 2, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 2)

	mk := func(pubSeq uint64, payload string) record.View {
		h := record.Header{Seq: 7, Time: 1, Origin: record.ID("B"), Publisher: record.ID("pubA"), PubSeq: pubSeq, OriginSeq: 7}
		b := record.Append(nil, &h, []byte("t"), []byte(payload))
		v, _, err := record.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := s.StoreReplicated([]record.View{mk(1, "a1"), mk(2, "diverged"), mk(3, "new")}, record.ID("B")); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Conflicts != 1 || st.Duplicates != 1 || st.Stored != 3 {
		t.Fatalf("conflicts %d duplicates %d stored %d, want 1 1 3", st.Conflicts, st.Duplicates, st.Stored)
	}
}

// BenchmarkMessageDigest is the per-publish cost of the conflict check's
// digest (128-byte payload).
func BenchmarkMessageDigest(b *testing.B) {
	topic, payload := []byte("orders.EURUSD"), make([]byte, 128)
	b.SetBytes(int64(len(topic) + len(payload)))
	var sink uint64
	for i := 0; i < b.N; i++ {
		sink ^= messageDigest(topic, payload)
	}
	_ = sink
}

func TestMessageDigestDoesNotAllocate(t *testing.T) {
	topic, payload := []byte("t"), make([]byte, 128)
	if n := testing.AllocsPerRun(100, func() { messageDigest(topic, payload) }); n != 0 {
		t.Fatalf("messageDigest allocates %v times", n)
	}
}

// checkAddrFree detects a port another socket listens on and takes port 0
// and a free port (it binds without listening: see its comment).
func TestCheckAddrFree(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	busy := ln.Addr().String()
	if err := checkAddrFree(busy); err == nil {
		t.Fatalf("%s is in use, checkAddrFree said free", busy)
	}
	ln.Close()
	if err := checkAddrFree(busy); err != nil {
		t.Fatalf("%s after close: %v", busy, err)
	}
	if err := checkAddrFree("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := checkAddrFree("[::1]:0"); err != nil && !strings.Contains(err.Error(), "address not available") && !strings.Contains(err.Error(), "not supported") {
		t.Fatal(err)
	}
}
