package client

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// events records state changes.
type events struct {
	mu  sync.Mutex
	evs []Event
	ch  chan Event
}

func newEvents() *events { return &events{ch: make(chan Event, 1024)} }

func (e *events) on(ev Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
	select {
	case e.ch <- ev:
	default:
	}
}

func (e *events) wait(t testing.TB, st State, d time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev := <-e.ch:
			if ev.State == st {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s event within %v", st, d)
		}
	}
}

// orderChecker checks that one publisher's messages arrive exactly once,
// in publish order, and discards each one.
type orderChecker struct {
	sub       *HASubscription
	publisher uint64
	mu        sync.Mutex
	next      uint64
	err       error
	lastAt    time.Time
	progress  chan struct{}
}

func (c *orderChecker) handle(m *Message) {
	c.mu.Lock()
	if c.err == nil {
		want := strconv.FormatUint(c.next, 10)
		switch {
		case m.Bookmark.Publisher != c.publisher:
			c.err = fmt.Errorf("message from publisher %x", m.Bookmark.Publisher)
		case m.Bookmark.PubSeq != c.next || string(m.Payload) != want:
			c.err = fmt.Errorf("want message %d next, got pubSeq %d payload %q", c.next, m.Bookmark.PubSeq, m.Payload)
		}
		c.next++
		c.lastAt = time.Now()
	}
	c.mu.Unlock()
	c.sub.Discard(m)
	select {
	case c.progress <- struct{}{}:
	default:
	}
}

func (c *orderChecker) got() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next - 1, c.err
}

func (c *orderChecker) wait(t testing.TB, n uint64, d time.Duration, diag func() string) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		got, err := c.got()
		if err != nil {
			t.Fatalf("subscriber: %v", err)
		}
		if got >= n {
			return
		}
		select {
		case <-c.progress:
		case <-deadline.C:
			t.Fatalf("subscriber received %d of %d messages in %v; %s", got, n, d, diag())
		}
	}
}

func haConfig(name string, servers ...string) HAConfig {
	return HAConfig{Name: name, Servers: servers, Heartbeat: 50 * time.Millisecond, ConnectTimeout: time.Second,
		Delay: &ExponentialDelayStrategy{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond, MaxTotal: 20 * time.Second}}
}

