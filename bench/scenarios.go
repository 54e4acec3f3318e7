package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Scenario names (Result.Scenario).
const (
	ScenPublish    = "publish"
	ScenAckLatency = "ack-latency"
	ScenE2E        = "e2e-latency"
	ScenFanout     = "fanout"
	ScenReplay     = "replay"
	ScenPair       = "pair"     // Tandem only: single instance vs sync pair vs async pair (variants.go)
	ScenEngine     = "engine"   // Tandem only: io_uring vs epoll (variants.go)
	ScenFailover   = "failover" // Tandem only: HA client failover time on a sync pair (failover.go)
	ScenTLS        = "tls"      // Tandem only, opt-in: plaintext vs TLS on the client port (tls.go)
)

// scenario is one entry of the matrix. A scenario whose feature does not
// exist yet has needs set and run nil: it is listed in the report as not
// measured. Adding it means writing run (and, for replication or the HA
// client, a System method or an optional interface the adapters implement).
type scenario struct {
	name  string
	title string
	needs string
	run   func(r *runner) error
	// optIn: not in the default scenario list (DefaultSettings); run only
	// when named (--scenarios).
	optIn bool
}

func scenarios() []scenario {
	return []scenario{
		{name: ScenPublish, title: "durable publish throughput", run: (*runner).runPublish},
		{name: ScenAckLatency, title: "persisted-ack latency at fixed rates", run: (*runner).runAckLatency},
		{name: ScenE2E, title: "end-to-end latency at fixed rates", run: (*runner).runE2E},
		{name: ScenFanout, title: "fan-out", run: (*runner).runFanout},
		{name: ScenReplay, title: "replay from EPOCH", run: (*runner).runReplay},
		{name: ScenPair, title: "sync pair and async pair (durable publish through two replicating instances)", run: (*runner).runPair},
		{name: ScenEngine, title: "io_uring vs epoll event loops", run: (*runner).runEngine},
		{name: ScenFailover, title: "failover time seen by the HA client", run: (*runner).runFailover},
		{name: ScenTLS, title: "TLS vs plaintext on the client port (durable publish, persisted-ack and end-to-end latency)", run: (*runner).runTLS, optIn: true},
	}
}

// pubRun is one publisher's measurement.
type pubRun struct {
	pub      Publisher
	clk      monoClock
	ring     []atomic.Int64 // due time of message i at i & mask
	sentRing []atomic.Int64 // actual send time
	mask     uint64
	end      atomic.Int64 // acks after this (ns) are not counted in the rate

	mu        sync.Mutex // guards the histograms (the ack callback's goroutine vs the final read)
	corrected *hdrhistogram.Histogram
	raw       *hdrhistogram.Histogram
	acked     atomic.Int64 // acks counted (before end)
	ackedAll  atomic.Int64 // all acks
	lastAck   atomic.Int64 // time of the last ack
	sent      int64

	schedStart int64   // fixed rate: the schedule's origin (ns)
	schedRate  float64 // fixed rate: msgs/s of this publisher; 0 = closed loop
}

// dueOf returns when message i was due.
func (pr *pubRun) dueOf(i int64) int64 {
	if pr.schedRate > 0 {
		return intendedTime(pr.schedStart, i, pr.schedRate)
	}
	return pr.ring[uint64(i)&pr.mask].Load()
}

func newPubRun(clk monoClock, window int) *pubRun {
	n := 1
	for n < 2*window {
		n <<= 1
	}
	pr := &pubRun{clk: clk, ring: make([]atomic.Int64, n), sentRing: make([]atomic.Int64, n), mask: uint64(n - 1),
		corrected: newHist(), raw: newHist()}
	pr.end.Store(math.MaxInt64)
	return pr
}

func (pr *pubRun) onAck(i uint64) {
	now := pr.clk.now()
	due := pr.ring[i&pr.mask].Load()
	sent := pr.sentRing[i&pr.mask].Load()
	pr.mu.Lock()
	recordClamped(pr.corrected, now-due)
	recordClamped(pr.raw, now-sent)
	pr.mu.Unlock()
	if now <= pr.end.Load() {
		pr.acked.Add(1)
	}
	pr.ackedAll.Add(1)
	pr.lastAck.Store(now)
}

