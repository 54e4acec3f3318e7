package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// Tests for the HA client at the edges: the logon reply's sequences,
// permanent refusals, the MaxTotal rule, server errors that mean "go
// elsewhere", generated sub ids and refused re-subscriptions. They run
// against the fake server.

// failedWrites records the failed-write handler's calls.
type failedWrites struct {
	mu    sync.Mutex
	calls []string
}

func (f *failedWrites) handle(seq uint64, code wire.Code, reason string) {
	f.mu.Lock()
	f.calls = append(f.calls, fmt.Sprintf("%d %s %s", seq, code, reason))
	f.mu.Unlock()
}

func (f *failedWrites) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// countingDelay wraps a DelayStrategy and counts NextDelay and Reset calls.
type countingDelay struct {
	DelayStrategy
	n      atomic.Int32
	resets atomic.Int32
}

func (c *countingDelay) Reset() {
	c.resets.Add(1)
	c.DelayStrategy.Reset()
}

func (c *countingDelay) NextDelay(uri string) (time.Duration, error) {
	c.n.Add(1)
	return c.DelayStrategy.NextDelay(uri)
}

// TestHARepublishesAboveAckedPubSeq (issue 10 item 8): the server stored
// 1..10 but its ack point covers only 1..5 (6..10 are not yet on its sync
// peer). After a reconnect the client must keep 6..10 in its store and
// re-publish them, not drop everything up to LastPubSeq.
func TestHARepublishesAboveAckedPubSeq(t *testing.T) {
	s := newFakeServer(t)
	ev := newEvents()
	cfg := haConfig("acked-pub", s.addr())
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.OnState = ev.on
	h := haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	s.setHold(true)
	publishHA(t, h, 1, 10)
	eventually(t, "10 stored", func() bool { return s.stored() == 10 })
	s.set(func(s *fakeServer) { s.acked["acked-pub"] = 5 })
	sentBefore := len(s.seqsSent())
	s.dropConns()
	ev.wait(t, StateConnected, 5*time.Second)
	if n := h.UnpersistedCount(); n != 5 {
		t.Fatalf("after a logon reply with LastPubSeq 10, AckedPubSeq 5: %d messages kept, want 5 (6..10)", n)
	}
	eventually(t, "6..10 re-published", func() bool { return len(s.seqsSent()) >= sentBefore+5 })
	if got := s.seqsSent()[sentBefore:]; !slices.Equal(got, []uint64{6, 7, 8, 9, 10}) {
		t.Fatalf("re-published %v, want [6 7 8 9 10]", got)
	}
	s.setHold(false)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if seq, err := h.Publish(ctxT(t), "d.t", []byte("11")); err != nil || seq != 11 {
		t.Fatalf("next publish: seq %d, %v; want 11", seq, err)
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := s.stored(); n != 11 {
		t.Fatalf("server stores %d, want 11 (duplicates not stored twice)", n)
	}
}

// TestHAPoisonMessageTooLarge (issue 10 item 7 / issue 11 item 4): a
// message larger than the server's announced MaxFrame between good ones is
// reported once to the failed-write handler and dropped; the others are
// persisted, with no reconnect (the fake server, like the old one, ends the
// connection on an oversized frame).
func TestHAPoisonMessageTooLarge(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.maxFrame = 4096 })
	var fw failedWrites
	cfg := haConfig("poison", s.addr())
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.Options = []Option{WithFailedWriteHandler(fw.handle)}
	h := haConnect(t, cfg)
	for i, p := range []string{"a", strings.Repeat("x", 8000), "c"} {
		if seq, err := h.Publish(ctxT(t), "d.t", []byte(p)); err != nil || seq != uint64(i+1) {
			t.Fatalf("publish %d: seq %d, %v", i+1, seq, err)
		}
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed-write handler", func() bool { return len(fw.get()) > 0 })
	if err := h.Flush(ctxT(t)); err != nil { // once more: no second report queued behind
		t.Fatal(err)
	}
	calls := fw.get()
	want := fmt.Sprintf("2 too-large %d bytes > max-frame 4096", wire.PublishOverhead+len("d.t")+8000)
	if len(calls) != 1 || calls[0] != want {
		t.Fatalf("failed writes %q, want [%q]", calls, want)
	}
	if n := s.stored(); n != 2 {
		t.Fatalf("server stores %d, want 2", n)
	}
	if r := h.Reconnects(); r != 0 {
		t.Fatalf("%d reconnects, want 0", r)
	}
	if got := s.seqsSent(); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("sent %v, want [1 3]", got)
	}
}

