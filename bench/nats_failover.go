package bench

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// The failover scenario for the replicated NATS peers (nats-r3-always,
// nats-r3-default): kill the stream leader and measure how long the
// clients wait.
//
// On the 3-node cluster with the R3 stream (nats_cluster.go): a publisher
// on an open-loop schedule (Settings.FailoverPeerRate msgs/s of
// FailoverSize bytes to bench.failover, js.PublishAsync with a window of
// natsFoWindow, each message with a Msg-Id so a retried publish is not
// stored twice; a publish whose PubAck fails or does not come within
// natsFoAckTimeout is sent again) and a subscriber (a durable push
// consumer, replicated with the stream, AckNone, DeliverNew), each on its
// own connection listing all three servers, the stream leader's last.
// Each run waits until the stream has a leader and both followers are
// current and the subscriber is close behind the publisher, SIGKILLs the
// stream leader's nats-server and measures from the kill to
//   - the first PubAck of a publish sent after the kill (time to the next
//     acknowledged publish), and
//   - the first delivery of a message first published after the kill (time
//     to the next delivery): Result.Latency, as Tandem's failover time;
//
// then starts the killed server again on its store directory and waits
// until it is current. JetStream elects a new leader after its raft
// election timeout (4-9 s in nats-server 2.15, not configurable in the
// configuration file). When the clients' server happens to be the one
// killed (the leader can move to it), the clients reconnect as well
// (ReconnectWait 50 ms): FailoverStats.ClientNodeKilled counts those runs.
// At the end every message acknowledged must have been delivered
// (FailoverStats.Lost counts those that were not).

const (
	natsFoWindow     = 1000
	natsFoAckTimeout = 500 * time.Millisecond
	natsFoTimeout    = 30 * time.Second // kill -> next ack and next delivery
	natsFoHealthy    = 60 * time.Second // restart -> stream healthy, clients flowing
)

func natsFailoverKey(set *Settings) string {
	return fmt.Sprintf("failover size=%d rate=%d kill=stream-leader", set.FailoverSize, set.FailoverPeerRate)
}

// runNATSFailover is the failover scenario of a replicated NATS peer.
func (r *runner) runNATSFailover(n *NATS) error {
	if r.set.FailoverPeerRuns <= 0 || r.set.FailoverPeerRate <= 0 {
		return nil
	}
	res := r.result(ScenFailover, natsFailoverKey(r.set))
	res.Size, res.Publishers, res.Subscribers, res.Rate, res.Mode = r.set.FailoverSize, 1, 1, float64(r.set.FailoverPeerRate), "r3"
	r.step(res, func(res *Result) error { return r.measureNATSFailover(n, res) })
	return nil
}

// natsFoPub is the failover scenario's publisher.
type natsFoPub struct {
	nc  *nats.Conn
	js  nats.JetStreamContext
	win *window
	clk monoClock

	retry   chan uint64 // indexes whose publish failed: sent again
	sent    atomic.Int64
	pending atomic.Int64 // publishes awaiting their PubAck
	acks    atomic.Int64

	mu       sync.Mutex
	acked    map[uint64]bool
	killAt   int64 // watch: the first ack of a publish sent after this
	firstAck int64

	stop atomic.Bool
	done chan struct{}
	err  error
}

func (p *natsFoPub) publish(ctx context.Context, payload []byte, idx uint64) error {
	if err := p.win.acquire(ctx); err != nil {
		return err
	}
	sentAt := p.clk.now()
	f, err := p.js.PublishAsync(failoverTopic, append([]byte(nil), payload...), nats.MsgId(strconv.FormatUint(idx, 10)))
	if err != nil {
		p.win.release()
		p.retry <- idx
		return nil
	}
	p.pending.Add(1)
	go func() {
		ok := false
		select {
		case <-f.Ok():
			ok = true
		case <-f.Err():
		case <-ctx.Done():
		}
		now := p.clk.now()
		p.mu.Lock()
		if ok {
			p.acked[idx] = true
			if p.killAt != 0 && p.firstAck == 0 && sentAt > p.killAt {
				p.firstAck = now
			}
		}
		p.mu.Unlock()
		p.win.release()
		if ok {
			p.acks.Add(1)
		} else if ctx.Err() == nil {
			p.retry <- idx
		}
		p.pending.Add(-1)
	}()
	return nil
}

func (p *natsFoPub) run(ctx context.Context, size int, rate float64) {
	defer close(p.done)
	unlock := lockForPacing()
	defer unlock()
	payload := newPayload(size)
	start := p.clk.now() + int64(time.Millisecond)
	for i := int64(0); !p.stop.Load(); i++ {
		due := intendedTime(start, i, rate)
		sleepUntil(p.clk, due)
		// Retries first (each with its original header and Msg-Id).
		for k := len(p.retry); k > 0; k-- {
			idx := <-p.retry
			putHeader(payload, idx, due)
			if err := p.publish(ctx, payload, idx); err != nil {
				p.err = err
				return
			}
		}
		putHeader(payload, uint64(i), due)
		if err := p.publish(ctx, payload, uint64(i)); err != nil {
			p.err = err
			return
		}
		p.sent.Store(i + 1)
	}
}

