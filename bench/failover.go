package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/wire"
)

// The failover scenario (Tandem only): the time an HA client takes to get
// messages flowing again when the instance it is on dies.
//
// A hot-hot sync pair (pair.go; --repl-downgrade-after longer than the
// step), an HA publisher publishing on an open-loop schedule and an HA
// subscriber (WithSubID, From(MostRecent), a memory bookmark store,
// Discard after every message), both listing A first. Each run waits
// until the pair is in sync both ways and messages flow, SIGKILLs the
// instance the subscriber is on, and measures from the kill to the first
// message the subscriber receives through the other instance, checking
// that it is the one right after the last message received before it (no
// loss, no repeat). The killed instance is then started again on its
// data directory and the next run kills the other one (the clients stay
// where they failed over to): runs alternate between A and B.

// failoverTopic is not the warm-up's topic: the subscriber starts at Epoch
// (MostRecent with an empty store) and must see only the bench's messages.
const failoverTopic = "bench.failover"

// Limits of one run.
const (
	failoverSettle  = 200 * time.Millisecond // steady publishing before each kill
	failoverTimeout = 10 * time.Second       // kill -> first message through the other instance
	failoverHealthy = 30 * time.Second       // restart -> pair in sync both ways, clients connected
)

// FailoverStats are the details of a failover step (Result.Latency holds
// the distribution of the failover times).
type FailoverStats struct {
	Runs        int    `json:"runs"`
	HeartbeatMs int64  `json:"heartbeat_ms"`
	KillMethod  string `json:"kill_method"`
	// Killed is the instance killed in each run; TimesUs the failover
	// time of each run (µs), in run order.
	Killed  []string  `json:"killed"`
	TimesUs []float64 `json:"times_us"`
	// Violations: runs whose first message through the other instance was
	// not the one right after the last message received before it (a
	// message lost or repeated at the switch). Timeouts: runs with no
	// message through the other instance within the timeout (recorded as
	// the timeout).
	Violations int64 `json:"violations"`
	Timeouts   int64 `json:"timeouts"`
	// Duplicates: messages the HA client's own duplicate filter dropped
	// (sent again by a server after a resume; not delivered twice).
	Duplicates uint64 `json:"duplicates"`
	// PublisherFailovers and SubscriberFailovers count the connections
	// each HA client made to another server than the previous one.
	PublisherFailovers  uint64 `json:"publisher_failovers"`
	SubscriberFailovers uint64 `json:"subscriber_failovers"`
	// Restart: time from the kill to the pair being in sync again with
	// both clients connected, p50 over the runs (ms): the run's overhead.
	RestartP50Ms float64 `json:"restart_p50_ms"`

	// The time from the kill to the first persisted ack of a message
	// published after it (Tandem: of the HA publisher, through the other
	// instance; replicated NATS, nats_failover.go: the first PubAck of a
	// publish sent after the stream leader's kill), per run (µs) and
	// their distribution. Replicated NATS: runs in which the clients'
	// server was the one killed; acknowledged messages never delivered.
	PublishTimesUs []float64 `json:"publish_times_us,omitempty"`
	// Tandem: runs without that ack by the time the pair was healthy
	// again (counted as that time).
	PublishTimeouts  int64    `json:"publish_timeouts,omitempty"`
	PublishLatency   *Latency `json:"publish_latency,omitempty"`
	ClientNodeKilled int      `json:"client_node_killed,omitempty"`
	Lost             int64    `json:"lost,omitempty"`
}

func failoverKey(set *Settings) string {
	return fmt.Sprintf("failover size=%d rate=%d heartbeat=%s", set.FailoverSize, set.FailoverRate, set.FailoverHeartbeat)
}