// publishLoop publishes messages of size bytes: as fast as the window
// allows when rate is 0, else on an open-loop schedule at rate msgs/s.
// It stops at clk time stop, or after max messages (max > 0), or when stopFn
// returns true. It returns the pacer lag histogram (fixed rate only).
func (pr *pubRun) publishLoop(ctx context.Context, size int, rate float64, start, stop int64, max int64) (*hdrhistogram.Histogram, error) {
	payload := newPayload(size)
	var lag *hdrhistogram.Histogram
	if rate > 0 {
		unlock := lockForPacing()
		defer unlock()
		lag = newHist()
	}
	for i := int64(0); max <= 0 || i < max; i++ {
		due := pr.clk.now()
		if rate > 0 {
			due = intendedTime(start, i, rate)
			if due >= stop {
				break
			}
			sleepUntil(pr.clk, due)
		}
		now := pr.clk.now()
		// Closed loop: stop at the end of the interval. Fixed rate: every
		// message due before the end is sent, unless the system held the
		// window full well past the end (the rest are counted unsent).
		if (rate == 0 && now >= stop) || now >= stop+int64(100*time.Millisecond) {
			break
		}
		if lag != nil {
			recordClamped(lag, now-due)
		}
		pr.ring[uint64(i)&pr.mask].Store(due)
		pr.sentRing[uint64(i)&pr.mask].Store(now)
		putHeader(payload, uint64(i), due)
		if err := pr.pub.Publish(ctx, payload); err != nil {
			return lag, fmt.Errorf("publish %d: %w", i, err)
		}
		pr.sent = i + 1
	}
	return lag, nil
}

// runner runs the matrix for one system.
type runner struct {
	ctx  context.Context
	sys  System
	set  *Settings
	clk  monoClock
	prog *progress
	add  func(Result)
	// maxRate is this system's 1-publisher publish throughput per message
	// size, from this run (for the knee rate).
	maxRate map[int]float64
}