// natsFoSub is the failover scenario's subscriber.
type natsFoSub struct {
	clk monoClock

	mu        sync.Mutex
	got       map[uint64]bool
	repeats   int64
	watchFrom uint64 // watch: the first delivery of an index >= this
	watching  bool
	firstAt   int64
	distinct  atomic.Int64
}

func (s *natsFoSub) onMsg(m *nats.Msg) {
	now := s.clk.now()
	idx, _, ok := readHeader(m.Data)
	if !ok {
		return
	}
	s.mu.Lock()
	if s.got[idx] {
		s.repeats++
	} else {
		s.got[idx] = true
		s.distinct.Add(1)
	}
	if s.watching && s.firstAt == 0 && idx >= s.watchFrom {
		s.firstAt = now
	}
	s.mu.Unlock()
}

func (r *runner) measureNATSFailover(n *NATS, res *Result) error {
	ctx, set := r.ctx, r.set
	bin, err := n.bin()
	if err != nil {
		return err
	}
	fs := &FailoverStats{Runs: set.FailoverPeerRuns, KillMethod: "SIGKILL of the stream leader's nats-server"}
	res.Failover = fs

	// Management connection: stream state, the leader.
	mc, err := nats.Connect(n.url, nats.Name(n.Name()+"-failover-admin"), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		return err
	}
	defer mc.Close()
	mjs, err := mc.JetStream()
	if err != nil {
		return err
	}
	leader, err := n.waitStreamHealthy(ctx, mjs, "", natsFoHealthy)
	if err != nil {
		return err
	}
	// The clients list the leader's server last: they start on a follower.
	var urls []string
	for _, nd := range n.nodes {
		if nd.name != leader {
			urls = append(urls, nd.url())
		}
	}
	urls = append(urls, n.node(leader).url())
	// Connection errors are what the kill causes: not printed (nats.go's
	// default handler writes them to stderr, over the progress display).
	quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
	copts := []nats.Option{nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), quiet}

	sub := &natsFoSub{clk: r.clk, got: map[uint64]bool{}}
	snc, err := nats.Connect(strings.Join(urls, ","), append(copts, nats.Name(n.Name()+"-failover-sub"))...)
	if err != nil {
		return err
	}
	defer snc.Close()
	sjs, err := snc.JetStream()
	if err != nil {
		return err
	}
	ss, err := sjs.Subscribe(failoverTopic, sub.onMsg, nats.Durable("failover"), nats.AckNone(), nats.DeliverNew())
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	_ = ss.SetPendingLimits(-1, -1)
	defer ss.Unsubscribe()

	pnc, err := nats.Connect(strings.Join(urls, ","), append(copts, nats.Name(n.Name()+"-failover-pub"))...)
	if err != nil {
		return err
	}
	defer pnc.Close()
	pjs, err := pnc.JetStream(nats.PublishAsyncMaxPending(natsFoWindow+1), nats.PublishAsyncTimeout(natsFoAckTimeout))
	if err != nil {
		return err
	}
	pub := &natsFoPub{nc: pnc, js: pjs, win: newWindow(natsFoWindow), clk: r.clk, retry: make(chan uint64, natsFoWindow+1),
		acked: map[uint64]bool{}, done: make(chan struct{})}
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go pub.run(pctx, set.FailoverSize, float64(set.FailoverPeerRate))
	stopPub := func() {
		if pub.stop.CompareAndSwap(false, true) {
			<-pub.done
		}
	}
	defer stopPub()
	r.prog.rate(func() float64 { return float64(sub.distinct.Load()) })

	delivery, publish := newHist(), newHist()
	var restarts []float64
	stepStart := r.clk.now()
	for run := 0; run < set.FailoverPeerRuns; run++ {
		r.prog.phase(fmt.Sprintf("run %d/%d", run+1, set.FailoverPeerRuns))
		if err := r.natsFoReady(n, mjs, pub, sub); err != nil {
			return fmt.Errorf("run %d: %w", run+1, err)
		}
		si, err := mjs.StreamInfo(benchStream)
		if err != nil || si.Cluster == nil || n.node(si.Cluster.Leader) == nil {
			return fmt.Errorf("run %d: stream leader: %v", run+1, err)
		}
		victim := n.node(si.Cluster.Leader)
		if u := pnc.ConnectedUrl(); u == victim.url() {
			fs.ClientNodeKilled++
		}
		killedAt := r.clk.now()
		pub.mu.Lock()
		pub.killAt, pub.firstAck = killedAt, 0
		pub.mu.Unlock()
		sub.mu.Lock()
		sub.watchFrom, sub.watching, sub.firstAt = uint64(pub.sent.Load()), true, 0
		sub.mu.Unlock()
		if err := victim.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return fmt.Errorf("run %d: kill %s: %w", run+1, victim.name, err)
		}
		<-victim.p.done
		fs.Killed = append(fs.Killed, victim.name)
		deadline := time.Now().Add(natsFoTimeout)
		var ackAt, delAt int64
		for {
			pub.mu.Lock()
			ackAt = pub.firstAck
			pub.mu.Unlock()
			sub.mu.Lock()
			delAt = sub.firstAt
			sub.mu.Unlock()
			if (ackAt != 0 && delAt != 0) || time.Now().After(deadline) {
				break
			}
			if err := sleepCtx(ctx, time.Millisecond); err != nil {
				return err
			}
		}
		now := r.clk.now()
		if ackAt == 0 || delAt == 0 {
			fs.Timeouts++
		}
		if ackAt == 0 {
			ackAt = now
		}
		if delAt == 0 {
			delAt = now
		}
		pub.mu.Lock()
		pub.killAt = 0
		pub.mu.Unlock()
		sub.mu.Lock()
		sub.watching = false
		sub.mu.Unlock()
		recordClamped(delivery, delAt-killedAt)
		recordClamped(publish, ackAt-killedAt)
		fs.TimesUs = append(fs.TimesUs, float64(delAt-killedAt)/1e3)
		fs.PublishTimesUs = append(fs.PublishTimesUs, float64(ackAt-killedAt)/1e3)
		if err := n.startNode(bin, victim); err != nil {
			return fmt.Errorf("run %d: restart %s: %w", run+1, victim.name, err)
		}
		if err := waitDial(ctx, fmt.Sprintf("127.0.0.1:%d", victim.port), victim.p); err != nil {
			return fmt.Errorf("run %d: restart %s: %w", run+1, victim.name, err)
		}
		if err := r.natsFoReady(n, mjs, pub, sub); err != nil {
			return fmt.Errorf("run %d: after restarting %s: %w", run+1, victim.name, err)
		}
		restarts = append(restarts, float64(r.clk.now()-killedAt)/1e6)
	}
	stepEnd := r.clk.now()
	stopPub()
	// Outstanding publishes and retries: each is acknowledged or given up.
	deadline := time.Now().Add(set.DrainTimeout)
	for time.Now().Before(deadline) {
		for k := len(pub.retry); k > 0; k-- {
			idx := <-pub.retry
			payload := newPayload(set.FailoverSize)
			putHeader(payload, idx, r.clk.now())
			_ = pub.publish(ctx, payload, idx)
		}
		if pub.pending.Load() == 0 && len(pub.retry) == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Every acknowledged message is delivered.
	pub.mu.Lock()
	acked := make([]uint64, 0, len(pub.acked))
	for idx := range pub.acked {
		acked = append(acked, idx)
	}
	pub.mu.Unlock()
	for time.Now().Before(deadline) && sub.distinct.Load() < int64(len(acked)) {
		time.Sleep(5 * time.Millisecond)
	}
	sub.mu.Lock()
	for _, idx := range acked {
		if !sub.got[idx] {
			fs.Lost++
		}
	}
	fs.Duplicates = uint64(sub.repeats)
	received := sub.distinct.Load() + sub.repeats
	sub.mu.Unlock()
	if len(restarts) > 0 {
		sorted := append([]float64(nil), restarts...)
		sort.Float64s(sorted)
		fs.RestartP50Ms = sorted[len(sorted)/2]
	}
	res.Latency = summarize(delivery)
	fs.PublishLatency = summarize(publish)
	res.Sent = pub.sent.Load()
	res.Acked = int64(len(acked))
	res.Received = received
	res.DurationSec = float64(stepEnd-stepStart) / 1e9
	if res.DurationSec > 0 {
		res.PublishRate = float64(res.Sent) / res.DurationSec
	}
	var notes []string
	if fs.Lost > 0 {
		notes = append(notes, fmt.Sprintf("%d acknowledged messages never delivered", fs.Lost))
		res.Saturated = true
	}
	if fs.Timeouts > 0 {
		notes = append(notes, fmt.Sprintf("%d of %d runs without an ack or a delivery within %s (counted as %s)", fs.Timeouts, fs.Runs, natsFoTimeout, natsFoTimeout))
		res.Saturated = true
	}
	if len(notes) > 0 {
		res.Note = strings.Join(notes, "; ")
	}
	return nil
}

// natsFoReady waits until every node runs, the stream has a leader with
// both followers current, and the subscriber is within 50 ms of messages
// of the publisher, after failoverSettle of steady publishing.
func (r *runner) natsFoReady(n *NATS, js nats.JetStreamContext, pub *natsFoPub, sub *natsFoSub) error {
	if _, err := n.waitStreamHealthy(r.ctx, js, "", natsFoHealthy); err != nil {
		return err
	}
	if err := sleepCtx(r.ctx, failoverSettle); err != nil {
		return err
	}
	behind := int64(max(10, r.set.FailoverPeerRate/20))
	deadline := time.Now().Add(natsFoHealthy)
	for {
		select {
		case <-pub.done:
			if pub.err != nil {
				return pub.err
			}
			return fmt.Errorf("publisher stopped")
		default:
		}
		if pub.sent.Load()-sub.distinct.Load() <= behind && pub.pending.Load() < behind && len(pub.retry) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("subscriber %d messages behind the publisher (%d PubAcks pending) after %s", pub.sent.Load()-sub.distinct.Load(), pub.pending.Load(), natsFoHealthy)
		}
		if err := sleepCtx(r.ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}
