package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemhq/tandem/internal/enginetest"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// testEngine is the backend the in-process servers use: TestMain runs the
// suite once per backend.
var testEngine string

func TestMain(m *testing.M) {
	code := enginetest.Main(m, "client", func(e string) { testEngine = e })
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func connect(t testing.TB, addr string, opts ...Option) *Client {
	t.Helper()
	c, err := Connect(ctxT(t), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ackLog records ack handler calls.
type ackLog struct {
	mu   sync.Mutex
	seqs []uint64
	errs []error
}

func (l *ackLog) handle(seq uint64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seqs = append(l.seqs, seq)
	l.errs = append(l.errs, err)
}

func (l *ackLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seqs)
}

func TestPublishPersistedAcksInOrder(t *testing.T) {
	s := newFakeServer(t)
	var log ackLog
	c := connect(t, s.addr(), WithName("p1"), WithAckHandler(log.handle))
	ctx := ctxT(t)
	if c.PersistedSeq() != 0 || c.Instance() != "fake-1" {
		t.Fatalf("fresh client: persisted %d instance %q", c.PersistedSeq(), c.Instance())
	}
	const n = 1000
	for i := 1; i <= n; i++ {
		seq, err := c.Publish(ctx, "orders", []byte(fmt.Sprint("m", i)))
		if err != nil || seq != uint64(i) {
			t.Fatalf("publish %d: seq %d err %v", i, seq, err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.PersistedSeq(); got != n {
		t.Fatalf("PersistedSeq %d after flush, want %d", got, n)
	}
	if s.stored() != n {
		t.Fatalf("server stored %d", s.stored())
	}
	if err := c.WaitPersisted(ctx, n); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.seqs) != n {
		t.Fatalf("%d ack callbacks, want %d", len(log.seqs), n)
	}
	for i, s := range log.seqs {
		if s != uint64(i+1) || log.errs[i] != nil {
			t.Fatalf("callback %d: seq %d err %v", i, s, log.errs[i])
		}
	}
}

func TestSequenceContinuesAfterLogon(t *testing.T) {
	s := newFakeServer(t)
	ctx := ctxT(t)
	c := connect(t, s.addr(), WithName("again"))
	for range 5 {
		if _, err := c.Publish(ctx, "t", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err after Close: %v", c.Err())
	}
	if _, err := c.Publish(ctx, "t", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	c2 := connect(t, s.addr(), WithName("again"))
	if c2.LastPublished() != 5 || c2.PersistedSeq() != 5 {
		t.Fatalf("after re-logon: last %d persisted %d", c2.LastPublished(), c2.PersistedSeq())
	}
	seq, err := c2.Publish(ctx, "t", []byte("y"))
	if err != nil || seq != 6 {
		t.Fatalf("first publish after re-logon: %d %v", seq, err)
	}
	if err := c2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s.stored() != 6 {
		t.Fatalf("stored %d, want 6", s.stored())
	}
}

func TestFlushWaitsForPersistence(t *testing.T) {
	s := newFakeServer(t)
	var log ackLog
	c := connect(t, s.addr(), WithAckHandler(log.handle))
	ctx := ctxT(t)
	s.setHold(true)
	for range 3 {
		if _, err := c.Publish(ctx, "t", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Flush(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush with acks held: %v, want deadline exceeded", err)
	}
	if c.PersistedSeq() != 0 || log.len() != 0 {
		t.Fatalf("persisted %d, %d callbacks before the server persisted anything", c.PersistedSeq(), log.len())
	}
	done := make(chan error, 1)
	go func() { done <- c.Flush(ctx) }()
	eventually(t, "server to see the flush", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for fc := range s.conns {
			if len(fc.heldFlush) > 0 {
				return true
			}
		}
		return false
	})
	s.setHold(false)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.PersistedSeq() != 3 || log.len() != 3 {
		t.Fatalf("after flush: persisted %d, %d callbacks", c.PersistedSeq(), log.len())
	}
}

func TestWindowBlocksPublish(t *testing.T) {
	s := newFakeServer(t)
	c := connect(t, s.addr(), WithWindow(4))
	ctx := ctxT(t)
	s.setHold(true)
	for i := range 4 {
		if _, err := c.Publish(ctx, "t", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.Publish(short, "t", []byte("5")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish into a full window: %v, want deadline exceeded", err)
	}
	type res struct {
		seq uint64
		err error
	}
	done := make(chan res, 1)
	go func() {
		seq, err := c.Publish(ctx, "t", []byte("5"))
		done <- res{seq, err}
	}()
	eventually(t, "server to receive the first four", func() bool { return s.publishes.Load() == 4 })
	select {
	case r := <-done:
		t.Fatalf("publish returned %v before any ack", r)
	default:
	}
	s.setHold(false)
	r := <-done
	if r.err != nil || r.seq != 5 {
		t.Fatalf("blocked publish: %d %v", r.seq, r.err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRefusedPublish(t *testing.T) {
	s := newFakeServer(t)
	s.refuse[2] = wire.CodeStorage
	var log ackLog
	c := connect(t, s.addr(), WithAckHandler(log.handle))
	ctx := ctxT(t)
	for range 3 {
		if _, err := c.Publish(ctx, "t", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Flush(ctx)
	if !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("Flush after a refusal: %v", err)
	}
	var se *ServerError
	if !errors.As(err, &se) || se.Code != wire.CodeStorage {
		t.Fatalf("Flush error %v is not a storage ServerError", err)
	}
	if err := c.WaitPersisted(ctx, 2); !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("WaitPersisted(2): %v", err)
	}
	if err := c.WaitPersisted(ctx, 3); err != nil {
		t.Fatalf("WaitPersisted(3): %v", err)
	}
	if c.Refused() != 1 {
		t.Fatalf("Refused %d", c.Refused())
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	got := map[uint64]error{}
	for i, s := range log.seqs {
		if _, dup := got[s]; dup {
			t.Fatalf("seq %d reported twice", s)
		}
		got[s] = log.errs[i]
	}
	if len(got) != 3 || got[1] != nil || got[3] != nil || !errors.Is(got[2], ErrNotPersisted) {
		t.Fatalf("ack callbacks: %v", got)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	s := newFakeServer(t)
	errc := make(chan error, 1)
	c := connect(t, s.addr(), WithHeartbeat(20*time.Millisecond), WithErrorHandler(func(err error) { errc <- err }))
	if c.Heartbeat() != 20*time.Millisecond {
		t.Fatalf("granted %v", c.Heartbeat())
	}
	s.silent.Store(true)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client did not notice a silent server")
	}
	if err := c.Err(); !errors.Is(err, ErrHeartbeatTimeout) || !errors.Is(err, ErrDisconnected) {
		t.Fatalf("Err %v, want heartbeat timeout", err)
	}
	if err := <-errc; !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("error handler got %v", err)
	}
	if _, err := c.Publish(ctxT(t), "t", nil); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("publish on a dead connection: %v", err)
	}
}

func TestHeartbeatsKeepIdleConnectionAlive(t *testing.T) {
	s := newFakeServer(t)
	// 100ms: the fake server closes a connection silent for two intervals,
	// and on a loaded 2-core machine under -race a 30ms interval's 60ms
	// was sometimes less than one scheduling delay. Ten client heartbeats
	// still span well over two intervals.
	c := connect(t, s.addr(), WithHeartbeat(100*time.Millisecond))
	eventually(t, "ten heartbeats from the client", func() bool {
		if err := c.Err(); err != nil {
			t.Fatalf("idle connection died after %d heartbeats: %v", s.heartbeats.Load(), err)
		}
		return s.heartbeats.Load() >= 10
	})
	if err := c.Err(); err != nil {
		t.Fatalf("idle connection died: %v", err)
	}
	if _, err := c.Stats(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestServerErrorFrame(t *testing.T) {
	s := newFakeServer(t)
	var log ackLog
	c := connect(t, s.addr(), WithAckHandler(log.handle))
	s.setHold(true)
	if _, err := c.Publish(ctxT(t), "t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "publish to arrive", func() bool { return s.publishes.Load() == 1 })
	s.kill(wire.CodeShutdown, "going down")
	<-c.Done()
	err := c.Err()
	var se *ServerError
	if !errors.Is(err, ErrDisconnected) || !errors.As(err, &se) || se.Code != wire.CodeShutdown || se.Text != "going down" {
		t.Fatalf("Err %v, want a disconnect carrying the shutdown ServerError", err)
	}
	if log.len() != 1 || !errors.Is(log.errs[0], ErrDisconnected) {
		t.Fatalf("outstanding publish not reported as lost: %v", log.errs)
	}
}

func TestLogonRefused(t *testing.T) {
	s := newFakeServer(t)
	for _, tc := range []struct {
		code wire.Code
		want error
	}{{wire.CodeAuth, ErrAuth}, {wire.CodeVersion, ErrVersion}} {
		s.mu.Lock()
		s.logonError = tc.code
		s.mu.Unlock()
		_, err := Connect(ctxT(t), s.addr())
		if !errors.Is(err, tc.want) {
			t.Fatalf("logon refused with %v: got %v", tc.code, err)
		}
	}
	s.mu.Lock()
	s.logonError = 0
	s.mu.Unlock()
	connect(t, s.addr(), WithName("dup"))
	if _, err := Connect(ctxT(t), s.addr(), WithName("dup")); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second logon with one name: %v", err)
	}
}

func publishN(t testing.TB, c *Client, topic string, from, to int) {
	t.Helper()
	ctx := ctxT(t)
	for i := from; i <= to; i++ {
		if _, err := c.Publish(ctx, topic, []byte(fmt.Sprintf("%s-%d", topic, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func recv(t testing.TB, sub *Subscription) *Message {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatalf("subscription closed: %v", sub.Err())
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

func TestSubscribeReplayThenLiveInOrder(t *testing.T) {
	s := newFakeServer(t)
	pub := connect(t, s.addr(), WithName("pub"))
	for i := 1; i <= 20; i++ {
		publishN(t, pub, "a.x", i, i)
		publishN(t, pub, "b.y", i, i)
	}
	sc := connect(t, s.addr(), WithName("sub"))
	sub, err := sc.Subscribe(ctxT(t), "a.", Prefix(), From(Epoch))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	check := func(i int) *Message {
		m := recv(t, sub)
		if string(m.Topic) != "a.x" || string(m.Payload) != fmt.Sprintf("a.x-%d", i) || m.SubID != sub.ID {
			t.Fatalf("message %d: %q %q sub %d", i, m.Topic, m.Payload, m.SubID)
		}
		if m.Seq <= last || m.Bookmark.Seq != m.Seq || m.Bookmark.Publisher != record.ID("pub") || m.Bookmark.PubSeq == 0 {
			t.Fatalf("message %d: seq %d after %d, bookmark %v", i, m.Seq, last, m.Bookmark)
		}
		if time.Since(m.Time) > time.Minute || m.Time.After(time.Now()) {
			t.Fatalf("message time %v", m.Time)
		}
		last = m.Seq
		return m
	}
	for i := 1; i <= 20; i++ {
		check(i)
	}
	publishN(t, pub, "a.x", 21, 30)
	for i := 21; i <= 30; i++ {
		check(i)
	}
	if err := sub.Unsubscribe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("C not closed after Unsubscribe")
	}
	if sub.Err() != nil {
		t.Fatalf("Err after Unsubscribe: %v", sub.Err())
	}
}

func TestSubscribeFromBookmarkAndHandler(t *testing.T) {
	s := newFakeServer(t)
	pub := connect(t, s.addr(), WithName("pub"))
	publishN(t, pub, "t", 1, 10)
	sc := connect(t, s.addr(), WithName("sub"))
	first, err := sc.Subscribe(ctxT(t), "t", From(Epoch))
	if err != nil {
		t.Fatal(err)
	}
	var bm record.Bookmark
	for range 4 {
		bm = recv(t, first).Bookmark
	}
	var mu sync.Mutex
	var got []string
	sub, err := sc.Subscribe(ctxT(t), "t", From(Bookmark(bm)), WithHandler(func(m *Message) {
		mu.Lock()
		got = append(got, string(m.Payload)) // copies
		mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	if sub.C != nil {
		t.Fatal("handler subscription has a channel")
	}
	eventually(t, "six messages after the bookmark", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 6
	})
	mu.Lock()
	for i, p := range got {
		if want := fmt.Sprintf("t-%d", i+5); p != want {
			t.Fatalf("message %d after bookmark %v: %q, want %q", i, bm, p, want)
		}
	}
	mu.Unlock()
}

func TestSubscriptionRefused(t *testing.T) {
	s := newFakeServer(t)
	c := connect(t, s.addr())
	ctx := ctxT(t)
	if _, err := c.Subscribe(ctx, "a(", Regex()); !errors.Is(err, ErrBadPattern) {
		t.Fatalf("bad regex: %v", err)
	}
	if _, err := c.Subscribe(ctx, "t", From(Bookmark(record.Bookmark{Publisher: 1, PubSeq: 9, Seq: 9}))); !errors.Is(err, ErrBadBookmark) {
		t.Fatalf("unknown bookmark: %v", err)
	}
	if _, err := c.Subscribe(ctx, "", From(Epoch)); !errors.Is(err, ErrBadTopic) {
		t.Fatalf("empty topic: %v", err)
	}
	if _, err := c.Subscribe(ctx, "^t$", Regex()); err != nil {
		t.Fatalf("the connection is still usable: %v", err)
	}
}

func TestUnsubscribeDropsLateDeliveries(t *testing.T) {
	s := newFakeServer(t)
	s.late = 5
	pub := connect(t, s.addr(), WithName("pub"))
	publishN(t, pub, "t", 1, 3)
	sc := connect(t, s.addr(), WithName("sub"))
	var mu sync.Mutex
	n := 0
	sub, err := sc.Subscribe(ctxT(t), "t", From(Epoch), WithHandler(func(*Message) { mu.Lock(); n++; mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "replay", func() bool { mu.Lock(); defer mu.Unlock(); return n == 3 })
	// The fake sends five deliveries between the Unsubscribe and its ack;
	// the reader handles them before the ack that completes Unsubscribe.
	if err := sub.Unsubscribe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 3 {
		t.Fatalf("%d deliveries, want 3: late ones were not dropped", n)
	}
}

func TestStats(t *testing.T) {
	s := newFakeServer(t)
	c := connect(t, s.addr())
	publishN(t, c, "x", 1, 7)
	st, err := c.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.Instance != "fake-1" || st.Stored != 7 || st.Connections != 1 || len(st.Topics) != 1 || st.Topics[0].Messages != 7 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLargeMessagesGrowReadBuffer(t *testing.T) {
	s := newFakeServer(t)
	pub := connect(t, s.addr(), WithName("pub"))
	sc := connect(t, s.addr(), WithName("sub"))
	sub, err := sc.Subscribe(ctxT(t), "big", From(Now))
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 200_000) // 3.2 MB, > read buffer
	ctx := ctxT(t)
	for i := range 3 {
		big[0] = byte('A' + i)
		if _, err := pub.Publish(ctx, "big", big); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		m := recv(t, sub)
		if len(m.Payload) != len(big) || m.Payload[0] != byte('A'+i) || !bytes.Equal(m.Payload[1:], big[1:]) {
			t.Fatalf("big message %d corrupted (%d bytes)", i, len(m.Payload))
		}
	}
	tooBig := make([]byte, wire.DefaultMaxFrame)
	if _, err := pub.Publish(ctx, "big", tooBig); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized publish: %v", err)
	}
}

func TestCloseReportsUnacked(t *testing.T) {
	s := newFakeServer(t)
	var log ackLog
	c := connect(t, s.addr(), WithAckHandler(log.handle))
	s.setHold(true)
	for range 3 {
		if _, err := c.Publish(ctxT(t), "t", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if log.len() != 3 {
		t.Fatalf("%d callbacks after Close, want 3", log.len())
	}
	for _, err := range log.errs {
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("unacked at Close reported as %v", err)
		}
	}
	// The graceful close sent what was buffered.
	eventually(t, "buffered publishes to reach the server", func() bool { return s.publishes.Load() == 3 })
}

func TestChannelBackpressure(t *testing.T) {
	s := newFakeServer(t)
	pub := connect(t, s.addr(), WithName("pub"))
	sc := connect(t, s.addr(), WithName("sub"))
	sub, err := sc.Subscribe(ctxT(t), "t", WithBuffer(2))
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, pub, "t", 1, 50)
	// Nothing read yet: the reader holds at most the channel's two plus the
	// one it is blocked on; the rest waits in the socket.
	eventually(t, "channel to fill", func() bool { return len(sub.C) == 2 })
	for i := 1; i <= 50; i++ {
		if m := recv(t, sub); string(m.Payload) != fmt.Sprintf("t-%d", i) {
			t.Fatalf("message %d: %q", i, m.Payload)
		}
	}
}

// sink is a minimal server for allocation tests and benchmarks: it logs on
// every client, then reads and acks cumulatively (persisted, flushed)
// without allocating per frame.
type sink struct {
	ln net.Listener
	wg sync.WaitGroup
}

func newSink(t testing.TB) *sink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go s.serve(nc)
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *sink) serve(nc net.Conn) {
	defer s.wg.Done()
	defer nc.Close()
	buf := make([]byte, 1<<20)
	out := make([]byte, 0, 4096)
	start, end := 0, 0
	var highest uint64
	for {
		n, err := nc.Read(buf[end:])
		if err != nil {
			return
		}
		end += n
		out = out[:0]
		acked := highest
		for {
			f, n, err := wire.Split(buf[start:end], len(buf))
			if err != nil {
				return
			}
			if n == 0 {
				break
			}
			start += n
			switch f.Type {
			case wire.TypeLogon:
				out = wire.AppendLogonReply(out, &wire.LogonReply{Version: 1, Instance: []byte("sink")})
			case wire.TypePublish:
				var p wire.Publish
				wire.DecodePublish(f.Body, &p)
				highest = p.PubSeq
			case wire.TypeFlush:
				tok, _ := wire.DecodeFlush(f.Body)
				out = wire.AppendAck(out, wire.AckKindPersisted, 0, highest, "")
				acked = highest
				out = wire.AppendAck(out, wire.AckKindFlushed, 0, tok, "")
			}
		}
		if highest > acked {
			out = wire.AppendAck(out, wire.AckKindPersisted, 0, highest, "")
		}
		if len(out) > 0 {
			if _, err := nc.Write(out); err != nil {
				return
			}
		}
		copy(buf, buf[start:end])
		end -= start
		start = 0
	}
}

func TestPublishDoesNotAllocate(t *testing.T) {
	s := newSink(t)
	c := connect(t, s.ln.Addr().String(), WithHeartbeat(0))
	ctx := context.Background()
	payload := make([]byte, 128)
	for range 10000 { // warm up: both write buffers at full size
		c.Publish(ctx, "alloc.test", payload)
	}
	allocs := testing.AllocsPerRun(20000, func() {
		if _, err := c.Publish(ctx, "alloc.test", payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Publish allocates %v times per call", allocs)
	}
	if err := c.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// testDeliverConn is a conn with no socket, whose dispatch feeds a Client.
func testDeliverConn(t testing.TB, f func(*Message)) (*conn, wire.Frame) {
	c := &Client{cfg: defaultConfig(), subs: map[uint32]*Subscription{}, flushes: map[uint64]chan error{}, done: make(chan struct{})}
	cn := &conn{h: c, done: make(chan struct{}), maxFrame: wire.DefaultMaxFrame}
	c.conn = cn
	c.subs[7] = &Subscription{ID: 7, c: c, handler: f, stop: make(chan struct{}), done: make(chan struct{})}
	rec := record.Append(nil, &record.Header{Seq: 42, Time: 1, Publisher: 3, PubSeq: 9}, []byte("prices.EURUSD"), make([]byte, 128))
	frame := wire.AppendDeliver(nil, 7, rec)
	fr, _, err := wire.Split(frame, wire.DefaultMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	return cn, fr
}

func TestDeliveryDoesNotAllocate(t *testing.T) {
	var got uint64
	cn, fr := testDeliverConn(t, func(m *Message) { got += m.Seq + uint64(len(m.Payload)) })
	allocs := testing.AllocsPerRun(10000, func() {
		if err := cn.dispatch(fr); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("decode+dispatch allocates %v times per delivery", allocs)
	}
	if got == 0 {
		t.Fatal("handler not called")
	}
}

func BenchmarkDeliver(b *testing.B) {
	n := 0
	cn, fr := testDeliverConn(b, func(m *Message) { n += len(m.Payload) })
	b.ReportAllocs()
	b.SetBytes(int64(len(fr.Body)))
	for b.Loop() {
		cn.dispatch(fr)
	}
}

// BenchmarkPublish measures Publish to a local TCP sink that acks
// cumulatively: 128-byte payloads, persisted acks, window 65536.
func BenchmarkPublish(b *testing.B) {
	s := newSink(b)
	c, err := Connect(context.Background(), s.ln.Addr().String(), WithHeartbeat(0))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	payload := make([]byte, 128)
	b.ReportAllocs()
	b.SetBytes(128)
	start := time.Now()
	for b.Loop() {
		if _, err := c.Publish(ctx, "bench.topic", payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