// TestHAPermanentRefusalReported: a publish the server refuses with a
// permanent code is reported once, removed from the store, and the
// connection goes on; a transient refusal is not reported as failed.
func TestHAPermanentRefusalReported(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.refuse[2] = wire.CodeNotPermitted })
	var fw failedWrites
	var errs []error
	var emu sync.Mutex
	cfg := haConfig("refused", s.addr())
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.Options = []Option{WithFailedWriteHandler(fw.handle)}
	cfg.OnError = func(err error) { emu.Lock(); errs = append(errs, err); emu.Unlock() }
	h := haConnect(t, cfg)
	s.setHold(true) // the refusal arrives before the cumulative ack covers 2
	publishHA(t, h, 1, 3)
	eventually(t, "the failed-write handler", func() bool { return len(fw.get()) > 0 })
	if n := h.UnpersistedCount(); n != 2 {
		t.Fatalf("store keeps %d, want 2 (1 and 3; 2 removed)", n)
	}
	s.setHold(false)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if calls := fw.get(); len(calls) != 1 || calls[0] != "2 not-permitted refused by test" {
		t.Fatalf("failed writes %q", calls)
	}
	if r := h.Reconnects(); r != 0 {
		t.Fatalf("%d reconnects, want 0", r)
	}
	emu.Lock()
	defer emu.Unlock()
	if len(errs) != 0 {
		t.Fatalf("OnError also called (report once): %v", errs)
	}
}

// TestHAPermanentRefusalWithoutHandler: with no failed-write handler the
// refusal goes to OnError, matching the sentinel for its code.
func TestHAPermanentRefusalWithoutHandler(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.refuse[1] = wire.CodeBadTopic })
	errc := make(chan error, 10)
	cfg := haConfig("refused-2", s.addr())
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.OnError = func(err error) { errc <- err }
	h := haConnect(t, cfg)
	publishHA(t, h, 1, 1)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrBadTopic) || !contains(err.Error(), "pubSeq 1") {
			t.Fatalf("OnError got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnError for a refused publish")
	}
}

// TestHAConnectThenDropBoundedByMaxTotal (issue 10 item 7): a server that
// accepts every logon and drops the connection at once must not restart
// the DelayStrategy's budget: the client gives up after MaxTotal.
func TestHAConnectThenDropBoundedByMaxTotal(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.dropAfterLogon = true })
	cfg := haConfig("flap", s.addr())
	cfg.Delay = &FixedDelayStrategy{Delay: 20 * time.Millisecond, MaxTotal: 300 * time.Millisecond}
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	start := time.Now()
	if err := h.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Done():
	case <-time.After(5 * time.Second):
		t.Fatalf("still reconnecting after 5s (%d logons), MaxTotal 300ms", s.logons.Load())
	}
	if err := h.Err(); !errors.Is(err, ErrNoServer) || !errors.Is(err, ErrRetryTimeout) {
		t.Fatalf("stopped with %v", err)
	}
	t.Logf("gave up after %v and %d logons: %v", time.Since(start).Round(time.Millisecond), s.logons.Load(), h.Err())
}