func (r *runner) runFailover() error {
	if n, ok := r.sys.(*NATS); ok && n.Replicas > 1 {
		return r.runNATSFailover(n)
	}
	t, ok := r.sys.(*Tandem)
	if !ok || r.set.FailoverRuns <= 0 {
		return nil
	}
	res := r.result(ScenFailover, failoverKey(r.set))
	res.Size, res.Publishers, res.Subscribers, res.Rate, res.Mode = r.set.FailoverSize, 1, 1, float64(r.set.FailoverRate), "sync"
	rv := r.on(t.variant("sync", t.Engine))
	rv.step(res, func(res *Result) error { return rv.measureFailover(res) })
	r.runSharedFailover(t) // the shared-store variant (sharedstore.go)
	return nil
}

// foSub is the subscriber's side of the failover scenario.
type foSub struct {
	clk monoClock
	h   *client.HAClient
	bms client.BookmarkStore

	mu       sync.Mutex
	have     bool
	next     uint64 // index expected next
	bad      int64  // gaps and repeats over the whole step
	watchFor string // instance whose first delivery is awaited ("": none)
	firstAt  int64
	firstOK  bool // it was the message expected next
	received atomic.Int64
	lastAt   atomic.Int64
}

func (s *foSub) onMsg(m *client.Message) {
	now := s.clk.now()
	idx, _, ok := readHeader(m.Payload)
	s.mu.Lock()
	if !ok {
		s.bad++
	} else {
		if s.have && idx != s.next {
			s.bad++
		}
		if s.watchFor != "" && s.firstAt == 0 {
			if _, inst := s.h.Server(); inst == s.watchFor {
				s.firstAt = now
				s.firstOK = s.have && idx == s.next
			}
		}
		s.next, s.have = idx+1, true
	}
	s.mu.Unlock()
	_ = s.bms.Discard(m)
	s.received.Add(1)
	s.lastAt.Store(now)
}

func (s *foSub) nextIdx() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// foPub publishes on an open-loop schedule through an HA client until
// stopped.
type foPub struct {
	h       *client.HAClient
	sent    atomic.Int64
	lastSeq atomic.Uint64 // the publish store sequence of the last publish
	stop    atomic.Bool
	done    chan struct{}
	err     error
}

func (p *foPub) run(ctx context.Context, clk monoClock, size int, rate float64) {
	defer close(p.done)
	unlock := lockForPacing()
	defer unlock()
	payload := newPayload(size)
	start := clk.now() + int64(time.Millisecond)
	for i := int64(0); !p.stop.Load(); i++ {
		due := intendedTime(start, i, rate)
		sleepUntil(clk, due)
		putHeader(payload, uint64(i), due)
		// With a publish store, Publish does not wait for a connection:
		// during a failover the messages wait in the store.
		seq, err := p.h.Publish(ctx, failoverTopic, payload)
		if err != nil {
			p.err = fmt.Errorf("publish %d: %w", i, err)
			return
		}
		p.lastSeq.Store(seq)
		p.sent.Store(i + 1)
	}
}

// stopped returns why the publisher stopped early (nil while it runs).
func (p *foPub) stopped() error {
	select {
	case <-p.done:
		if p.err != nil {
			return p.err
		}
		return errors.New("publisher stopped")
	default:
		return nil
	}
}

// ackWatchStore is the failover publisher's publish store, watching for
// the first persisted ack (Discard) of a message published after a kill.
type ackWatchStore struct {
	client.PublishStore
	clk   monoClock
	mu    sync.Mutex
	after uint64 // watch: the first Discard beyond this sequence (0: off)
	at    int64
}

func (s *ackWatchStore) Discard(upTo uint64) error {
	s.mu.Lock()
	if s.after != 0 && s.at == 0 && upTo > s.after {
		s.at = s.clk.now()
	}
	s.mu.Unlock()
	return s.PublishStore.Discard(upTo)
}

// watch starts watching for an ack beyond sequence after (0: stop).
func (s *ackWatchStore) watch(after uint64) {
	s.mu.Lock()
	s.after, s.at = after, 0
	s.mu.Unlock()
}

// ackedAt is when the watched ack came (0: not yet).
func (s *ackWatchStore) ackedAt() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at
}

