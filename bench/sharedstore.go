package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tandemhq/tandem/client"
)

// The failover scenario's shared-store variant (docs/ha.md): two `tandem
// serve --shared-store` processes on one data directory, the same HA
// publisher and subscriber as the replicated pair's step (failover.go),
// given both addresses. Each run waits until both clients are connected
// and the subscriber is receiving, SIGKILLs the process the subscriber is
// on (the active), and measures from the kill to the first message the
// subscriber receives through the other address (the passive that took
// over the lock, recovered the journal and started serving), checking it
// is the one right after the last message before. The killed process is
// started again as the new passive, so runs alternate. It needs the serve
// binary (`tandem bench` runs it as a process); in-process benches skip it.
// Then durable publish (closed loop) and persisted-ack latency (the
// failover rate) of a shared-store active next to a sync pair, each on
// fresh servers: results keyed "failover compare ...".

// sharedStoreMode is the Mode of the shared-store failover result.
const sharedStoreMode = "shared-store"

func sharedFailoverKey(set *Settings) string {
	return fmt.Sprintf("failover shared-store size=%d rate=%d heartbeat=%s", set.FailoverSize, set.FailoverRate, set.FailoverHeartbeat)
}

// runSharedFailover runs the shared-store variant after the pair's.
func (r *runner) runSharedFailover(t *Tandem) {
	if len(t.Cmd) == 0 {
		return
	}
	res := r.result(ScenFailover, sharedFailoverKey(r.set))
	res.Size, res.Publishers, res.Subscribers, res.Rate, res.Mode = r.set.FailoverSize, 1, 1, float64(r.set.FailoverRate), sharedStoreMode
	r.prog.begin(r.sys.Name(), res.Key)
	if err := r.measureSharedFailover(t, &res); err != nil {
		res.Error = err.Error()
	}
	r.prog.end(&res)
	r.add(res)
	// Durable publish and persisted-ack latency, shared store (the
	// active, a passive beside it) vs a sync pair, on fresh servers.
	size, rate := set128(r.set), r.set.FailoverRate
	for _, mode := range []string{"sync", sharedStoreMode} {
		v := t.variant(mode, t.Engine)
		rv := r.on(v)
		pres := r.result(ScenFailover, fmt.Sprintf("failover compare publish size=%d pubs=1 mode=%s", size, mode))
		pres.Size, pres.Publishers, pres.Mode = size, 1, mode
		rv.step(pres, func(res *Result) error { return rv.measurePublish(res, size, 1, 0) })
		lres := r.result(ScenFailover, fmt.Sprintf("failover compare ack-latency size=%d rate=%d mode=%s", size, rate, mode))
		lres.Size, lres.Publishers, lres.Mode, lres.RateLabel = size, 1, mode, fmt.Sprint(rate)
		rv.step(lres, func(res *Result) error { return rv.measurePublish(res, size, 1, float64(rate)) })
	}
}

// set128 is the message size of the comparison: the failover step's.
func set128(set *Settings) int { return set.FailoverSize }

