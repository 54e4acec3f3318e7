package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

func TestPublishPersistedThenReplay(t *testing.T) {
	dir := t.TempDir()
	s := testServer(t, dir)
	defer s.Close()

	pub := dialRaw(t, s)
	if r := pub.logon("pub-1", 0); r.LastPubSeq != 0 || string(r.Instance) != "test" {
		t.Fatalf("logon reply %+v", r)
	}
	const n = 5000
	pub.publishN("orders", "m", 1, n, wire.AckPersisted)
	pub.waitAck(wire.AckKindPersisted, n)
	if got := s.Journal().SyncedSeq(); got < n {
		t.Fatalf("persisted ack for %d but journal synced only %d", n, got)
	}

	sub := dialRaw(t, s)
	sub.logon("sub-1", 0)
	if a := sub.subscribe(wire.AppendSubscribe(nil, 7, wire.StartEpoch, wire.MatchExact, []byte("orders"))); a.Code != 0 {
		t.Fatalf("subscribe refused: %s %s", a.Code, a.Text)
	}
	var mid record.Bookmark
	for i := uint64(1); i <= n; i++ {
		d := sub.nextDelivery(5 * time.Second)
		if d.sub != 7 || d.pubSeq != i || d.payload != fmt.Sprint("m", i) || d.topic != "orders" {
			t.Fatalf("delivery %d: %+v", i, d)
		}
		if i == n/2 {
			mid = record.Bookmark{Publisher: record.ID("pub-1"), PubSeq: i, Seq: d.seq}
		}
	}

	// A bookmark subscription starts right after the bookmarked message.
	sub2 := dialRaw(t, s)
	sub2.logon("sub-2", 0)
	sub2.subscribe(wire.AppendSubscribe(nil, 1, wire.StartBookmark, wire.MatchExact, []byte("orders"), mid))
	for i := uint64(n/2 + 1); i <= n; i++ {
		if d := sub2.nextDelivery(5 * time.Second); d.pubSeq != i {
			t.Fatalf("bookmark replay: want pubSeq %d, got %+v", i, d)
		}
	}

	// Live messages follow the replay with no gap and no duplicate.
	pub.publishN("orders", "m", n+1, 10, wire.AckPersisted)
	for i := uint64(n + 1); i <= n+10; i++ {
		if d := sub.nextDelivery(5 * time.Second); d.pubSeq != i {
			t.Fatalf("live: want %d, got %+v", i, d)
		}
		if d := sub2.nextDelivery(5 * time.Second); d.pubSeq != i {
			t.Fatalf("live after bookmark: want %d, got %+v", i, d)
		}
	}
}

func TestSubscribeNowSkipsHistory(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	pub := dialRaw(t, s)
	pub.logon("p", 0)
	pub.publishN("t", "old", 1, 100, wire.AckPersisted)
	pub.waitAck(wire.AckKindPersisted, 100)

	sub := dialRaw(t, s)
	sub.logon("s", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartNow, wire.MatchExact, []byte("t")))
	pub.publishN("t", "new", 101, 3, wire.AckPersisted)
	for i := uint64(101); i <= 103; i++ {
		if d := sub.nextDelivery(5 * time.Second); d.pubSeq != i || d.payload != fmt.Sprint("new", i) {
			t.Fatalf("want new %d, got %+v", i, d)
		}
	}
}