// foClients is the HA subscriber and publisher a failover step drives.
type foClients struct {
	subH, pubH *client.HAClient
	hs         *client.HASubscription
	pub        *foPub
	acks       *ackWatchStore
	stopPub    func() error
	close      func()
}

// startFailoverClients connects the failover steps' HA subscriber (memory
// bookmark store, resumable as "failover") and HA publisher (memory
// publish store, publishing at set.FailoverRate) to servers, names
// prefixed with prefix. handler builds the subscriber's message handler
// from its client and bookmark store. The caller defers close (which
// stops the publisher first).
func (r *runner) startFailoverClients(t *Tandem, servers []string, prefix string,
	handler func(h *client.HAClient, bms *client.MemoryBookmarkStore) func(*client.Message)) (*foClients, error) {
	ctx, set := r.ctx, r.set
	fc := &foClients{}
	var closers []func()
	fc.close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	bms := client.NewMemoryBookmarkStore()
	subH, err := client.NewHA(client.HAConfig{Name: t.clientName(prefix + "-sub"), Servers: servers,
		Heartbeat: set.FailoverHeartbeat, BookmarkStore: bms})
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { subH.Close() })
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := subH.Connect(cctx); err != nil {
		fc.close()
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	hs, err := subH.Subscribe(cctx, failoverTopic, client.WithSubID("failover"), client.From(client.MostRecent), client.WithHandler(handler(subH, bms)))
	if err != nil {
		fc.close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	fc.acks = &ackWatchStore{PublishStore: client.NewMemoryPublishStore(client.StoreLimits{}), clk: r.clk}
	pubH, err := client.NewHA(client.HAConfig{Name: t.clientName(prefix + "-pub"), Servers: servers,
		Heartbeat: set.FailoverHeartbeat, PublishStore: fc.acks})
	if err != nil {
		fc.close()
		return nil, err
	}
	closers = append(closers, func() { pubH.Close() })
	if err := pubH.Connect(cctx); err != nil {
		fc.close()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	pub := &foPub{h: pubH, done: make(chan struct{})}
	pctx, pcancel := context.WithCancel(ctx)
	go pub.run(pctx, r.clk, set.FailoverSize, float64(set.FailoverRate))
	var once sync.Once
	var stopErr error
	fc.stopPub = func() error {
		once.Do(func() {
			pub.stop.Store(true)
			pcancel()
			<-pub.done
			if pub.err != nil && !errors.Is(pub.err, context.Canceled) {
				stopErr = pub.err
			}
		})
		return stopErr
	}
	closers = append(closers, func() { fc.stopPub() })
	fc.subH, fc.pubH, fc.hs, fc.pub = subH, pubH, hs, pub
	return fc, nil
}

func (r *runner) measureFailover(res *Result) error {
	t := r.sys.(*Tandem)
	ctx := r.ctx
	set := r.set
	servers := []string{t.addr, t.addrB} // A first
	fs := &FailoverStats{Runs: set.FailoverRuns, HeartbeatMs: set.FailoverHeartbeat.Milliseconds(), KillMethod: "SIGKILL of the instance's process"}
	if len(t.Cmd) == 0 {
		fs.KillMethod = "in-process: Server.Close (connections closed, not reset)"
	}
	res.Failover = fs

	var sub *foSub
	fc, err := r.startFailoverClients(t, servers, "failover", func(h *client.HAClient, bms *client.MemoryBookmarkStore) func(*client.Message) {
		sub = &foSub{clk: r.clk, h: h, bms: bms}
		return sub.onMsg
	})
	if err != nil {
		return err
	}
	defer fc.close()
	subH, pubH, hs, pub, stopPub := fc.subH, fc.pubH, fc.hs, fc.pub, fc.stopPub
	r.prog.rate(func() float64 { return float64(sub.received.Load()) })

	hist, pubHist := newHist(), newHist()
	var restarts []float64
	stepStart := r.clk.now()
	for run := 0; run < set.FailoverRuns; run++ {
		r.prog.phase(fmt.Sprintf("run %d/%d", run+1, set.FailoverRuns))
		if err := r.failoverReady(t, pubH, subH, pub, sub); err != nil {
			return fmt.Errorf("run %d: %w", run+1, err)
		}
		_, victim := subH.Server()
		other := map[string]string{"A": "B", "B": "A"}[victim]
		if other == "" {
			return fmt.Errorf("run %d: subscriber on unknown instance %q", run+1, victim)
		}
		sub.mu.Lock()
		sub.watchFor, sub.firstAt, sub.firstOK = other, 0, false
		sub.mu.Unlock()
		fc.acks.watch(pub.lastSeq.Load())
		killedAt := r.clk.now()
		if err := t.killInst(victim); err != nil {
			return fmt.Errorf("run %d: kill %s: %w", run+1, victim, err)
		}
		fs.Killed = append(fs.Killed, victim)
		var took int64
		deadline := time.Now().Add(failoverTimeout)
		for {
			sub.mu.Lock()
			first, okNext := sub.firstAt, sub.firstOK
			sub.mu.Unlock()
			if first != 0 {
				took = first - killedAt
				if !okNext {
					fs.Violations++
				}
				break
			}
			if time.Now().After(deadline) {
				took = r.clk.now() - killedAt
				fs.Timeouts++
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		sub.mu.Lock()
		sub.watchFor = ""
		sub.mu.Unlock()
		recordClamped(hist, took)
		fs.TimesUs = append(fs.TimesUs, float64(took)/1e3)

		// A fresh process on the same data directory.
		if err := t.restartInst(ctx, victim); err != nil {
			return fmt.Errorf("run %d: restart %s: %w", run+1, victim, err)
		}
		if err := r.failoverReady(t, pubH, subH, pub, sub); err != nil {
			return fmt.Errorf("run %d: after restarting %s: %w", run+1, victim, err)
		}
		restarts = append(restarts, float64(r.clk.now()-killedAt)/1e6)
		// The first persisted ack of a message published after the kill,
		// whenever it came before the pair was healthy again (the
		// surviving instance may hold its sync acks until the killed one
		// is back: --repl-downgrade-after is longer than a step); none
		// by now counts as now.
		ackAt := fc.acks.ackedAt()
		fc.acks.watch(0)
		if ackAt == 0 {
			ackAt = r.clk.now()
			fs.PublishTimeouts++
		}
		recordClamped(pubHist, ackAt-killedAt)
		fs.PublishTimesUs = append(fs.PublishTimesUs, float64(ackAt-killedAt)/1e3)
	}
	stepEnd := r.clk.now()
	if err := stopPub(); err != nil {
		return err
	}
	// Every message published reaches the subscriber, in order.
	sent := pub.sent.Load()
	dctx, dcancel := context.WithTimeout(ctx, set.DrainTimeout)
	_ = pubH.Flush(dctx)
	dcancel()
	deadline := time.Now().Add(set.DrainTimeout)
	for int64(sub.nextIdx()) < sent && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	sub.mu.Lock()
	next, bad := sub.next, sub.bad
	sub.mu.Unlock()
	fs.Duplicates = hs.Duplicates()
	fs.PublisherFailovers, fs.SubscriberFailovers = pubH.Failovers(), subH.Failovers()
	if len(restarts) > 0 {
		sorted := append([]float64(nil), restarts...)
		sort.Float64s(sorted)
		fs.RestartP50Ms = sorted[len(sorted)/2]
	}
	res.Latency = summarize(hist)
	fs.PublishLatency = summarize(pubHist)
	res.Sent = sent
	res.Received = sub.received.Load()
	res.Bad = bad
	res.DurationSec = float64(stepEnd-stepStart) / 1e9
	if res.DurationSec > 0 {
		res.PublishRate = float64(sent) / (float64(r.clk.now()-stepStart) / 1e9)
	}
	var notes []string
	if int64(next) < sent {
		notes = append(notes, fmt.Sprintf("the subscriber received up to message %d of %d within %s of the end", next, sent, set.DrainTimeout))
		res.Saturated = true
	}
	if fs.Violations > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d runs lost or repeated a message at the switch", fs.Violations, fs.Runs))
	}
	if fs.Timeouts > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d runs received nothing through the other instance within %s (counted as %s)", fs.Timeouts, fs.Runs, failoverTimeout, failoverTimeout))
		res.Saturated = true
	}
	if len(notes) > 0 {
		res.Note = strings.Join(notes, "; ")
	}
	return nil
}

// failoverReady waits until both instances run, the pair is in sync both
// ways, both clients are connected, and the subscriber is receiving, a
// moment of steady publishing after that.
func (r *runner) failoverReady(t *Tandem, pubH, subH *client.HAClient, pub *foPub, sub *foSub) error {
	deadline := time.Now().Add(failoverHealthy)
	var last string
	for {
		if err := pub.stopped(); err != nil {
			return err
		}
		ok := true
		for _, pair := range [][2]string{{"A", "B"}, {"B", "A"}} {
			st, err := t.instStats(r.ctx, pair[0])
			if err != nil {
				ok, last = false, fmt.Sprintf("%s: stat: %v", pair[0], err)
				break
			}
			d := destination(st, pair[1])
			if d == nil || !d.Connected || d.State != "sync" {
				ok, last = false, fmt.Sprintf("%s's destination %s not in sync: %+v", pair[0], pair[1], d)
				break
			}
		}
		if ok {
			pu, _ := pubH.Server()
			su, _ := subH.Server()
			if pu == "" || su == "" {
				ok, last = false, fmt.Sprintf("publisher on %q, subscriber on %q", pu, su)
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %s", failoverHealthy, last)
		}
		select {
		case <-r.ctx.Done():
			return r.ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Steady publishing, and the subscriber close behind the publisher.
	time.Sleep(failoverSettle)
	behind := int64(math.Max(10, float64(r.set.FailoverRate)/20)) // 50 ms of messages
	for {
		if err := pub.stopped(); err != nil {
			return err
		}
		if pub.sent.Load()-int64(sub.nextIdx()) <= behind {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("subscriber %d messages behind the publisher after %s", pub.sent.Load()-int64(sub.nextIdx()), failoverHealthy)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// killInst kills instance name of the pair abruptly: SIGKILL of its process
// (the kernel resets its connections), or in-process, Server.Close.
func (t *Tandem) killInst(name string) error {
	pp, sp := &t.p, &t.srv
	if name == "B" {
		pp, sp = &t.pB, &t.srvB
	}
	if p := *pp; p != nil {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return err
		}
		<-p.done
		return nil
	}
	if s := *sp; s != nil {
		*sp = nil
		go s.Close() // the clients see their connections close meanwhile
		t.closing = append(t.closing, s)
		return nil
	}
	return fmt.Errorf("instance %s is not running", name)
}

// restartInst starts instance name again on its data directory.
func (t *Tandem) restartInst(ctx context.Context, name string) error {
	in := t.insts[0]
	if name == "B" {
		in = t.insts[1]
	}
	if len(t.Cmd) == 0 {
		// In-process: the closed server must have released its ports and
		// its journal first.
		for _, s := range t.closing {
			s.Close()
		}
		t.closing = nil
		return t.startInst(ctx, in)
	}
	// The new process binds the ports its predecessor held a moment ago: if
	// it exits at once, try again briefly.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = t.startInst(ctx, in); err == nil {
			return nil
		}
		p := t.p
		if name == "B" {
			p = t.pB
		}
		if p == nil || !p.exited() {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// instStats returns the stat document of instance name of the pair.
func (t *Tandem) instStats(ctx context.Context, name string) (*wire.Stats, error) {
	srv, addr := t.srv, t.addr
	if name == "B" {
		srv, addr = t.srvB, t.addrB
	}
	if len(t.Cmd) == 0 {
		if srv == nil {
			return nil, fmt.Errorf("instance %s is not running", name)
		}
		return srv.Stats(), nil
	}
	return statsOf(ctx, addr, t.clientName("stat"))
}
