package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Settings are every parameter of a run; all of them are recorded in the
// result file and the report.
type Settings struct {
	Quick    bool          `json:"quick"`
	Duration time.Duration `json:"duration_ns"` // measured interval of each publish / latency / fan-out step
	Window   int           `json:"window"`      // unacknowledged messages per publisher, every system

	Sizes      []int `json:"sizes"`      // durable publish message sizes (bytes)
	Publishers []int `json:"publishers"` // durable publish publisher counts

	LatencySize  int     `json:"latency_size"`  // message size of the fixed-rate scenarios
	Rates        []int   `json:"rates"`         // fixed offered rates (msgs/s)
	KneeFraction float64 `json:"knee_fraction"` // also run at this fraction of the system's own 1-publisher throughput (0: no)

	Fanout         []int         `json:"fanout"`          // subscriber counts
	FanoutSize     int           `json:"fanout_size"`     // message size
	FanoutMessages int64         `json:"fanout_messages"` // at most this many messages (and at most Duration)
	FanoutTimeout  time.Duration `json:"fanout_timeout_ns"`

	ReplayMessages       int               `json:"replay_messages"`
	ReplaySize           int               `json:"replay_size"`
	ReplayPreloadTimeout time.Duration     `json:"replay_preload_timeout_ns"`
	ReplayTimeout        time.Duration     `json:"replay_timeout_ns"`
	ReplaySkip           map[string]string `json:"replay_skip,omitempty"` // system -> reason

	// Tandem only: single instance vs sync pair vs async pair (publisher on
	// A): closed-loop publish at these sizes (1 publisher) and persisted-ack
	// latency at these fixed rates (LatencySize).
	PairSizes []int `json:"pair_sizes,omitempty"`
	PairRates []int `json:"pair_rates,omitempty"`

	// Tandem only: io_uring vs epoll: the durable publish (these sizes x
	// publishers), fan-out (these subscriber counts, FanoutSize) and sync
	// pair publish (these sizes, 1 publisher, both instances on the
	// backend) steps, EngineRuns times per backend, the backends
	// alternating; the report shows the medians (0: once).
	EngineSizes      []int `json:"engine_sizes,omitempty"`
	EnginePublishers []int `json:"engine_publishers,omitempty"`
	EngineFanout     []int `json:"engine_fanout,omitempty"`
	EnginePairSizes  []int `json:"engine_pair_sizes,omitempty"`
	EngineRuns       int   `json:"engine_runs,omitempty"`

	// Tandem only: failover time seen by the HA client (failover.go): a
	// sync pair, an HA publisher at FailoverRate msgs/s of FailoverSize
	// bytes, an HA subscriber, both with FailoverHeartbeat; FailoverRuns
	// kills of the subscriber's instance.
	FailoverRuns      int           `json:"failover_runs,omitempty"`
	FailoverRate      int           `json:"failover_rate,omitempty"`
	FailoverSize      int           `json:"failover_size,omitempty"`
	FailoverHeartbeat time.Duration `json:"failover_heartbeat_ns,omitempty"`
	// The replicated NATS peers (nats_failover.go): FailoverPeerRuns
	// kills of the stream leader, the publisher at FailoverPeerRate msgs/s
	// of FailoverSize bytes.
	FailoverPeerRuns int `json:"failover_peer_runs,omitempty"`
	FailoverPeerRate int `json:"failover_peer_rate,omitempty"`

	// Tandem only, opt-in (--scenarios tls): one instance serving
	// plaintext vs one serving TLS: closed-loop publish at these sizes (1
	// publisher), persisted-ack and end-to-end latency at Rates
	// (LatencySize).
	TLSSizes []int `json:"tls_sizes,omitempty"`

	DrainTimeout time.Duration `json:"drain_timeout_ns"` // wait for outstanding acks after each step
	FsyncProbe   int           `json:"fsync_probe"`      // fdatasync calls of the machine probe

	Systems   []string `json:"systems"`   // systems to run, in order
	Scenarios []string `json:"scenarios"` // scenarios to run (names), in order
	DataDir   string   `json:"data_dir"`  // parent of the servers' temporary directories
}

// AllSystems are the systems of a full run, in report order.
var AllSystems = []string{"tandem", "nats-default", "nats-always", "redis-always", "redis-everysec", "nats-r3-always", "nats-r3-default", "redis-replica"}