// startShared starts a shared-store pair for a measurement on one
// instance: the active at t.addr, a passive (same directory, same name)
// at t.addrB; Stop stops both.
func (t *Tandem) startShared(ctx context.Context, dir string) error {
	if len(t.Cmd) == 0 {
		return errors.New("shared-store needs the tandem binary (--shared-store is tandem serve's)")
	}
	n := &sharedNodes{t: t, dir: filepath.Join(dir, "data")}
	for i := range n.addrs {
		p, err := freePort()
		if err != nil {
			return err
		}
		n.addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	t.addr, t.addrB = n.addrs[0], n.addrs[1]
	err := n.start(ctx, 0)
	t.p = n.procs[0]
	if err == nil {
		err = n.waitServing(ctx, t.addr)
	}
	if err == nil {
		err = n.start(ctx, 1)
		t.pB = n.procs[1]
	}
	return err
}

// sharedNodes are the processes of a shared-store pair.
type sharedNodes struct {
	t     *Tandem
	dir   string // the shared data directory
	addrs [2]string
	procs [2]*proc
}

func (n *sharedNodes) start(ctx context.Context, i int) error {
	args := append(append([]string(nil), n.t.Cmd[1:]...),
		"--shared-store", "--name", "bench-shared", "--listen", n.addrs[i], "--data", n.dir, "--log-level", "warn")
	if n.t.Engine != "" {
		args = append(args, "--engine", n.t.Engine)
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ { // the port its predecessor just released
		var p *proc
		p, err = startProc(fmt.Sprintf("tandem-shared-%d", i), n.t.Cmd[0], args, filepath.Dir(n.dir))
		if err != nil {
			return err
		}
		n.procs[i] = p
		if err = waitDial(ctx, n.addrs[i], p); err == nil || !p.exited() {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (n *sharedNodes) stop() {
	for _, p := range n.procs {
		if p != nil {
			p.stop()
		}
	}
}

// waitServing waits until addr answers stat as the active (not standby).
func (n *sharedNodes) waitServing(ctx context.Context, addr string) error {
	deadline := time.Now().Add(failoverHealthy)
	for {
		st, err := statsOf(ctx, addr, n.t.clientName("tandem-stat-bench"))
		if err == nil && st.State == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving after %s (%v)", addr, failoverHealthy, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sharedSub is the subscriber's side: like foSub, but the address a
// delivery came through tells the instances apart (they share a name).
type sharedSub struct {
	clk monoClock
	h   *client.HAClient
	bms client.BookmarkStore

	mu       sync.Mutex
	have     bool
	next     uint64
	bad      int64
	watchURI string
	firstAt  int64
	firstOK  bool
	received atomic.Int64
}

func (s *sharedSub) onMsg(m *client.Message) {
	now := s.clk.now()
	idx, _, ok := readHeader(m.Payload)
	s.mu.Lock()
	if !ok {
		s.bad++
	} else {
		if s.have && idx != s.next {
			s.bad++
		}
		if s.watchURI != "" && s.firstAt == 0 {
			if uri, _ := s.h.Server(); uri == s.watchURI {
				s.firstAt = now
				s.firstOK = s.have && idx == s.next
			}
		}
		s.next, s.have = idx+1, true
	}
	s.mu.Unlock()
	_ = s.bms.Discard(m)
	s.received.Add(1)
}

func (s *sharedSub) nextIdx() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

func (r *runner) measureSharedFailover(t *Tandem, res *Result) error {
	ctx := r.ctx
	set := r.set
	base, err := os.MkdirTemp(set.DataDir, "tandem-bench-shared-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	n := &sharedNodes{t: t, dir: filepath.Join(base, "data")}
	for i := range n.addrs {
		p, err := freePort()
		if err != nil {
			return err
		}
		n.addrs[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	defer n.stop()
	if err := n.start(ctx, 0); err != nil {
		return err
	}
	if err := n.waitServing(ctx, n.addrs[0]); err != nil {
		return err
	}
	if err := n.start(ctx, 1); err != nil {
		return err
	}
	fs := &FailoverStats{Runs: set.FailoverRuns, HeartbeatMs: set.FailoverHeartbeat.Milliseconds(),
		KillMethod: "SIGKILL of the active's process; the passive takes the lock (polled every 100ms), recovers the journal, serves"}
	res.Failover = fs
	servers := n.addrs[:]

	var sub *sharedSub
	fc, err := r.startFailoverClients(t, servers, "shared", func(h *client.HAClient, bms *client.MemoryBookmarkStore) func(*client.Message) {
		sub = &sharedSub{clk: r.clk, h: h, bms: bms}
		return sub.onMsg
	})
	if err != nil {
		return err
	}
	defer fc.close()
	subH, pubH, hs, pub, stopPub := fc.subH, fc.pubH, fc.hs, fc.pub, fc.stopPub
	r.prog.rate(func() float64 { return float64(sub.received.Load()) })

	ready := func() error {
		deadline := time.Now().Add(failoverHealthy)
		for {
			if err := pub.stopped(); err != nil {
				return err
			}
			pu, _ := pubH.Server()
			su, _ := subH.Server()
			if pu != "" && su != "" && pub.sent.Load()-int64(sub.nextIdx()) <= max(10, int64(set.FailoverRate)/20) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("not ready after %s: publisher on %q, subscriber on %q, %d messages behind", failoverHealthy, pu, su,
					pub.sent.Load()-int64(sub.nextIdx()))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	hist := newHist()
	var restarts []float64
	stepStart := r.clk.now()
	for run := 0; run < set.FailoverRuns; run++ {
		r.prog.phase(fmt.Sprintf("shared-store run %d/%d", run+1, set.FailoverRuns))
		if err := ready(); err != nil {
			return fmt.Errorf("run %d: %w", run+1, err)
		}
		time.Sleep(failoverSettle)
		uri, _ := subH.Server()
		victim := -1
		for i, a := range n.addrs {
			if a == uri {
				victim = i
			}
		}
		if victim < 0 {
			return fmt.Errorf("run %d: subscriber on unknown address %q", run+1, uri)
		}
		other := n.addrs[1-victim]
		sub.mu.Lock()
		sub.watchURI, sub.firstAt, sub.firstOK = other, 0, false
		sub.mu.Unlock()
		killedAt := r.clk.now()
		p := n.procs[victim]
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return fmt.Errorf("run %d: kill: %w", run+1, err)
		}
		<-p.done
		fs.Killed = append(fs.Killed, fmt.Sprintf("process %d", victim))
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
		sub.watchURI = ""
		sub.mu.Unlock()
		recordClamped(hist, took)
		fs.TimesUs = append(fs.TimesUs, float64(took)/1e3)
		if err := n.start(ctx, victim); err != nil { // the new passive
			return fmt.Errorf("run %d: restart: %w", run+1, err)
		}
		restarts = append(restarts, float64(r.clk.now()-killedAt)/1e6)
	}
	stepEnd := r.clk.now()
	if err := stopPub(); err != nil {
		return err
	}
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
		fs.RestartP50Ms = median(restarts)
	}
	res.Latency = summarize(hist)
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
		notes = append(notes, fmt.Sprintf("%d of %d runs received nothing through the other process within %s", fs.Timeouts, fs.Runs, failoverTimeout))
		res.Saturated = true
	}
	if len(notes) > 0 {
		res.Note = strings.Join(notes, "; ")
	}
	return nil
}