func TestDeduplicationAndRestart(t *testing.T) {
	dir := t.TempDir()
	s := testServer(t, dir)
	pub := dialRaw(t, s)
	pub.logon("dup", 0)
	pub.publishN("t", "a", 1, 10, wire.AckPersisted)
	pub.publishN("t", "a", 5, 6, wire.AckPersisted) // 5..10 again: acked, not stored
	pub.waitAck(wire.AckKindPersisted, 10)
	pub.publishN("t", "late", 20, 1, wire.AckPersisted) // a gap: 11..19 never sent
	pub.waitAck(wire.AckKindPersisted, 20)
	pub.publishN("t", "late", 15, 1, wire.AckPersisted) // older than the newest, never stored: stored
	pub.waitAck(wire.AckKindPersisted, 15)
	if got := s.Journal().LastSeq(); got != 12 {
		t.Fatalf("journal holds %d records, want 12 (10 + 20 + 15)", got)
	}
	if st := s.Stats(); st.Duplicates != 6 || st.Stored != 12 {
		t.Fatalf("stats stored=%d duplicates=%d", st.Stored, st.Duplicates)
	}
	pub.c.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The de-duplication state is rebuilt from the journal.
	s = testServer(t, dir)
	defer s.Close()
	pub = dialRaw(t, s)
	if r := pub.logon("dup", 0); r.LastPubSeq != 20 {
		t.Fatalf("after restart LastPubSeq = %d, want 20", r.LastPubSeq)
	}
	pub.publishN("t", "a", 1, 10, wire.AckPersisted)    // 1..10 again, the same messages: duplicates
	pub.publishN("t", "b", 11, 4, wire.AckPersisted)    // 11..14 new
	pub.publishN("t", "late", 15, 1, wire.AckPersisted) // stored
	pub.publishN("t", "b", 16, 4, wire.AckPersisted)    // 16..19 new
	pub.publishN("t", "late", 20, 1, wire.AckPersisted) // stored
	pub.publishN("t", "b", 21, 1, wire.AckPersisted)    // new
	pub.waitAck(wire.AckKindPersisted, 21)
	if got := s.Journal().LastSeq(); got != 12+9 {
		t.Fatalf("after restart journal holds %d, want 21", got)
	}
	sub := dialRaw(t, s)
	sub.logon("s", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))
	seen := map[uint64]int{}
	for i := 0; i < 21; i++ {
		d := sub.nextDelivery(5 * time.Second)
		seen[d.pubSeq]++
		if d.seq != uint64(i+1) {
			t.Fatalf("delivery %d has seq %d", i, d.seq)
		}
	}
	for p := uint64(1); p <= 21; p++ {
		if seen[p] != 1 {
			t.Fatalf("pubSeq %d stored %d times", p, seen[p])
		}
	}
}

func TestTopicPatterns(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	sub := dialRaw(t, s)
	sub.logon("s", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchPrefix, []byte("fx.")))
	sub.subscribe(wire.AppendSubscribe(nil, 2, wire.StartEpoch, wire.MatchRegex, []byte(`^eq\.(us|eu)$`)))
	if a := sub.subscribe(wire.AppendSubscribe(nil, 3, wire.StartEpoch, wire.MatchRegex, []byte(`(`))); a.Code != wire.CodeBadPattern {
		t.Fatalf("bad regex: got code %s", a.Code)
	}
	if a := sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("x"))); a.Code != wire.CodeSubIDInUse {
		t.Fatalf("reused id: got code %s", a.Code)
	}
	pub := dialRaw(t, s)
	pub.logon("p", 0)
	topics := []string{"fx.eurusd", "eq.us", "fxx", "eq.asia", "fx.usdjpy", "eq.eu", "eq.usa"}
	for i, tp := range topics { // every topic is new when published
		pub.publishN(tp, "x", uint64(i+1), 1, wire.AckNone)
	}
	// Each subscription sees its own matches in journal order.
	got := map[uint32][]string{}
	for i := 0; i < 4; i++ {
		d := sub.nextDelivery(5 * time.Second)
		got[d.sub] = append(got[d.sub], d.topic)
	}
	if fmt.Sprint(got[1]) != "[fx.eurusd fx.usdjpy]" || fmt.Sprint(got[2]) != "[eq.us eq.eu]" {
		t.Fatalf("deliveries by subscription: %v", got)
	}
	sub.send(wire.AppendUnsubscribe(nil, 1))
	sub.waitAck(wire.AckKindUnsubscribed, 1)
	sub.send(wire.AppendUnsubscribe(nil, 1))
	f := sub.nextSkipping(5 * time.Second)
	var a wire.Ack
	wire.DecodeAck(f.Body, &a)
	if a.Kind != wire.AckKindUnsubscribed || a.Code != wire.CodeUnknownSub {
		t.Fatalf("second unsubscribe: %+v", a)
	}
}