func haConnect(t testing.TB, cfg HAConfig) *HAClient {
	t.Helper()
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestHAFailoverExactlyOnce: a publisher (file PublishStore) and a
// subscriber (file BookmarkStore) are on A of a hot-hot pair; A is killed
// at a random point in the middle of the stream. Both fail over to B: the
// subscriber receives every message exactly once in publish order, the
// publisher's UnpersistedCount reaches 0, and A, restarted, catches up.
// TANDEM_HA_ROUNDS (default 2) rounds, TANDEM_HA_MESSAGES (default 100000)
// messages each.
func TestHAFailoverExactlyOnce(t *testing.T) {
	seed := testSeed(t)
	rounds := envInt("TANDEM_HA_ROUNDS", 2)
	n := uint64(envInt("TANDEM_HA_MESSAGES", 100000))
	for r := 0; r < rounds; r++ {
		rs := seed + uint64(r)
		t.Run(fmt.Sprint("round", r), func(t *testing.T) { failoverRound(t, rs, n) })
		if t.Failed() {
			t.Fatalf("round %d failed (TANDEM_SEED=%d replays from it)", r, rs)
		}
	}
}

func failoverRound(t *testing.T, seed uint64, n uint64) {
	rng := newRand(seed)
	killAt := n/10 + uint64(rng.IntN(int(n*8/10)))
	t.Logf("round seed %d: %d messages, kill A after %d published", seed, n, killAt)
	a, b := startPair(t, nil)
	dir := t.TempDir()

	ps, err := OpenFilePublishStore(filepath.Join(dir, "pub.store"), SyncNone, StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	bs, err := OpenFileBookmarkStore(filepath.Join(dir, "sub.bookmarks"), SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()

	pubEv, subEv := newEvents(), newEvents()
	pcfg := haConfig("ha-pub", a.addr(), b.addr())
	pcfg.PublishStore = ps
	pcfg.OnState = pubEv.on
	pub := haConnect(t, pcfg)
	scfg := haConfig("ha-sub", a.addr(), b.addr())
	scfg.BookmarkStore = bs
	scfg.OnState = subEv.on
	subc := haConnect(t, scfg)
	if u, _ := pub.Server(); u != a.addr() {
		t.Fatalf("publisher on %s, want A", u)
	}

	chk := &orderChecker{publisher: record.ID("ha-pub"), next: 1, progress: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := subc.Subscribe(ctx, "ha.t", WithSubID("s1"), From(Epoch), WithHandler(chk.handle))
	if err != nil {
		t.Fatal(err)
	}
	chk.sub = sub

	var buf []byte
	killed := time.Time{}
	for i := uint64(1); i <= n; i++ {
		buf = strconv.AppendUint(buf[:0], i, 10)
		seq, err := pub.Publish(ctx, "ha.t", buf)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if seq != i {
			t.Fatalf("publish %d got pubSeq %d", i, seq)
		}
		if i == killAt {
			killed = time.Now()
			a.kill()
		}
	}
	pubEv.wait(t, StateFailedOver, 10*time.Second)
	subEv.wait(t, StateFailedOver, 10*time.Second)
	diag := func() string {
		return fmt.Sprintf("pub unpersisted %d on %v; sub dups %d; B stored %d", pub.UnpersistedCount(), pub.State(), sub.Duplicates(), b.server().Stats().Stored)
	}
	chk.wait(t, n, 30*time.Second, diag)
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	if err := pub.Flush(fctx); err != nil {
		t.Fatalf("flush: %v; %s", err, diag())
	}
	fcancel()
	if c := pub.UnpersistedCount(); c != 0 {
		t.Fatalf("UnpersistedCount %d after Flush", c)
	}
	// Nothing more arrives (no duplicate after the last one).
	time.Sleep(100 * time.Millisecond)
	if got, err := chk.got(); got != n || err != nil {
		t.Fatalf("subscriber has %d messages (%v), want exactly %d", got, err, n)
	}
	if st := b.server().Stats(); st.Stored != n {
		t.Fatalf("B stores %d messages, want %d", st.Stored, n)
	}
	t.Logf("killed A %v into the run; subscriber dropped %d re-sent duplicates", time.Since(killed).Round(time.Millisecond), sub.Duplicates())

	// A comes back and catches up from B.
	a.start()
	deadline := time.Now().Add(15 * time.Second)
	for a.server().Stats().Stored != n {
		if time.Now().After(deadline) {
			t.Fatalf("restarted A holds %d of %d messages", a.server().Stats().Stored, n)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// TestHAPartitionDetectedByHeartbeat: the network between the client and
// A stops carrying bytes (no close, no reset). The client notices within
// two heartbeat intervals and fails over to B, where its subscription
// resumes without loss or repetition.
func TestHAPartitionDetectedByHeartbeat(t *testing.T) {
	a, b := startPair(t, nil)
	ev := newEvents()
	cfg := haConfig("part-sub", a.addr(), b.addr())
	cfg.OnState = ev.on
	cfg.ConnectTimeout = 300 * time.Millisecond
	subc := haConnect(t, cfg)
	pub, err := Connect(ctxT(t), b.server().Addr().String(), WithName("part-pub"))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	chk := &orderChecker{publisher: record.ID("part-pub"), next: 1, progress: make(chan struct{}, 1)}
	sub, err := subc.Subscribe(ctxT(t), "p.t", WithSubID("p1"), From(Epoch), WithHandler(chk.handle))
	if err != nil {
		t.Fatal(err)
	}
	chk.sub = sub
	publishPlain(t, pub, "p.t", 1, 500)
	chk.wait(t, 500, 10*time.Second, func() string { return "" })

	const hb = 50 * time.Millisecond
	start := time.Now()
	a.proxy.partition()
	dis := ev.wait(t, StateDisconnected, 5*time.Second)
	detect := dis.Time.Sub(start)
	if !errors.Is(dis.Err, ErrHeartbeatTimeout) {
		t.Fatalf("disconnect cause %v, want a heartbeat timeout", dis.Err)
	}
	if detect > 2*hb+40*time.Millisecond {
		t.Fatalf("partition detected after %v, want within two heartbeat intervals (%v)", detect, 2*hb)
	}
	fo := ev.wait(t, StateFailedOver, 5*time.Second)
	if fo.URI != b.addr() {
		t.Fatalf("failed over to %s, want B %s", fo.URI, b.addr())
	}
	publishPlain(t, pub, "p.t", 501, 1000)
	chk.wait(t, 1000, 10*time.Second, func() string { return "" })
	t.Logf("partition detected after %v, failed over after %v", detect.Round(time.Millisecond), fo.Time.Sub(start).Round(time.Millisecond))
	a.proxy.heal()
}

// TestHABadConfiguration: clear errors in bounded time.
func TestHABadConfiguration(t *testing.T) {
	t.Run("empty server list", func(t *testing.T) {
		h, err := NewHA(HAConfig{Name: "x"})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = h.Connect(ctxT(t))
		if !errors.Is(err, ErrNoServer) || !contains(err.Error(), "empty") || time.Since(start) > time.Second {
			t.Fatalf("got %v after %v", err, time.Since(start))
		}
		h.Close()
	})
	t.Run("unreachable servers", func(t *testing.T) {
		cfg := HAConfig{Name: "x", Servers: []string{freeAddr(t), freeAddr(t)},
			Delay: &ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, MaxTotal: 500 * time.Millisecond}}
		h, err := NewHA(cfg)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = h.Connect(ctxT(t))
		el := time.Since(start)
		if !errors.Is(err, ErrNoServer) || !errors.Is(err, ErrRetryTimeout) || !contains(err.Error(), "refused") || el > 2*time.Second {
			t.Fatalf("got %v after %v", err, el)
		}
		t.Logf("%v after %v", err, el.Round(time.Millisecond))
		h.Close()
	})
	t.Run("wrong credentials", func(t *testing.T) {
		a, b := startPair(t, func(name string, cred []byte) error {
			if string(cred) != "right" {
				return errors.New("bad password")
			}
			return nil
		})
		ch := NewDefaultServerChooser(a.addr(), b.addr())
		ch.SetAuthenticator(StaticCredentials("wrong"))
		h, err := NewHA(HAConfig{Name: "x", Chooser: ch})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = h.Connect(ctxT(t))
		el := time.Since(start)
		if !errors.Is(err, ErrNoServer) || !contains(err.Error(), "refused the logon") || !contains(err.Error(), "bad password") || el > 2*time.Second {
			t.Fatalf("got %v after %v", err, el)
		}
		t.Logf("%v after %v", err, el.Round(time.Millisecond))
		h.Close()
		// The right credentials, asked per attempt, work.
		var asked atomic.Int32
		ch = NewDefaultServerChooser(a.addr(), b.addr())
		ch.SetAuthenticator(AuthenticatorFunc(func(_ context.Context, uri, name string) ([]byte, error) {
			asked.Add(1)
			return []byte("right"), nil
		}))
		good := haConnect(t, HAConfig{Name: "y", Chooser: ch})
		if asked.Load() != 1 {
			t.Fatalf("authenticator asked %d times", asked.Load())
		}
		good.Close()
	})
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestHAPublishWhileDisconnected: with the only server down, publishes go
// into the store (up to its bound: an error with ErrorWhenFull), and are
// sent once the server is back.
func TestHAPublishWhileDisconnected(t *testing.T) {
	a, b := startPair(t, nil)
	store := NewMemoryPublishStore(StoreLimits{MaxMessages: 100, ErrorWhenFull: true})
	ev := newEvents()
	cfg := haConfig("dis-pub", a.addr())
	cfg.PublishStore = store
	cfg.OnState = ev.on
	cfg.Delay = &FixedDelayStrategy{Delay: 20 * time.Millisecond}
	h := haConnect(t, cfg)
	publishHA(t, h, 1, 10)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a.kill()
	ev.wait(t, StateDisconnected, 5*time.Second)
	publishHA(t, h, 11, 110)
	if _, err := h.Publish(ctxT(t), "d.t", []byte("111")); !errors.Is(err, ErrStoreFull) {
		t.Fatalf("publish into a full store: %v", err)
	}
	if c := h.UnpersistedCount(); c != 100 {
		t.Fatalf("UnpersistedCount %d, want 100", c)
	}
	a.start()
	ev.wait(t, StateConnected, 10*time.Second)
	if err := h.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	_ = b
	if st := a.server().Stats(); st.Stored != 110 {
		t.Fatalf("A stores %d, want 110", st.Stored)
	}
}

func publishHA(t testing.TB, h *HAClient, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := h.Publish(ctxT(t), "d.t", []byte(strconv.Itoa(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func TestDelayStrategies(t *testing.T) {
	e := &ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: 50 * time.Millisecond}
	var got []time.Duration
	for range 6 {
		d, err := e.NextDelay("a")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d)
	}
	want := []time.Duration{0, 10, 20, 40, 50, 50}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("exponential delays %v", got)
		}
	}
	if d, _ := e.NextDelay("b"); d != 0 {
		t.Fatalf("first attempt at another server waits %v", d)
	}
	e.Reset()
	if d, _ := e.NextDelay("a"); d != 0 {
		t.Fatalf("after Reset: %v", d)
	}
	j := &ExponentialDelayStrategy{Initial: 100 * time.Millisecond, Jitter: 0.5}
	j.NextDelay("a")
	if d, _ := j.NextDelay("a"); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("jittered delay %v", d)
	}
	tot := &ExponentialDelayStrategy{Initial: time.Millisecond, MaxTotal: 20 * time.Millisecond}
	start := time.Now()
	for {
		d, err := tot.NextDelay("a")
		if err != nil {
			if !errors.Is(err, ErrRetryTimeout) {
				t.Fatal(err)
			}
			break
		}
		time.Sleep(d)
		if time.Since(start) > time.Second {
			t.Fatal("MaxTotal not enforced")
		}
	}
	f := &FixedDelayStrategy{Delay: 5 * time.Millisecond}
	if d, _ := f.NextDelay("a"); d != 0 {
		t.Fatal(d)
	}
	if d, _ := f.NextDelay("a"); d != 5*time.Millisecond {
		t.Fatal(d)
	}
}

func TestDefaultServerChooser(t *testing.T) {
	c := NewDefaultServerChooser("a", "b")
	if c.CurrentURI() != "a" {
		t.Fatal(c.CurrentURI())
	}
	c.ReportFailure("a", errors.New("refused"))
	if c.CurrentURI() != "b" {
		t.Fatal(c.CurrentURI())
	}
	c.ReportFailure("b", &ServerError{Code: 6, Text: "no"})
	c.ReportFailure("a", &ServerError{Code: 6, Text: "no"})
	if c.CurrentURI() != "" || !contains(c.Error(), "refused the logon") {
		t.Fatalf("%q %q", c.CurrentURI(), c.Error())
	}
	c.ReportSuccess("a")
	if c.CurrentURI() == "" {
		t.Fatal("success does not reset")
	}
}

func TestFilePublishStoreReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p")
	for _, d := range []Durability{SyncNone, SyncBatch, SyncEveryMessage} {
		s, err := OpenFilePublishStore(path+d.String(), d, StoreLimits{})
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(1); i <= 1000; i++ {
			if err := s.Store(i, []byte("t"), []byte(strconv.FormatUint(i, 10))); err != nil {
				t.Fatal(err)
			}
		}
		s.Discard(400)
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		s.Discard(600) // not yet written: reopening still has 401..600
		s.log.Close()  // as a killed process would leave it (no Close)
		r, err := OpenFilePublishStore(path+d.String(), d, StoreLimits{})
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		r.Replay(func(seq uint64, topic, payload []byte) error {
			if string(payload) != strconv.FormatUint(seq, 10) {
				t.Fatalf("seq %d payload %q", seq, payload)
			}
			seqs = append(seqs, seq)
			return nil
		})
		if len(seqs) != 600 || seqs[0] != 401 || r.LastSeq() != 1000 || r.UnpersistedCount() != 600 {
			t.Fatalf("%s: reopened with %d messages from %v, last %d", d, len(seqs), seqs[:1], r.LastSeq())
		}
		r.Discard(1000)
		r.Close()
		r, _ = OpenFilePublishStore(path+d.String(), d, StoreLimits{})
		if r.UnpersistedCount() != 0 || r.LastSeq() != 1000 {
			t.Fatalf("after all persisted: %d left, last %d", r.UnpersistedCount(), r.LastSeq())
		}
		r.Close()
	}
}

func TestFileBookmarkStoreReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b")
	s, err := OpenFileBookmarkStore(path, SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.MostRecent("x"); ok {
		t.Fatal("unknown sub has progress")
	}
	s.SetPosition("x", []wire.PositionEntry{{Origin: 7, OriginSeq: 9}})
	m := &Message{SubName: "x", Origin: 7}
	// Origin 10, 11 (contiguous after the position); publisher 1, 2 and 4
	// (3 not processed yet: out of order).
	for _, d := range [][2]uint64{{10, 1}, {11, 2}, {13, 4}} {
		m.OriginSeq, m.Bookmark = d[0], record.Bookmark{Publisher: 3, PubSeq: d[1]}
		s.Discard(m)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	m.OriginSeq, m.Bookmark.PubSeq = 12, 3
	s.Discard(m)  // not flushed: lost with the process
	s.log.Close() // as a killed process would leave it (no Close)
	r, err := OpenFileBookmarkStore(path, SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e, ok := r.MostRecent("x")
	sort.Slice(e, func(i, j int) bool { return e[i].Kind < e[j].Kind })
	if !ok || len(e) != 2 || e[0].ID != 7 || e[0].Seq != 11 || e[1].ID != 3 || e[1].Seq != 2 {
		t.Fatalf("reopened progress %+v, want origin 7 at 11, publisher 3 at 2", e)
	}
	for _, c := range []struct {
		originSeq, pubSeq uint64
		want              bool
	}{{10, 1, true}, {11, 2, true}, {13, 4, true}, {12, 3, false}, {14, 5, false}} {
		got := r.IsDiscarded(&Message{SubName: "x", Origin: 7, OriginSeq: c.originSeq, Bookmark: record.Bookmark{Publisher: 3, PubSeq: c.pubSeq}})
		if got != c.want {
			t.Errorf("IsDiscarded(origin seq %d, pubseq %d) = %v, want %v", c.originSeq, c.pubSeq, got, c.want)
		}
	}
}

// TestHAPublishDoesNotAllocate: the HA publish path with a memory store.
func TestHAPublishDoesNotAllocate(t *testing.T) {
	s := newSink(t)
	h := haConnect(t, HAConfig{Name: "alloc", Servers: []string{s.ln.Addr().String()}, Heartbeat: -1,
		PublishStore: NewMemoryPublishStore(StoreLimits{})})
	ctx := context.Background()
	payload := make([]byte, 128)
	for range 20000 {
		h.Publish(ctx, "alloc.test", payload)
	}
	allocs := testing.AllocsPerRun(20000, func() {
		if _, err := h.Publish(ctx, "alloc.test", payload); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("HAClient.Publish allocates %v times per call", allocs)
	}
}

func publishPlain(t testing.TB, c *Client, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := c.Publish(ctxT(t), topic, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestHAFailoverTime measures, over TANDEM_HA_FAILOVER_RUNS runs (default
// 0: skipped; the figure uses 50+), the time from the abrupt death
// of the instance a subscriber is on (connections reset, server stopped) to
// the first message delivered through the other instance, with a 50 ms
// heartbeat. A publisher on the surviving instance sends every 1 ms.
func TestHAFailoverTime(t *testing.T) {
	runs := envInt("TANDEM_HA_FAILOVER_RUNS", 0)
	if runs == 0 {
		t.Skip("set TANDEM_HA_FAILOVER_RUNS=50 to measure failover time")
	}
	a, b := startPair(t, nil)
	nodes := map[string]*node{a.addr(): a, b.addr(): b}
	subc := haConnect(t, haConfig("fo-sub", a.addr(), b.addr()))
	var count atomic.Uint64
	var killedAt, firstAt atomic.Int64
	var want atomic.Value // the address of the surviving instance
	want.Store("")
	_, err := subc.Subscribe(ctxT(t), "fo.", Prefix(), WithSubID("fo"), From(Now), WithHandler(func(m *Message) {
		count.Add(1)
		if k := killedAt.Load(); k != 0 && firstAt.Load() == 0 {
			if u, _ := subc.Server(); u == want.Load().(string) {
				firstAt.CompareAndSwap(0, time.Now().UnixNano())
			}
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for r := 0; r < runs; r++ {
		cur, _ := subc.Server()
		victim := nodes[cur]
		other := a
		if victim == a {
			other = b
		}
		want.Store(other.addr())
		pub, err := Connect(ctxT(t), other.server().Addr().String(), WithName(fmt.Sprint("fo-pub-", r)))
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tk := time.NewTicker(time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
					pub.Publish(context.Background(), "fo.t", []byte("x"))
				}
			}
		}()
		base := count.Load()
		for count.Load() < base+5 { // deliveries flow through the victim
			time.Sleep(time.Millisecond)
		}
		firstAt.Store(0)
		killedAt.Store(time.Now().UnixNano())
		victim.kill()
		deadline := time.Now().Add(10 * time.Second)
		for firstAt.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("run %d: no delivery through the other instance within 10s", r)
			}
			time.Sleep(100 * time.Microsecond)
		}
		lat = append(lat, time.Duration(firstAt.Load()-killedAt.Load()))
		killedAt.Store(0)
		close(stop)
		<-done
		pub.Close()
		victim.start()
		waitSync(t, a, b)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	t.Logf("failover (kill -> first message through the other instance), %d runs, heartbeat 50ms: p50 %v p90 %v p99 %v max %v",
		len(lat), p(0.5), p(0.9), p(0.99), lat[len(lat)-1])
}

// BenchmarkHAPublish compares publish throughput through the HA client with
// no store, the memory store and the file store (per durability setting),
// 128-byte payloads with persisted acks, against a real server, in one run:
//
//	go test -run '^$' -bench BenchmarkHAPublish -benchtime 2s ./client
func BenchmarkHAPublish(b *testing.B) {
	addr := startEngine(b)
	for _, mode := range []string{"none", "memory", "file-none", "file-batch", "file-message"} {
		b.Run(mode, func(b *testing.B) {
			cfg := HAConfig{Name: "bench-" + mode, Servers: []string{addr}}
			switch mode {
			case "memory":
				cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
			case "file-none", "file-batch", "file-message":
				d, _ := ParseDurability(mode[len("file-"):])
				st, err := OpenFilePublishStore(filepath.Join(b.TempDir(), "store"), d, StoreLimits{})
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				cfg.PublishStore = st
			}
			h := haConnect(b, cfg)
			ctx := context.Background()
			payload := make([]byte, 128)
			b.ReportAllocs()
			b.SetBytes(128)
			start := time.Now()
			for b.Loop() {
				if _, err := h.Publish(ctx, "bench.topic", payload); err != nil {
					b.Fatal(err)
				}
			}
			if err := h.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			h.Close()
		})
	}
}