// TestHAStableConnectionResetsBudget: the DelayStrategy is Reset when a
// connection ends only if a message was persisted through it or it stayed
// up for StableAfter; a short connection that persisted nothing is not.
func TestHAStableConnectionResetsBudget(t *testing.T) {
	s := newFakeServer(t)
	ev := newEvents()
	delay := &countingDelay{DelayStrategy: &FixedDelayStrategy{Delay: 5 * time.Millisecond}}
	cfg := haConfig("stable", s.addr())
	cfg.OnState = ev.on
	cfg.Delay = delay
	cfg.StableAfter = time.Hour
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	h := haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	publishHA(t, h, 1, 1)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	s.dropConns() // persisted a message: reset
	ev.wait(t, StateConnected, 5*time.Second)
	if n := delay.resets.Load(); n != 1 {
		t.Fatalf("%d resets after a connection that persisted a message, want 1", n)
	}
	s.dropConns() // short, nothing persisted: no reset
	ev.wait(t, StateConnected, 5*time.Second)
	if n := delay.resets.Load(); n != 1 {
		t.Fatalf("%d resets after a short idle connection, want still 1", n)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("stopped: %v", err)
	}

	// Up for StableAfter: reset.
	s2 := newFakeServer(t)
	ev2 := newEvents()
	delay2 := &countingDelay{DelayStrategy: &FixedDelayStrategy{Delay: 5 * time.Millisecond}}
	cfg = haConfig("stable-2", s2.addr())
	cfg.OnState = ev2.on
	cfg.Delay = delay2
	cfg.StableAfter = 20 * time.Millisecond
	haConnect(t, cfg)
	up := ev2.wait(t, StateConnected, 5*time.Second)
	eventually(t, "StableAfter to pass", func() bool { return time.Since(up.Time) > 2*cfg.StableAfter })
	s2.dropConns()
	ev2.wait(t, StateConnected, 5*time.Second)
	if n := delay2.resets.Load(); n != 1 {
		t.Fatalf("%d resets after a connection up for StableAfter, want 1", n)
	}
}

