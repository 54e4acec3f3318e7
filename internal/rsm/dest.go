package rsm

// DestConfig is a destination's configuration as the machine needs it.
type DestConfig struct {
	// Sync: the destination is configured sync (it holds publishers'
	// persisted acks while in StateSync); else async.
	Sync bool
	// DowngradeAfter and UpgradeBelow are NextState's ages, nanoseconds
	// (DowngradeAfter Never: strict).
	DowngradeAfter, UpgradeBelow int64
	// Window is the most bytes of batches in flight (sent, not
	// acknowledged); the sender waits while it is full.
	Window int
}

// Dest is the bookkeeping of one destination of this instance's journal:
// its state, its link, where its stream resumes, the batches in flight and
// how far it has acknowledged. A sender run is one stream of batches over
// one link, from one Resume: acknowledgments of an older run (a link that
// has been replaced) are ignored.
//
// Inputs: LinkUp, LinkDown, Resume/Fork (the destination's position,
// decided by CheckResume), Ship (a batch sent, or a range with nothing for
// the destination), Ack (the destination's batch acknowledgment),
// Evaluate (a tick: the downgrade/upgrade rule). Outputs are the return
// values and the accessors; the driver acts on them (recompute the ack
// point when acked advanced for a sync destination, wake the sender when
// the window opens, log a state change).
type Dest struct {
	cfg   DestConfig
	state State
	since int64 // of the current state
	// linked: a link to the destination is up; forked: its position is
	// not in our journal (a fork): nothing is shipped and it never counts
	// for acks until it is resolved.
	linked, forked bool
	// awaySince: unreachable since (valid while !Connected()).
	awaySince int64
	away      bool
	lag       int64
	// acked: every record of our journal up to this local seq that the
	// destination should get is on its disk. sent: examined up to here.
	acked, sent uint64
	run         uint64 // the current sender run (0: none)
	runs        uint64 // runs started
	out         []Inflight
	head        int // out[head:] is in flight
	outBytes    int
}

// Inflight is one batch sent and not acknowledged.
type Inflight struct {
	Through uint64
	Bytes   int
}

// NewDest returns a destination not reached yet. A sync one starts in
// StateSync: it may be short of messages acknowledged before a restart,
// so it holds acks until it has been reached and caught up, or has been
// away for the downgrade age.
func NewDest(cfg DestConfig, now int64) *Dest {
	d := &Dest{cfg: cfg, since: now, awaySince: now, away: true}
	if cfg.Sync {
		d.state = StateSync
		if Broken.StartDowngraded {
			d.state = StateDowngraded
		}
	}
	return d
}

// Broken holds deliberately broken builds of these machines, for the
// simulator's proof that its checker catches what the rules prevent
// (sim.Break; never set elsewhere).
var Broken struct {
	// StartDowngraded: a restarted instance does not hold acks for its
	// sync destinations until it has reached them (issue #10 §6 undone).
	StartDowngraded bool
}

// State returns the destination's state.
func (d *Dest) State() State { return d.state }

// Since returns when the current state began.
func (d *Dest) Since() int64 { return d.since }

// Lag returns the lag given to the last Evaluate.
func (d *Dest) Lag() int64 { return d.lag }

// Config returns the configuration.
func (d *Dest) Config() DestConfig { return d.cfg }

// Connected reports whether the destination is reachable: a link is up
// and its position is not refused.
func (d *Dest) Connected() bool { return d.linked && !d.forked }

// Linked reports whether a link is up (forked or not).
func (d *Dest) Linked() bool { return d.linked }

// Forked reports whether the destination's stream is refused (a fork).
func (d *Dest) Forked() bool { return d.forked }

// Acked returns how far the destination has acknowledged our journal.
func (d *Dest) Acked() uint64 { return d.acked }

// Sent returns how far the sender has examined our journal.
func (d *Dest) Sent() uint64 { return d.sent }

// Run returns the current sender run (0: none).
func (d *Dest) Run() uint64 { return d.run }

// InFlight returns the batches and bytes sent and not acknowledged.
func (d *Dest) InFlight() (batches, bytes int) { return len(d.out) - d.head, d.outBytes }

// WindowOpen reports whether the sender may send another batch.
func (d *Dest) WindowOpen() bool { return d.outBytes < d.cfg.Window }

// Restore sets the acknowledged position saved before a restart (the
// destination held our journal through seq then).
func (d *Dest) Restore(seq uint64) { d.acked = max(d.acked, seq) }