// DefaultSettings returns the full matrix (about 15 minutes on 2 cores), or
// the reduced --quick matrix (about a minute).
func DefaultSettings(quick bool) Settings {
	s := Settings{
		Duration:             5 * time.Second,
		Window:               8192,
		Sizes:                []int{64, 512, 4096},
		Publishers:           []int{1, 4},
		LatencySize:          128,
		Rates:                []int{10000, 100000},
		KneeFraction:         0.8,
		Fanout:               []int{1, 8, 64},
		FanoutSize:           128,
		FanoutMessages:       500000,
		FanoutTimeout:        20 * time.Second,
		ReplayMessages:       2000000,
		ReplaySize:           128,
		ReplayPreloadTimeout: 60 * time.Second,
		ReplayTimeout:        60 * time.Second,
		PairSizes:            []int{64, 4096},
		PairRates:            []int{10000, 100000},
		EngineSizes:          []int{128, 4096},
		EnginePublishers:     []int{1, 4},
		EngineFanout:         []int{1, 8},
		EnginePairSizes:      []int{128, 4096},
		EngineRuns:           3,
		TLSSizes:             []int{128, 4096},
		FailoverRuns:         50,
		FailoverRate:         10000,
		FailoverSize:         128,
		FailoverHeartbeat:    50 * time.Millisecond,
		FailoverPeerRuns:     10,
		FailoverPeerRate:     2000,
		DrainTimeout:         5 * time.Second,
		FsyncProbe:           200,
		Systems:              append([]string(nil), AllSystems...),
		DataDir:              os.TempDir(),
	}
	for _, sc := range scenarios() {
		if sc.run != nil && !sc.optIn {
			s.Scenarios = append(s.Scenarios, sc.name)
		}
	}
	if quick {
		s.Quick = true
		s.Duration = time.Second
		s.Sizes = []int{64, 4096}
		s.Publishers = []int{1}
		s.Rates = []int{10000}
		s.KneeFraction = 0
		s.Fanout = []int{1, 8}
		s.FanoutMessages = 100000
		s.FanoutTimeout = 5 * time.Second
		s.ReplayMessages = 100000
		s.ReplayPreloadTimeout = 10 * time.Second
		s.ReplayTimeout = 10 * time.Second
		s.PairSizes = []int{64}
		s.EnginePublishers = []int{1}
		s.EnginePairSizes = []int{128}
		s.EngineRuns = 1
		s.FailoverRuns = 5
		s.FailoverPeerRuns = 2
		s.DrainTimeout = 2 * time.Second
		s.FsyncProbe = 50
	}
	s.ReplaySkip = map[string]string{
		"nats-always":  "replay reads the same file store as nats-default (the sync setting only affects writes); preloading at its fsync-per-message rate would take too long",
		"redis-always": "replay reads the same stream as redis-everysec (the fsync setting only affects writes)",
	}
	for k, v := range replicatedReplaySkip {
		s.ReplaySkip[k] = v
	}
	return s
}

// Options of a run besides the Settings.
type Options struct {
	Settings Settings
	// TandemCmd runs Tandem's server as a separate process (see Tandem.Cmd).
	TandemCmd []string
	// Progress receives the progress display (usually os.Stderr); nil: none.
	Progress io.Writer
	// Command is the command line, for the report.
	Command []string
}

// newSystem returns the adapter of a system name.
func newSystem(name string, o *Options, commit string) (System, error) {
	switch name {
	case "tandem":
		return &Tandem{Cmd: o.TandemCmd, Commit: commit}, nil
	case "nats-default":
		return &NATS{}, nil
	case "nats-always":
		return &NATS{SyncAlways: true}, nil
	case "redis-always":
		return &Redis{Fsync: "always"}, nil
	case "redis-everysec":
		return &Redis{Fsync: "everysec"}, nil
	case "nats-r3-always":
		return &NATS{SyncAlways: true, Replicas: 3}, nil
	case "nats-r3-default":
		return &NATS{Replicas: 3}, nil
	case "redis-replica":
		return &Redis{Fsync: "always", Replica: true}, nil
	}
	return nil, fmt.Errorf("unknown system %q (known: %s)", name, strings.Join(AllSystems, ", "))
}

// SystemSkipped reports whether a system would be skipped (its binary is
// missing), for Estimate.
func SystemSkipped(name string) bool {
	sys, err := newSystem(name, &Options{}, "")
	return err != nil || sys.Info().Skipped != ""
}