// withServer starts a fresh server in a new temporary directory, runs f and
// stops the server and removes the directory.
func (r *runner) withServer(f func() error) error {
	dir, err := os.MkdirTemp(r.set.DataDir, "tandem-bench-"+r.sys.Name()+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := r.sys.Start(r.ctx, dir); err != nil {
		return fmt.Errorf("start %s: %w", r.sys.Name(), err)
	}
	ferr := r.warmUp()
	if ferr == nil {
		ferr = f()
	}
	serr := r.sys.Stop()
	if ferr != nil {
		return ferr
	}
	return serr
}

// warmUp publishes a few hundred messages on its own connection and waits
// for their acks, so no step measures a server's first writes (file
// creation, first segment, JIT-less but cold caches).
func (r *runner) warmUp() error {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	p, err := r.sys.NewPublisher(ctx, "warmup", 256, func(uint64) {})
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	defer p.Close()
	payload := newPayload(128)
	for i := 0; i < 500; i++ {
		if err := p.Publish(ctx, payload); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	if err := p.Wait(ctx); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	return nil
}

func (r *runner) result(scen, key string) Result {
	return Result{Scenario: scen, System: r.sys.Name(), Key: key}
}

// step runs one measurement: it announces it, runs it against a fresh
// server, and records its result (or its error).
func (r *runner) step(res Result, f func(res *Result) error) {
	r.prog.begin(r.sys.Name(), res.Key)
	err := r.withServer(func() error {
		t, ok := r.sys.(*Tandem)
		if !ok {
			return f(&res)
		}
		res.EngineInUse = t.engineInUse(r.ctx)
		before := t.stageSnapshot(r.ctx)
		err := f(&res)
		res.Stages = stagesSince(before, t.stageSnapshot(r.ctx))
		r.prog.sayStages(&res)
		return err
	})
	if err != nil {
		res.Error = err.Error()
	}
	r.prog.end(&res)
	r.add(res)
}

func (r *runner) runPublish() error {
	for _, size := range r.set.Sizes {
		for _, pubs := range r.set.Publishers {
			res := r.result(ScenPublish, fmt.Sprintf("publish size=%d pubs=%d", size, pubs))
			res.Size, res.Publishers = size, pubs
			r.step(res, func(res *Result) error {
				if err := r.measurePublish(res, size, pubs, 0); err != nil {
					return err
				}
				if pubs == 1 && res.Error == "" {
					r.maxRate[size] = res.MsgsPerSec
				}
				return nil
			})
		}
	}
	return nil
}

// measurePublish runs pubs publishers for the configured duration at rate
// (0: as fast as the window allows; else the total offered rate, split
// evenly) and fills res.
func (r *runner) measurePublish(res *Result, size, pubs int, rate float64) error {
	ctx := r.ctx
	prs := make([]*pubRun, pubs)
	for k := range prs {
		pr := newPubRun(r.clk, r.set.Window)
		p, err := r.sys.NewPublisher(ctx, fmt.Sprintf("pub%d", k), r.set.Window, pr.onAck)
		if err != nil {
			return err
		}
		pr.pub = p
		prs[k] = pr
		defer p.Close()
	}
	return r.drive(res, prs, size, rate, nil)
}

// drive runs the publishers of prs over the measured interval, drains, and
// fills res with rates and ack latencies. extraWait, if set, is called after
// the publishers drained (before the stop time is final) and returns the
// time to use as the end of the measurement.
func (r *runner) drive(res *Result, prs []*pubRun, size int, rate float64, afterDrain func(deadline time.Time)) error {
	ctx := r.ctx
	d := r.set.Duration
	start := r.clk.now() + int64(5*time.Millisecond)
	stop := start + int64(d)
	per := rate / float64(len(prs))
	for _, pr := range prs {
		pr.end.Store(stop)
		pr.schedStart, pr.schedRate = start, per
	}
	var wg sync.WaitGroup
	errs := make([]error, len(prs))
	lags := make([]*hdrhistogram.Histogram, len(prs))
	r.prog.rate(func() float64 {
		var n int64
		for _, pr := range prs {
			n += pr.ackedAll.Load()
		}
		return float64(n)
	})
	for k, pr := range prs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if per == 0 {
				sleepUntil(r.clk, start)
			}
			lags[k], errs[k] = pr.publishLoop(ctx, size, per, start, stop, 0)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Drain: wait for the outstanding acks.
	dctx, cancel := context.WithTimeout(ctx, r.set.DrainTimeout)
	defer cancel()
	for _, pr := range prs {
		_ = pr.pub.Wait(dctx)
	}
	deadline := time.Now()
	if afterDrain != nil {
		afterDrain(deadline.Add(r.set.DrainTimeout))
	}
	drainEnd := r.clk.now()
	corrected, raw, lag := newHist(), newHist(), newHist()
	var sent, acked, ackedAll, errCount int64
	for k, pr := range prs {
		pr.mu.Lock()
		// Messages sent but never acknowledged within the drain timeout
		// waited at least until now: recorded as such (lower bounds), so
		// a saturated system cannot look better by losing its tail.
		for i := pr.ackedAll.Load(); i < pr.sent; i++ {
			recordClamped(pr.corrected, drainEnd-pr.dueOf(i))
		}
		corrected.Merge(pr.corrected)
		raw.Merge(pr.raw)
		pr.mu.Unlock()
		if lags[k] != nil {
			lag.Merge(lags[k])
		}
		sent += pr.sent
		acked += pr.acked.Load()
		ackedAll += pr.ackedAll.Load()
		errCount += int64(pr.pub.Errors())
	}
	// Scheduled messages the publishers never got to send (the system held
	// the window full past the end of the interval) were also delayed at
	// least until now.
	if rate > 0 {
		for _, pr := range prs {
			for i := pr.sent; ; i++ {
				due := intendedTime(start, i, per)
				if due >= stop {
					break
				}
				res.Unsent++
				recordClamped(corrected, drainEnd-due)
			}
		}
	}
	secs := d.Seconds()
	if rate == 0 {
		// Closed loop: every ack over the time to the last one. (Counting
		// only acks inside the interval would report 0 for a system slower
		// than window/interval, e.g. 4 x 8192 messages at 4k msgs/s.)
		var last int64
		for _, pr := range prs {
			if l := pr.lastAck.Load(); l > last {
				last = l
			}
		}
		if last > start {
			secs = float64(last-start) / 1e9
		}
		acked = ackedAll
	}
	res.DurationSec = secs
	res.Rate = rate
	res.Sent = sent
	res.Acked = acked
	res.Unacked = sent - ackedAll
	res.Errors = errCount
	res.MsgsPerSec = float64(acked) / secs
	res.MBPerSec = res.MsgsPerSec * float64(size) / 1e6
	if rate > 0 {
		res.Latency = summarize(corrected)
		res.RawLatency = summarize(raw)
		if l := summarize(lag); l != nil {
			res.PacerLagP99 = l.P99
		}
		res.Saturated = res.Unsent > 0 || res.Unacked > 0 || res.MsgsPerSec < 0.95*rate
	} else {
		// Closed loop: latency from the actual send (no schedule).
		res.Latency = summarize(raw)
		res.Unacked = sent - ackedAll
	}
	return nil
}

func (r *runner) rates() []rateSpec {
	var out []rateSpec
	for _, rt := range r.set.Rates {
		out = append(out, rateSpec{label: fmt.Sprint(rt), rate: float64(rt)})
	}
	if r.set.KneeFraction > 0 {
		if max := r.maxRate[r.kneeSize()]; max > 0 {
			out = append(out, rateSpec{label: fmt.Sprintf("knee(%.0f%%)", r.set.KneeFraction*100), rate: math.Floor(max * r.set.KneeFraction)})
		}
	}
	return out
}

// kneeSize is the publish size whose 1-publisher throughput sets the knee:
// the one closest to the latency scenarios' size.
func (r *runner) kneeSize() int {
	best, bd := 0, math.MaxInt
	for s := range r.maxRate {
		d := s - r.set.LatencySize
		if d < 0 {
			d = -d
		}
		if d < bd || (d == bd && s < best) {
			best, bd = s, d
		}
	}
	return best
}

type rateSpec struct {
	label string
	rate  float64
}

func (r *runner) runAckLatency() error {
	for _, rs := range r.rates() {
		res := r.result(ScenAckLatency, fmt.Sprintf("ack-latency size=%d rate=%s", r.set.LatencySize, rs.label))
		res.Size, res.Publishers, res.RateLabel = r.set.LatencySize, 1, rs.label
		r.step(res, func(res *Result) error { return r.measurePublish(res, r.set.LatencySize, 1, rs.rate) })
	}
	return nil
}

// subRun counts and times what one subscriber receives.
type subRun struct {
	clk      monoClock
	mu       sync.Mutex
	hist     *hdrhistogram.Histogram
	received atomic.Int64
	bad      atomic.Int64 // out of order, duplicate or malformed
	next     uint64       // next index expected
	last     atomic.Int64
	latency  bool
}

func (s *subRun) onMsg(p []byte) {
	now := s.clk.now()
	idx, due, ok := readHeader(p)
	if !ok || idx != s.next {
		s.bad.Add(1)
	}
	s.next = idx + 1
	if s.latency {
		s.mu.Lock()
		recordClamped(s.hist, now-due)
		s.mu.Unlock()
	}
	s.received.Add(1)
	s.last.Store(now)
}

// waitReceived waits until every subscriber got n messages or the
// deadline passes.
func waitReceived(subs []*subRun, n int64, deadline time.Time) bool {
	for {
		all := true
		for _, s := range subs {
			if s.received.Load() < n {
				all = false
				break
			}
		}
		if all {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r *runner) runE2E() error {
	for _, rs := range r.rates() {
		res := r.result(ScenE2E, fmt.Sprintf("e2e-latency size=%d rate=%s", r.set.LatencySize, rs.label))
		res.Size, res.Publishers, res.Subscribers, res.RateLabel = r.set.LatencySize, 1, 1, rs.label
		r.step(res, func(res *Result) error { return r.measureE2E(res, rs.rate) })
	}
	return nil
}

// measureE2E runs one end-to-end latency step: one subscriber (From(Now)),
// one publisher at rate msgs/s of LatencySize bytes; res gets what the
// subscriber saw (Latency) and the acks (AckLatency).
func (r *runner) measureE2E(res *Result, rate float64) error {
	sr := &subRun{clk: r.clk, hist: newHist(), latency: true}
	sub, err := r.sys.Subscribe(r.ctx, "sub", false, sr.onMsg)
	if err != nil {
		return err
	}
	defer sub.Close()
	pr := newPubRun(r.clk, r.set.Window)
	p, err := r.sys.NewPublisher(r.ctx, "pub", r.set.Window, pr.onAck)
	if err != nil {
		return err
	}
	defer p.Close()
	pr.pub = p
	var complete bool
	if err := r.drive(res, []*pubRun{pr}, r.set.LatencySize, rate, func(deadline time.Time) {
		complete = waitReceived([]*subRun{sr}, pr.sent, deadline)
	}); err != nil {
		return err
	}
	// The publish figures of drive describe acks; this scenario
	// reports what the subscriber saw.
	ackLat := res.Latency
	now := r.clk.now()
	sr.mu.Lock()
	h := sr.hist
	if !complete {
		// Not received by the deadline: delayed at least until now.
		for i := sr.received.Load(); i < pr.sent; i++ {
			recordClamped(h, now-pr.dueOf(i))
		}
	}
	res.Latency = summarize(h)
	sr.mu.Unlock()
	res.AckLatency = ackLat
	res.Received = sr.received.Load()
	res.Bad = sr.bad.Load()
	if !complete || res.Unsent > 0 {
		res.Saturated = true
	}
	return nil
}

func (r *runner) runFanout() error {
	for _, n := range r.set.Fanout {
		res := r.result(ScenFanout, fmt.Sprintf("fanout size=%d subs=%d", r.set.FanoutSize, n))
		res.Size, res.Publishers, res.Subscribers = r.set.FanoutSize, 1, n
		r.step(res, func(res *Result) error { return r.measureFanout(res, n, false) })
	}
	return nil
}

// measureFanout publishes to n subscribers (one publisher, closed loop) and
// fills res with the deliveries/s; with latency, also with the delivery
// latency (send -> received, every subscriber) and the publisher's ack
// latency.
func (r *runner) measureFanout(res *Result, n int, latency bool) error {
	subs := make([]*subRun, n)
	for k := range subs {
		subs[k] = &subRun{clk: r.clk, latency: latency}
		if latency {
			subs[k].hist = newHist()
		}
		s, err := r.sys.Subscribe(r.ctx, fmt.Sprintf("sub%d", k), false, subs[k].onMsg)
		if err != nil {
			return err
		}
		defer s.Close()
	}
	pr := newPubRun(r.clk, r.set.Window)
	p, err := r.sys.NewPublisher(r.ctx, "pub", r.set.Window, pr.onAck)
	if err != nil {
		return err
	}
	defer p.Close()
	pr.pub = p
	start := r.clk.now()
	stop := start + int64(r.set.Duration)
	r.prog.rate(func() float64 {
		var t int64
		for _, s := range subs {
			t += s.received.Load()
		}
		return float64(t)
	})
	if _, err := pr.publishLoop(r.ctx, r.set.FanoutSize, 0, start, stop, r.set.FanoutMessages); err != nil {
		return err
	}
	pubEnd := r.clk.now()
	dctx, cancel := context.WithTimeout(r.ctx, r.set.DrainTimeout)
	_ = p.Wait(dctx)
	cancel()
	complete := waitReceived(subs, pr.sent, time.Now().Add(r.set.FanoutTimeout))
	var total, bad, last int64
	for _, s := range subs {
		total += s.received.Load()
		bad += s.bad.Load()
		if l := s.last.Load(); l > last {
			last = l
		}
	}
	elapsed := float64(last-start) / 1e9
	if elapsed <= 0 {
		elapsed = float64(r.clk.now()-start) / 1e9
	}
	res.Sent = pr.sent
	res.Acked = pr.ackedAll.Load()
	res.Received = total
	res.Bad = bad
	res.DurationSec = elapsed
	res.MsgsPerSec = float64(total) / elapsed
	res.MBPerSec = res.MsgsPerSec * float64(r.set.FanoutSize) / 1e6
	res.PublishRate = float64(pr.sent) / (float64(pubEnd-start) / 1e9)
	if latency {
		// Closed loop: from the actual send (the header's due time). A
		// message not received by the timeout is not in it (the step is
		// marked saturated).
		h := newHist()
		for _, s := range subs {
			s.mu.Lock()
			h.Merge(s.hist)
			s.mu.Unlock()
		}
		res.Latency = summarize(h)
		pr.mu.Lock()
		res.AckLatency = summarize(pr.raw)
		pr.mu.Unlock()
	}
	if !complete {
		res.Saturated = true
		res.Note = fmt.Sprintf("not every subscriber received all %d messages within %s", pr.sent, r.set.FanoutTimeout)
	}
	return nil
}

func (r *runner) runReplay() error {
	if reason, skip := r.set.ReplaySkip[r.sys.Name()]; skip {
		res := r.result(ScenReplay, fmt.Sprintf("replay size=%d", r.set.ReplaySize))
		res.Skipped = reason
		r.add(res)
		return nil
	}
	res := r.result(ScenReplay, fmt.Sprintf("replay size=%d", r.set.ReplaySize))
	res.Size, res.Subscribers = r.set.ReplaySize, 1
	r.step(res, func(res *Result) error {
		// Preload with 4 publishers, as fast as the window allows.
		const pubs = 4
		prs := make([]*pubRun, pubs)
		each := (r.set.ReplayMessages + pubs - 1) / pubs
		r.prog.phase("preload")
		r.prog.rate(func() float64 {
			var n int64
			for _, pr := range prs {
				if pr != nil {
					n += pr.ackedAll.Load()
				}
			}
			return float64(n)
		})
		var wg sync.WaitGroup
		errs := make([]error, pubs)
		start := r.clk.now()
		stop := start + int64(r.set.ReplayPreloadTimeout)
		for k := range prs {
			pr := newPubRun(r.clk, r.set.Window)
			p, err := r.sys.NewPublisher(r.ctx, fmt.Sprintf("load%d", k), r.set.Window, pr.onAck)
			if err != nil {
				return err
			}
			defer p.Close()
			pr.pub = p
			prs[k] = pr
		}
		for k, pr := range prs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[k] = pr.publishLoop(r.ctx, r.set.ReplaySize, 0, start, stop, int64(each))
				if errs[k] == nil {
					errs[k] = pr.pub.Wait(r.ctx)
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		var total int64
		for _, pr := range prs {
			total += pr.sent
		}
		res.Messages = total
		res.PublishRate = float64(total) / (float64(r.clk.now()-start) / 1e9)
		if total < int64(r.set.ReplayMessages) {
			res.Note = fmt.Sprintf("preload stopped after %s at %d messages", r.set.ReplayPreloadTimeout, total)
		}
		// Replay from the start. Messages of 4 publishers interleave, so
		// the order check is per publisher: done by counting only.
		r.prog.phase("replay")
		var got atomic.Int64
		var last atomic.Int64
		r.prog.rate(func() float64 { return float64(got.Load()) })
		t0 := r.clk.now()
		sub, err := r.sys.Subscribe(r.ctx, "replay", true, func(p []byte) {
			if len(p) == r.set.ReplaySize {
				got.Add(1)
			}
			last.Store(r.clk.now())
		})
		if err != nil {
			return err
		}
		defer sub.Close()
		deadline := time.Now().Add(r.set.ReplayTimeout)
		for got.Load() < total && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		n := got.Load()
		elapsed := float64(last.Load()-t0) / 1e9
		res.Received = n
		res.DurationSec = elapsed
		if elapsed > 0 {
			res.MsgsPerSec = float64(n) / elapsed
			res.MBPerSec = res.MsgsPerSec * float64(r.set.ReplaySize) / 1e6
		}
		if n < total {
			res.Saturated = true
			res.Note = fmt.Sprintf("received %d of %d within %s", n, total, r.set.ReplayTimeout)
		}
		return nil
	})
	return nil
}