// TestHAServerGoingAwayFailsOverAtOnce (issue 11 item 5): a storage-failed
// or shutdown Error frame makes the client fail over to the next server at
// once, without first trying the one that is going away again.
func TestHAServerGoingAwayFailsOverAtOnce(t *testing.T) {
	for _, code := range []wire.Code{wire.CodeStorageFailed, wire.CodeShutdown} {
		t.Run(code.String(), func(t *testing.T) {
			a, b := newFakeServer(t), newFakeServer(t)
			b.set(func(s *fakeServer) { s.name = "fake-2" })
			ev := newEvents()
			cfg := haConfig("going-away", a.addr(), b.addr())
			cfg.OnState = ev.on
			cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
			h := haConnect(t, cfg)
			ev.wait(t, StateConnected, 5*time.Second)
			a.kill(code, "going away")
			e := ev.wait(t, StateFailedOver, 2*time.Second)
			if e.URI != b.addr() || e.Instance != "fake-2" {
				t.Fatalf("failed over to %s (%s)", e.URI, e.Instance)
			}
			if n := a.logons.Load(); n != 1 {
				t.Fatalf("%d logons at the server going away, want 1", n)
			}
			publishHA(t, h, 1, 1)
			if err := h.Flush(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestHAStandbyNextServerNotCounted (issue 11 item 5): a standby logon
// refusal sends the client to the next server now, counting neither as a
// failure (MaxFailures 1 would stop it) nor as a delayed attempt.
func TestHAStandbyNextServerNotCounted(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	a.set(func(s *fakeServer) { s.logonError = wire.CodeStandby })
	b.set(func(s *fakeServer) { s.name = "fake-2" })
	ch := NewDefaultServerChooser(a.addr(), b.addr())
	ch.MaxFailures = 1
	delay := &countingDelay{DelayStrategy: &FixedDelayStrategy{Delay: time.Second, MaxTotal: time.Second}}
	cfg := haConfig("standby", a.addr(), b.addr())
	cfg.Chooser, cfg.Delay = ch, delay
	h := haConnect(t, cfg)
	if uri, inst := h.Server(); uri != b.addr() || inst != "fake-2" {
		t.Fatalf("connected to %s (%s), want %s", uri, inst, b.addr())
	}
	if n := delay.n.Load(); n != 1 {
		t.Fatalf("NextDelay asked %d times, want 1 (the standby's answer skips the delay)", n)
	}
}

// TestHAAllStandbyGivesUp: when every server is a standby the client does
// not spin: a round of standbys goes through the DelayStrategy, whose
// MaxTotal ends it.
func TestHAAllStandbyGivesUp(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	for _, s := range []*fakeServer{a, b} {
		s.set(func(s *fakeServer) { s.logonError = wire.CodeStandby })
	}
	cfg := haConfig("standby-2", a.addr(), b.addr())
	cfg.Delay = &FixedDelayStrategy{Delay: 20 * time.Millisecond, MaxTotal: 300 * time.Millisecond}
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	start := time.Now()
	err = h.Connect(ctxT(t))
	el := time.Since(start)
	if !errors.Is(err, ErrNoServer) || !errors.Is(err, ErrStandby) || el > 3*time.Second {
		t.Fatalf("got %v after %v", err, el)
	}
	if n := a.logons.Load() + b.logons.Load(); n != 0 {
		t.Fatalf("%d logons", n)
	}
}

// TestHASubscriptionWithoutIDResumes (issue 11 item 2): an Epoch
// subscription made without WithSubID gets a generated id and resumes after
// a reconnect: messages stored meanwhile are delivered, none twice.
func TestHASubscriptionWithoutIDResumes(t *testing.T) {
	s := newFakeServer(t)
	s.inject("other-pub", "d.t", 1, []byte("1"))
	s.inject("other-pub", "d.t", 2, []byte("2"))
	ev := newEvents()
	cfg := haConfig("gen-sub", s.addr())
	cfg.OnState = ev.on
	h := haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	sub, err := h.Subscribe(ctxT(t), "d.t", From(Epoch))
	if err != nil {
		t.Fatal(err)
	}
	if sub.Name == "" {
		t.Fatal("no generated sub id")
	}
	recv := func(want string) {
		t.Helper()
		select {
		case m, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription closed: %v", sub.Err())
			}
			if string(m.Payload) != want {
				t.Fatalf("got %q, want %q", m.Payload, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no message %q", want)
		}
	}
	recv("1")
	recv("2")
	s.set(func(s *fakeServer) { s.logonError = wire.CodeNameInUse }) // keep it out while 3, 4 arrive
	s.dropConns()
	ev.wait(t, StateDisconnected, 5*time.Second)
	s.inject("other-pub", "d.t", 3, []byte("3"))
	s.inject("other-pub", "d.t", 4, []byte("4"))
	s.set(func(s *fakeServer) { s.logonError = 0 })
	ev.wait(t, StateConnected, 5*time.Second)
	recv("3")
	recv("4")
	s.inject("other-pub", "d.t", 5, []byte("5")) // not delivered live by inject: check nothing else came
	select {
	case m := <-sub.C:
		t.Fatalf("unexpected message %q (bookmark %v)", m.Payload, m.Bookmark)
	case <-time.After(100 * time.Millisecond):
	}
	if d := sub.Duplicates(); d != 2 {
		t.Fatalf("%d duplicates filtered, want 2 (1 and 2 replayed from Epoch)", d)
	}
}

// TestHAResubscribeRefusedEndsSubscription (issue 11 item 2): a
// re-subscription the server refuses ends the HASubscription with the
// error instead of leaving it open and dead.
func TestHAResubscribeRefusedEndsSubscription(t *testing.T) {
	s := newFakeServer(t)
	ev := newEvents()
	cfg := haConfig("resub", s.addr())
	cfg.OnState = ev.on
	h := haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	sub, err := h.Subscribe(ctxT(t), "d.t", From(Now))
	if err != nil {
		t.Fatal(err)
	}
	s.set(func(s *fakeServer) { s.refuseSub = wire.CodeNotPermitted })
	s.dropConns()
	select {
	case <-sub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the refused subscription is still open")
	}
	var se *ServerError
	if err := sub.Err(); !errors.As(err, &se) || se.Code != wire.CodeNotPermitted || !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("subscription ended with %v", err)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("C still open")
	}
}

// TestHAAckInfo (issue 10 item 6): each persisted ack's sync-peer count
// reaches WithAckInfoHandler.
func TestHAAckInfo(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.syncPeers = 2 })
	var mu sync.Mutex
	var top uint64
	var peers int
	cfg := haConfig("ack-info", s.addr())
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.Options = []Option{WithAckInfoHandler(func(seq uint64, n int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil && seq > top {
			top, peers = seq, n
		}
	})}
	h := haConnect(t, cfg)
	publishHA(t, h, 1, 3)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ack info for 3", func() bool { mu.Lock(); defer mu.Unlock(); return top == 3 })
	mu.Lock()
	defer mu.Unlock()
	if peers != 2 {
		t.Fatalf("sync peers %d, want 2", peers)
	}
}

// TestNewMemoryBackedHA: the convenience constructor fills in memory
// stores and keeps given ones.
func TestNewMemoryBackedHA(t *testing.T) {
	h, err := NewMemoryBackedHA(HAConfig{Name: "mem", Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, ok := h.PublishStore().(*MemoryPublishStore); !ok {
		t.Fatalf("publish store %T", h.PublishStore())
	}
	if _, ok := h.BookmarkStore().(*MemoryBookmarkStore); !ok {
		t.Fatalf("bookmark store %T", h.BookmarkStore())
	}
	plain, err := NewHA(HAConfig{Name: "plain"})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.PublishStore() != nil {
		t.Fatal("NewHA made a publish store")
	}
}

// TestDefaultServerChooserMaxFailures: MaxFailures consecutive failures
// across the list stop the chooser; a success in between restarts the count.
func TestDefaultServerChooserMaxFailures(t *testing.T) {
	ch := NewDefaultServerChooser("a:1", "b:1")
	ch.MaxFailures = 3
	boom := errors.New("boom")
	ch.ReportFailure("a:1", boom)
	ch.ReportFailure("b:1", boom)
	ch.ReportSuccess("a:1")
	for i, want := range []string{"a:1", "b:1", "a:1", ""} {
		if got := ch.CurrentURI(); got != want {
			t.Fatalf("after %d failures CurrentURI %q, want %q", i, got, want)
		}
		if want != "" {
			ch.ReportFailure(want, boom)
		}
	}
	if e := ch.Error(); !contains(e, "3 consecutive") || !contains(e, "boom") {
		t.Fatalf("Error() = %q", e)
	}
}

// TestHALocalRefusalMaxTopic: a topic longer than the server's announced
// MaxTopic is refused before sending, with the same handler.
func TestHALocalRefusalMaxTopic(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.maxTopic = 4 })
	var fw failedWrites
	cfg := haConfig("max-topic", s.addr())
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.Options = []Option{WithFailedWriteHandler(fw.handle)}
	h := haConnect(t, cfg)
	for _, topic := range []string{"d.t", "too.long", "d.t"} {
		if _, err := h.Publish(ctxT(t), topic, []byte("p")); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed-write handler", func() bool { return len(fw.get()) > 0 })
	if calls := fw.get(); len(calls) != 1 || calls[0] != "2 too-large topic of 8 bytes > max-topic 4" {
		t.Fatalf("failed writes %q", calls)
	}
	if got := s.seqsSent(); !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("sent %v, want [1 3]", got)
	}
}

// TestHAReplayRefusesBeyondNewLimits: a message stored while connected to
// a server without limits is refused, when re-published, by the next
// server's smaller MaxFrame: reported once and dropped; the rest go out.
func TestHAReplayRefusesBeyondNewLimits(t *testing.T) {
	s := newFakeServer(t)
	ev := newEvents()
	var fw failedWrites
	cfg := haConfig("replay-limits", s.addr())
	cfg.OnState = ev.on
	cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	cfg.Options = []Option{WithFailedWriteHandler(fw.handle)}
	h := haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	s.set(func(s *fakeServer) {
		s.refuse[1], s.refuse[2], s.refuse[3] = wire.CodeStorageFailed, wire.CodeStorageFailed, wire.CodeStorageFailed
	})
	s.setHold(true)
	for _, p := range []string{"a", strings.Repeat("x", 8000), "c"} {
		if _, err := h.Publish(ctxT(t), "d.t", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "3 sent", func() bool { return len(s.seqsSent()) == 3 })
	if n := h.UnpersistedCount(); n != 3 {
		t.Fatalf("%d kept after transient refusals, want 3", n)
	}
	s.set(func(s *fakeServer) { s.maxFrame = 4096; clear(s.refuse); s.lastPub["replay-limits"] = 0 })
	s.dropConns()
	ev.wait(t, StateConnected, 5*time.Second)
	s.setHold(false)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed-write handler", func() bool { return len(fw.get()) > 0 })
	if calls := fw.get(); len(calls) != 1 || !strings.HasPrefix(calls[0], "2 too-large ") {
		t.Fatalf("failed writes %q", calls)
	}
	if got := s.seqsSent()[3:]; !slices.Equal(got, []uint64{1, 3}) {
		t.Fatalf("re-published %v, want [1 3]", got)
	}
	if r := h.Reconnects(); r != 1 {
		t.Fatalf("%d reconnects, want 1", r)
	}
}

// TestHAStandbyErrorFrame: an active demoted to standby says so in an
// Error frame: the client goes to the next server at once, and the
// answer is not counted as a failure.
func TestHAStandbyErrorFrame(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	b.set(func(s *fakeServer) { s.name = "fake-2" })
	ch := NewDefaultServerChooser(a.addr(), b.addr())
	ch.MaxFailures = 1
	ev := newEvents()
	cfg := haConfig("standby-3", a.addr(), b.addr())
	cfg.Chooser, cfg.OnState = ch, ev.on
	haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	a.kill(wire.CodeStandby, "demoted")
	if e := ev.wait(t, StateFailedOver, 2*time.Second); e.URI != b.addr() {
		t.Fatalf("failed over to %s", e.URI)
	}
	b.kill(wire.CodeStandby, "demoted too") // back to a (a is up): still not a failure
	if e := ev.wait(t, StateFailedOver, 2*time.Second); e.URI != a.addr() {
		t.Fatalf("failed over to %s", e.URI)
	}
}

// TestClientFailedWriteAndAckInfo: the single-connection Client calls both
// handlers too.
func TestClientFailedWriteAndAckInfo(t *testing.T) {
	s := newFakeServer(t)
	s.set(func(s *fakeServer) { s.refuse[2] = wire.CodeSequenceReused; s.syncPeers = 1 })
	var fw failedWrites
	var mu sync.Mutex
	var infos []string
	c := connect(t, s.addr(), WithName("plain-fw"), WithFailedWriteHandler(fw.handle),
		WithAckInfoHandler(func(seq uint64, peers int, err error) {
			mu.Lock()
			infos = append(infos, fmt.Sprintf("%d %d %v", seq, peers, errors.Is(err, ErrSequenceReused)))
			mu.Unlock()
		}))
	for range 3 {
		if _, err := c.Publish(ctxT(t), "d.t", []byte("p")); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctxT(t)); !errors.Is(err, ErrNotPersisted) {
		t.Fatalf("flush after a refusal: %v", err)
	}
	if calls := fw.get(); len(calls) != 1 || calls[0] != "2 sequence-reused refused by test" {
		t.Fatalf("failed writes %q", calls)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(infos, "2 0 true") || !slices.Contains(infos, "3 1 false") {
		t.Fatalf("ack infos %q", infos)
	}
}

// TestHANoStorePublishBlocksWhileDisconnected: NewHA without a
// PublishStore keeps the plain client's contract: while disconnected
// Publish blocks (here until its context ends) rather than queueing, and
// works again once a connection is up.
func TestHANoStorePublishBlocksWhileDisconnected(t *testing.T) {
	s := newFakeServer(t)
	ev := newEvents()
	cfg := haConfig("no-store", s.addr())
	cfg.OnState = ev.on
	h := haConnect(t, cfg)
	ev.wait(t, StateConnected, 5*time.Second)
	s.set(func(s *fakeServer) { s.logonError = wire.CodeNameInUse })
	s.dropConns()
	ev.wait(t, StateDisconnected, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := h.Publish(ctx, "d.t", []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish while disconnected without a store: %v, want it blocked until the deadline", err)
	}
	if n := s.stored(); n != 0 {
		t.Fatalf("server stores %d", n)
	}
	s.set(func(s *fakeServer) { s.logonError = 0 })
	ev.wait(t, StateConnected, 5*time.Second)
	if _, err := h.Publish(ctxT(t), "d.t", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := s.stored(); n != 1 {
		t.Fatalf("server stores %d, want 1", n)
	}
}

// TestMemoryPublishStoreRemove: Remove takes one message out of the
// middle, the head or the tail (a no-op for one not kept), the rest replay
// intact, and a publisher waiting for space is woken.
func TestMemoryPublishStoreRemove(t *testing.T) {
	st := NewMemoryPublishStore(StoreLimits{MaxMessages: 5})
	for seq := uint64(1); seq <= 5; seq++ {
		if err := st.Store(seq, []byte("t"), []byte(strings.Repeat("p", int(seq)))); err != nil {
			t.Fatal(err)
		}
	}
	for _, seq := range []uint64{3, 1, 5, 9, 3} {
		if err := st.Remove(seq); err != nil {
			t.Fatal(err)
		}
	}
	replay := func() []string {
		var got []string
		st.Replay(func(seq uint64, topic, payload []byte) error {
			got = append(got, fmt.Sprintf("%d:%s:%s", seq, topic, payload))
			return nil
		})
		return got
	}
	if got := replay(); !slices.Equal(got, []string{"2:t:pp", "4:t:pppp"}) || st.UnpersistedCount() != 2 {
		t.Fatalf("after removes: %v (count %d)", got, st.UnpersistedCount())
	}
	for seq := uint64(6); seq <= 8; seq++ {
		if err := st.Store(seq, []byte("t"), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Store(9, []byte("t"), []byte("x")); !errors.Is(err, ErrStoreFull) {
		t.Fatalf("store into a full store: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- st.WaitSpace(ctxT(t)) }()
	eventually(t, "the waiter", func() bool { return st.changed.waiters.Load() > 0 })
	st.Remove(7)
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitSpace not woken by Remove")
	}
	st.Discard(6)
	if got := replay(); !slices.Equal(got, []string{"8:t:x"}) {
		t.Fatalf("after discard: %v", got)
	}
}

// TestAckInfoFromRealPair: a sync pair's persisted acks say the message is
// on one sync peer's disk too; a lone instance's say on none (issue 10
// item 6, end to end through the engine).
func TestAckInfoFromRealPair(t *testing.T) {
	a, _ := startPair(t, nil)
	for _, tc := range []struct {
		name string
		addr string
		want int
	}{{"pair", a.addr(), 1}} {
		var mu sync.Mutex
		var top uint64
		peers := -1
		cfg := haConfig("ack-info-"+tc.name, tc.addr)
		cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
		cfg.Options = []Option{WithAckInfoHandler(func(seq uint64, n int, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil && seq > top {
				top, peers = seq, n
			}
		})}
		h := haConnect(t, cfg)
		publishHA(t, h, 1, 20)
		if err := h.Flush(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		eventually(t, "ack info for 20", func() bool { mu.Lock(); defer mu.Unlock(); return top == 20 })
		mu.Lock()
		if peers != tc.want {
			t.Errorf("%s: sync peers %d, want %d", tc.name, peers, tc.want)
		}
		mu.Unlock()
	}
}

// A publisher restarted with a memory store publishes before its first
// logon: its sequence must not start from the empty store (1) but after
// what the server holds of this name, or the logon reply's AckedPubSeq
// covers the new messages and they leave the store as persisted, never
// sent. Found by the simulator (sim, broken build publish-before-logon).
func TestHAPublishBeforeFirstLogon(t *testing.T) {
	s := newFakeServer(t)
	for seq := uint64(1); seq <= 5; seq++ { // the previous process's messages
		s.inject("restarted", "d.t", seq, []byte("old"))
	}
	cfg := haConfig("restarted", s.addr())
	h, err := NewMemoryBackedHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	type result struct {
		seq uint64
		err error
	}
	got := make(chan result, 1)
	go func() {
		seq, err := h.Publish(ctxT(t), "d.t", []byte("new"))
		got <- result{seq, err}
	}()
	// Connect only once the publish is in (stored, or waiting for the logon).
	eventually(t, "the publish to start", func() bool { return h.UnpersistedCount() > 0 || h.publishWaiting() })
	if err := h.Connect(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.seq != 6 {
		t.Fatalf("publish before the first logon: seq %d, %v; want 6 (after the server's 5)", r.seq, r.err)
	}
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if sent := s.seqsSent(); !slices.Contains(sent, 6) {
		t.Fatalf("the server got pubSeqs %v: the message published before the logon never went out", sent)
	}
}
