package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/wire"
)

// pairDowngradeAfter is the pair's --repl-downgrade-after: longer than any
// step, so a sync destination holds every ack for the whole measurement
// (with the default of 1s a sync peer that lags behind stops holding acks,
// and the "sync" figure would partly be an async one). A downgrade that
// happens anyway is noted on the result.
const pairDowngradeAfter = 60 * time.Second

// pairSettings describes the pair for the report.
func pairSettings() map[string]string {
	return map[string]string{
		"pair":                 "two instances A and B on loopback, each with its own journal directory, replicating to each other (A: --peer B=...,MODE; B: --peer A=...,MODE); publishers and subscribers on A",
		"pair downgrade-after": fmt.Sprintf("%s (--repl-downgrade-after, longer than any step: a sync peer holds every ack; the server default is 1s)", pairDowngradeAfter),
		"pair other settings":  "server defaults (heartbeat 250ms, upgrade-below 100ms, no secret)",
	}
}

// startPair starts B, then A, replicating to each other in mode t.Pair,
// and waits until A reports B connected in that mode.
func (t *Tandem) startPair(ctx context.Context, dir string) error {
	mode := t.Pair
	if mode != "sync" && mode != "async" {
		return fmt.Errorf("pair mode %q (want sync or async)", mode)
	}
	var ports [4]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return err
		}
		ports[i] = p
	}
	addrA, replA := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	addrB, replB := fmt.Sprintf("127.0.0.1:%d", ports[2]), fmt.Sprintf("127.0.0.1:%d", ports[3])
	dirA, dirB := filepath.Join(dir, "A"), filepath.Join(dir, "B")
	for _, d := range []string{dirA, dirB} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	b := pairInst{"B", addrB, replB, dirB, "A=" + replA + "," + mode}
	a := pairInst{"A", addrA, replA, dirA, "B=" + replB + "," + mode}
	t.addr, t.addrB = addrA, addrB
	t.insts = [2]pairInst{a, b}
	for _, in := range []pairInst{b, a} {
		if err := t.startInst(ctx, in); err != nil {
			return err
		}
	}
	// Wait until A's destination B is connected and in the mode asked for.
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		st, err := t.stats(ctx)
		if err == nil {
			if d := destination(st, "B"); d != nil {
				if d.Connected && d.State == mode {
					return nil
				}
				last = fmt.Sprintf("B connected=%v state=%s", d.Connected, d.State)
			} else {
				last = "A reports no destination B"
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pair not ready after 15s: %s", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pairInst is how one instance of the pair is started: the same again
// when the failover scenario restarts it after killing it.
type pairInst struct {
	name, addr, repl, dir, peer string
}

// startInst starts one instance of the pair (as a process with Cmd, else
// in-process) and waits until it accepts connections.
func (t *Tandem) startInst(ctx context.Context, in pairInst) error {
	if len(t.Cmd) > 0 {
		args := append(append([]string(nil), t.Cmd[1:]...),
			"--name", in.name, "--listen", in.addr, "--data", in.dir, "--log-level", "warn",
			"--repl-listen", in.repl, "--peer", in.peer, "--repl-downgrade-after", pairDowngradeAfter.String())
		if t.Engine != "" {
			args = append(args, "--engine", t.Engine)
		}
		p, err := startProc("tandem-"+in.name, t.Cmd[0], args, in.dir)
		if err != nil {
			return err
		}
		if in.name == "A" {
			t.p = p
		} else {
			t.pB = p
		}
		return waitDial(ctx, in.addr, p)
	}
	d, err := replicate.ParseDestination(in.peer)
	if err != nil {
		return err
	}
	// A restarted instance binds the ports its predecessor just released:
	// retry briefly.
	for attempt := 0; ; attempt++ {
		s, err := engine.New(engine.Config{Name: in.name, Listen: in.addr, DataDir: in.dir, Engine: t.Engine,
			Replication: &replicate.Config{Listen: in.repl, Destinations: []replicate.Destination{d}, DowngradeAfter: pairDowngradeAfter},
			Logger:      slog.New(slog.DiscardHandler)})
		if err == nil {
			if err = s.Start(); err == nil {
				if in.name == "A" {
					t.srv = s
				} else {
					t.srvB = s
				}
				return nil
			}
			s.Close()
		}
		if attempt >= 50 {
			return fmt.Errorf("start %s: %w", in.name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func destination(st *wire.Stats, name string) *wire.DestinationStats {
	for i := range st.Replication {
		if st.Replication[i].Name == name {
			return &st.Replication[i]
		}
	}
	return nil
}

// replWatch polls A's replication state while a pair step runs, over a
// connection of its own: whether destination B ever left the mode asked
// for (a sync peer downgraded, or disconnected), and B's lag.
type replWatch struct {
	get    func(context.Context) (*wire.Stats, error)
	c      *client.Client // nil in-process
	mode   string
	stop   chan struct{}
	done   chan struct{}
	states map[string]int // state -> polls seen in it
	maxLag uint64
	polls  int
	errs   int
	err    error
}

func (t *Tandem) watchRepl(ctx context.Context) (*replWatch, error) {
	w := &replWatch{get: t.stats, mode: t.Pair, stop: make(chan struct{}), done: make(chan struct{}), states: map[string]int{}}
	if t.srv == nil {
		c, err := client.Connect(ctx, t.addr, client.WithName(t.clientName("watch")), client.WithHeartbeat(30*time.Second))
		if err != nil {
			return nil, err
		}
		w.c, w.get = c, c.Stats
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			w.poll(ctx)
		}
	}()
	return w, nil
}

// poll records one observation; it returns B's lag.
func (w *replWatch) poll(ctx context.Context) uint64 {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := w.get(pctx)
	if err != nil {
		w.errs++
		w.err = err
		return 0
	}
	d := destination(st, "B")
	if d == nil {
		w.errs++
		w.err = fmt.Errorf("A reports no destination B")
		return 0
	}
	w.polls++
	state := d.State
	if !d.Connected {
		state += " (disconnected)"
	}
	w.states[state]++
	w.maxLag = max(w.maxLag, d.LagMessages)
	return d.LagMessages
}

// finish stops the watch, takes a last observation and fills res: B's lag
// at the end and at most, and a note when B left the mode asked for.
func (w *replWatch) finish(ctx context.Context, res *Result) {
	close(w.stop)
	<-w.done
	res.ReplLagEnd = w.poll(ctx)
	res.ReplLagMax = w.maxLag
	if w.c != nil {
		w.c.Close()
	}
	var off []string
	for s, n := range w.states {
		if s != w.mode {
			off = append(off, fmt.Sprintf("%s in %d of %d polls", s, n, w.polls))
		}
	}
	sort.Strings(off)
	var notes []string
	if len(off) > 0 {
		notes = append(notes, fmt.Sprintf("destination B was not in %s mode for the whole step: %s", w.mode, strings.Join(off, ", ")))
	}
	if w.errs > 0 {
		notes = append(notes, fmt.Sprintf("%d replication-state polls failed: %v", w.errs, w.err))
	}
	if len(notes) > 0 {
		if res.Note != "" {
			notes = append([]string{res.Note}, notes...)
		}
		res.Note = strings.Join(notes, "; ")
	}
}