// Run runs the bench and returns its results.
func Run(ctx context.Context, o Options) (*RunResult, error) {
	set := o.Settings
	started := time.Now()
	prog := newProgress(o.Progress)
	defer prog.stop()
	commit := CommitInfo()
	rr := &RunResult{
		Format:   resultFormat,
		Started:  started.UTC(),
		Command:  o.Command,
		Tandem:   commit,
		Settings: set,
	}
	prog.say("probing the machine (fdatasync x%d in %s)", set.FsyncProbe, set.DataDir)
	rr.Machine = ProbeMachine(set.DataDir, set.FsyncProbe)
	prog.say("machine: %s, %d cores, kernel %s, %s; fdatasync p50 %.0f µs", rr.Machine.CPU, rr.Machine.Cores, rr.Machine.Kernel, rr.Machine.Filesystem, rr.Machine.Fsync.P50)
	for _, sc := range scenarios() {
		if sc.run == nil {
			rr.NotMeasured = append(rr.NotMeasured, NotMeasured{Scenario: sc.name, Title: sc.title, Reason: "not yet measured: needs " + sc.needs})
		}
	}
	var mu sync.Mutex
	add := func(r Result) { mu.Lock(); rr.Results = append(rr.Results, r); mu.Unlock() }
	want := map[string]bool{}
	for _, s := range set.Scenarios {
		want[s] = true
	}
	for _, name := range set.Systems {
		sys, err := newSystem(name, &o, commit.Short())
		if err != nil {
			return nil, err
		}
		info := sys.Info()
		rr.Systems = append(rr.Systems, info)
		if info.Skipped != "" {
			prog.say("SKIP %s: %s", name, info.Skipped)
			continue
		}
		r := &runner{ctx: ctx, sys: sys, set: &set, clk: monoClock{t0: time.Now()}, prog: prog, add: add, maxRate: map[int]float64{}}
		for _, sc := range scenarios() {
			if sc.run == nil || !want[sc.name] {
				continue
			}
			if err := sc.run(r); err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	rr.Elapsed = time.Since(started).Seconds()
	prog.say("done in %s", time.Since(started).Round(time.Second))
	return rr, nil
}

// progress is the display on stderr: one line per step with its result,
// and while a step runs, the current rate (rewritten in place on a
// terminal, every 5 s otherwise).
type progress struct {
	w       io.Writer
	tty     bool
	t0      time.Time
	mu      sync.Mutex
	label   string
	stepT0  time.Time
	rateFn  func() float64
	lastN   float64
	lastT   time.Time
	quit    chan struct{}
	stopped sync.Once
	done    chan struct{}
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, t0: time.Now(), quit: make(chan struct{}), done: make(chan struct{})}
	if w == nil {
		close(p.done)
		return p
	}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	every := 5 * time.Second
	if p.tty {
		every = 500 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
			p.tick()
		}
	}
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.label == "" || p.rateFn == nil {
		return
	}
	n, now := p.rateFn(), time.Now()
	rate := 0.0
	if dt := now.Sub(p.lastT).Seconds(); dt > 0 && !p.lastT.IsZero() {
		rate = (n - p.lastN) / dt
	}
	p.lastN, p.lastT = n, now
	line := fmt.Sprintf("[%s] %s  %s elapsed  %s msgs/s", fmtElapsed(now.Sub(p.t0)), p.label, now.Sub(p.stepT0).Round(100*time.Millisecond), fmtRate(rate))
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) begin(system, key string) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label = system + ": " + key
	p.stepT0 = time.Now()
	p.rateFn = nil
	p.lastT = time.Time{}
}

func (p *progress) phase(name string) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if i := strings.Index(p.label, " ["); i >= 0 {
		p.label = p.label[:i]
	}
	p.label += " [" + name + "]"
}

func (p *progress) rate(f func() float64) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rateFn = f
	p.lastN, p.lastT = f(), time.Now()
}

func (p *progress) end(r *Result) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "[%s] %-14s %-36s %s\n", fmtElapsed(time.Since(p.t0)), r.System, r.Key, r.Summary())
	p.label, p.rateFn = "", nil
}

func (p *progress) say(format string, args ...any) {
	if p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "[%s] %s\n", fmtElapsed(time.Since(p.t0)), fmt.Sprintf(format, args...))
}

func (p *progress) stop() {
	p.stopped.Do(func() {
		if p.w != nil {
			close(p.quit)
		}
		<-p.done
	})
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// fmtRate formats a rate with k/M suffixes.
func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}