func TestFlushAndReceivedAcks(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("f", 0)
	c.publishN("t", "x", 1, 50, wire.AckReceived)
	c.waitAck(wire.AckKindReceived, 50)
	c.publishN("t", "y", 51, 50, wire.AckNone)
	c.send(wire.AppendFlush(nil, 99))
	a := c.waitAck(wire.AckKindFlushed, 99)
	if a.Seq != 99 {
		t.Fatalf("flush token %d", a.Seq)
	}
	if got := s.Journal().SyncedSeq(); got < 100 {
		t.Fatalf("flush answered with only %d synced", got)
	}
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.MaxFrame = 64 << 10 })
	defer s.Close()
	good := dialRaw(t, s)
	good.logon("good", 0)

	cases := []struct {
		name  string
		logon bool
		frame []byte
		code  wire.Code
	}{
		{"publish before logon", false, wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("t"), []byte("x")), wire.CodeNotLoggedOn},
		{"length below header", false, []byte{3, 0, 0, 0, 1, 0, 0, 0}, wire.CodeMalformed},
		{"oversized non-publish", true, append([]byte{0, 0, 0, 1, byte(wire.TypeSubscribe), 0, 0, 0}, make([]byte, 64)...), wire.CodeTooLarge},
		{"oversized before logon", false, append([]byte{0, 0, 0, 1, byte(wire.TypePublish), 0, 0, 0}, make([]byte, 64)...), wire.CodeTooLarge},
		{"unknown type", true, []byte{8, 0, 0, 0, 200, 0, 0, 0}, wire.CodeUnknownFrame},
		{"server frame from client", true, wire.AppendAck(nil, wire.AckKindPersisted, 0, 1, ""), wire.CodeUnknownFrame},
		{"truncated publish body", true, []byte{12, 0, 0, 0, byte(wire.TypePublish), 0, 0, 0, 1, 2, 3, 4}, wire.CodeMalformed},
		{"second logon", true, wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1, Name: []byte("again")}), wire.CodeAlreadyLoggedOn},
		{"bad version", false, wire.AppendLogon(nil, &wire.Logon{MinVersion: 7, MaxVersion: 9, Name: []byte("v")}), wire.CodeVersion},
		{"empty name", false, wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1}), wire.CodeMalformed},
		{"name in use", false, wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1, Name: []byte("good")}), wire.CodeNameInUse},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s)
			if tc.logon {
				c.logon(fmt.Sprint("bad-", i), 0)
			}
			c.send(tc.frame)
			c.expectError(tc.code)
		})
	}
	// The good connection still works and nothing it had acknowledged is lost.
	good.publishN("t", "ok", 1, 3, wire.AckPersisted)
	good.waitAck(wire.AckKindPersisted, 3)
	if st := s.Stats(); st.Connections != 1 {
		t.Fatalf("connections after bad clients: %d", st.Connections)
	}
}

func TestHeartbeats(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.MinHeartbeat = time.Millisecond })
	defer s.Close()
	c := dialRaw(t, s)
	r := c.logon("hb", 20)
	if r.HeartbeatMillis != 20 {
		t.Fatalf("granted heartbeat %d", r.HeartbeatMillis)
	}
	// The server sends heartbeats while idle...
	if f := c.mustNext(2 * time.Second); f.Type != wire.TypeHeartbeat {
		t.Fatalf("want heartbeat, got %s", f.Type)
	}
	// ...and closes us once we are silent for two intervals.
	start := time.Now()
	c.expectError(wire.CodeHeartbeat)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("silent connection closed only after %v", el)
	}
	// A client that keeps sending heartbeats stays up past many intervals
	// (a longer interval here, so a loaded test machine cannot starve us).
	k := dialRaw(t, s)
	k.logon("hb2", 100)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		k.send(wire.AppendHeartbeat(nil))
		f := k.mustNext(time.Second) // the server's own heartbeat paces us
		if f.Type != wire.TypeHeartbeat {
			t.Fatalf("unexpected %s %s", f.Type, describe(f))
		}
	}
	k.send(wire.AppendStatRequest(nil))
	if f := k.nextSkipping(time.Second); f.Type != wire.TypeStatReply {
		t.Fatalf("stat: %s", f.Type)
	}
}

func TestLogonTimeout(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.LogonTimeout = 30 * time.Millisecond })
	defer s.Close()
	c := dialRaw(t, s)
	c.expectError(wire.CodeNotLoggedOn)
}

// A Flush (or duplicate) whose records are all durable already must be
// answered at once, not when the next sync happens to move the ack point.
func TestFlushAfterEverythingSynced(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.Loops = 1 })
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("f", 0)
	c.publishN("t", "x", 1, 10, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 10)
	for i := uint64(1); i <= 5; i++ { // nothing new is appended: the ack point never moves again
		c.send(wire.AppendFlush(nil, i))
		c.waitAck(wire.AckKindFlushed, i)
		c.publishN("t", "x", 1, 10, wire.AckPersisted) // all duplicates
		c.waitAck(wire.AckKindPersisted, 10)
	}
}

// A second instance on a port already served is refused instead of
// silently sharing it through SO_REUSEPORT.
func TestListenAddressInUse(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	other, err := New(Config{Name: "other", Listen: s.Addr().String(), DataDir: t.TempDir(), Engine: testEngine, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second server on %s: %v", s.Addr(), err)
	}
}