// LinkUp: a link to the destination is up (its Resume is still to come).
func (d *Dest) LinkUp() { d.linked = true }

// LinkDown: the link is gone; the current run ends.
func (d *Dest) LinkDown() {
	d.linked = false
	d.endRun()
}

func (d *Dest) endRun() {
	d.run = 0
	d.out, d.head, d.outBytes = d.out[:0], 0, 0
}

// Resume starts a sender run from from (CheckResume's verdict was not a
// fork): what the destination holds is taken as acknowledged (from-1) and
// nothing is in flight. It returns the run's id and whether a fork was
// resolved by it.
func (d *Dest) Resume(from uint64) (run uint64, unforked bool) {
	unforked = d.forked
	d.forked = false
	d.endRun()
	d.runs++
	d.run = d.runs
	d.acked, d.sent = from-1, from-1
	return d.run, unforked
}

// Fork refuses the destination's stream: the run ends; true the first
// time (log it once per episode).
func (d *Dest) Fork() (first bool) {
	first = !d.forked
	d.forked = true
	d.endRun()
	return first
}

// Ship records what the sender of run did with our journal up to through:
// a batch of bytes holding n records for the destination (n > 0), or a
// range with nothing for it (n == 0). A range with nothing in it while
// nothing is in flight is held by the destination at once (acked
// advances, reported); otherwise it is in flight until acknowledged. A
// run that is not current is ignored.
func (d *Dest) Ship(run, through uint64, n, bytes int) (advanced bool) {
	if run != d.run || run == 0 {
		return false
	}
	d.sent = max(d.sent, through)
	if n == 0 && d.head == len(d.out) {
		return d.advance(through)
	}
	if d.head > 0 && len(d.out) == cap(d.out) {
		// Reuse the acknowledged prefix rather than grow: a stream that is
		// never idle never empties the window.
		d.out = d.out[:copy(d.out, d.out[d.head:])]
		d.head = 0
	}
	d.out = append(d.out, Inflight{Through: through, Bytes: bytes})
	d.outBytes += bytes
	return false
}

// EmptyRange reports whether a range with nothing for the destination may
// be taken as held at once (nothing in flight), without a batch.
func (d *Dest) EmptyRange() bool { return d.head == len(d.out) }

// Ack handles the destination's acknowledgment, in run, of everything up
// to through: the batches it covers leave the window. advanced: acked
// moved (the ack point may have moved).
func (d *Dest) Ack(run, through uint64) (advanced bool) {
	if run != d.run || run == 0 {
		return false
	}
	for d.head < len(d.out) && d.out[d.head].Through <= through {
		d.outBytes -= d.out[d.head].Bytes
		d.head++
	}
	if d.head == len(d.out) {
		d.out, d.head = d.out[:0], 0
	}
	return d.advance(through)
}

func (d *Dest) advance(through uint64) bool {
	if through <= d.acked {
		return false
	}
	d.acked = through
	return true
}

// Evaluate applies the downgrade/upgrade rule at now, with the
// destination's lag (see NextState); changed reports a new state.
func (d *Dest) Evaluate(now, lag int64) (st State, away int64, changed bool) {
	d.lag = lag
	connected := d.Connected()
	if connected {
		d.away = false
	} else {
		if !d.away {
			d.away, d.awaySince = true, now
		}
		away = now - d.awaySince
	}
	next := NextState(d.cfg.Sync, d.state, connected, away, lag, d.cfg.DowngradeAfter, d.cfg.UpgradeBelow)
	if next == d.state {
		return next, away, false
	}
	d.state, d.since = next, now
	return next, away, true
}

// SyncPoint is the highest local seq every destination in StateSync holds
// durably; max uint64 when there is none. A publisher's persisted ack for
// local seq L waits until L <= SyncPoint. at(i) gives destination i's
// state and acked position (lock-free readers pass atomics' values).
func SyncPoint(n int, at func(i int) (State, uint64)) uint64 {
	p := uint64(1<<64 - 1)
	for i := 0; i < n; i++ {
		if st, acked := at(i); st == StateSync {
			p = min(p, acked)
		}
	}
	return p
}

// SyncedPeers counts the sync-mode destinations that hold every record
// up to seq (acked at or beyond it), whatever their state; a forked one
// never counts. at(i) gives destination i's mode, fork flag and acked.
func SyncedPeers(n int, seq uint64, at func(i int) (sync, forked bool, acked uint64)) int {
	c := 0
	for i := 0; i < n; i++ {
		if s, f, a := at(i); s && !f && a >= seq {
			c++
		}
	}
	return c
}
