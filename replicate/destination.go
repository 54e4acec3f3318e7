package replicate

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
)

// destination is one instance we replicate to: its configuration, its
// state (sync, async, downgraded), the link it is reached through and the
// sender that ships our journal to it.
type destination struct {
	r      *Replicator
	cfg    Destination
	id     uint64
	filter *filter

	// acked: every record of our journal up to this local seq that the
	// destination should get is on its disk. Monotonic per link.
	acked atomic.Uint64
	// sent: the sender has examined our journal up to here.
	sent atomic.Uint64
	wake chan struct{}

	mu          sync.Mutex
	cond        *sync.Cond
	state       State
	link        *link
	since       time.Time // of the current state
	lag         time.Duration
	outstanding []inflight
	outBytes    int
	run         *senderRun
}

type inflight struct {
	through uint64
	bytes   int
}

type senderRun struct {
	l    *link
	done chan struct{}
}

func newDestination(r *Replicator, d Destination) *destination {
	ds := &destination{r: r, cfg: d, id: record.ID(d.Name), filter: newFilter(r.cfg.Self, d),
		wake: make(chan struct{}, 1), since: time.Now()}
	ds.cond = sync.NewCond(&ds.mu)
	if d.Mode == Async {
		ds.state = StateAsync
	} else {
		ds.state = StateDowngraded // not connected yet: holds no acks until it is and has caught up
	}
	return ds
}

// State returns the destination's current state.
func (d *destination) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

func (d *destination) linkUp(l *link) {
	d.mu.Lock()
	d.link = l
	d.mu.Unlock()
}

func (d *destination) linkDown(l *link) {
	d.mu.Lock()
	if d.link == l {
		d.link = nil
	}
	d.cond.Broadcast()
	d.mu.Unlock()
}

// evaluate applies the downgrade/upgrade rule; true when the state changed.
func (d *destination) evaluate(now time.Time, lag time.Duration) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lag = lag
	connected := d.link != nil && !d.link.isClosed()
	next := nextState(d.cfg.Mode, d.state, connected, lag, d.r.cfg.DowngradeAfter, d.r.cfg.UpgradeBelow)
	if next == d.state {
		return false
	}
	switch next {
	case StateDowngraded:
		d.r.log.Warn("sync destination downgraded to async: publishers' acks no longer wait for it",
			"peer", d.cfg.Name, "connected", connected, "lag", lag.String())
	case StateSync:
		d.r.log.Info("destination caught up: upgraded back to sync", "peer", d.cfg.Name, "lag", lag.String())
	}
	d.state, d.since = next, now
	return true
}

// startSender (re)starts shipping our journal over l from just after
// through, where the peer says our stream is durable on its disk.
func (d *destination) startSender(l *link, through uint64) {
	// A Resume read from a link that has been replaced (both instances
	// dialed) must not stop the sender of the link that replaced it.
	if l.isClosed() || d.r.activeLink(l.peer) != l {
		return
	}
	d.stopSender()
	d.mu.Lock()
	if l.isClosed() {
		d.mu.Unlock()
		return
	}
	d.acked.Store(through)
	d.sent.Store(through)
	d.outstanding, d.outBytes = d.outstanding[:0], 0
	run := &senderRun{l: l, done: make(chan struct{})}
	d.run = run
	d.mu.Unlock()
	d.r.recomputeSyncPoint()
	d.r.wg.Add(1)
	go d.send(run, through+1)
}

func (d *destination) stopSender() {
	d.mu.Lock()
	run := d.run
	d.run = nil
	d.cond.Broadcast()
	d.mu.Unlock()
	if run != nil {
		run.l.close(errors.New("sender restarted"))
		<-run.done
	}
}

// send ships batches of stored records from `from` on, live after
// catching up, until the link closes. At most WindowBytes are in flight.
func (d *destination) send(run *senderRun, from uint64) {
	defer d.r.wg.Done()
	defer close(run.done)
	l, r := run.l, d.r
	if r.cfg.PinSenders {
		// No UnlockOSThread: the thread ends with this goroutine rather than
		// go back to Go's pool pinned to one core.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(r.cfg.SenderCPU)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			r.log.Warn("cannot pin replication sender", "cpu", r.cfg.SenderCPU, "err", err)
		}
	}
	if first := r.j.FirstSeq(); from < first {
		r.log.Error("destination is behind the retained journal: messages it never got were deleted",
			"peer", d.cfg.Name, "resume", from, "first_held", first)
		from = first
	}
	cur, err := r.j.NewCursor(from)
	if err != nil {
		l.close(err)
		return
	}
	defer cur.Close()
	var buf []byte
	if l.rio == nil {
		buf = make([]byte, 0, r.cfg.BatchBytes+64<<10)
	}
	prev := from - 1
	// batchFrom is where the next batch's range starts: just after the
	// last batch sent. Ranges skipped without sending (nothing in them for
	// the destination) are covered by the next batch, so the destination
	// sees a continuous stream.
	batchFrom := from
	heartbeat := time.NewTimer(r.cfg.Heartbeat)
	defer heartbeat.Stop()
	for !l.isClosed() {
		d.mu.Lock()
		for d.outBytes >= r.cfg.WindowBytes && !l.isClosed() && d.run == run {
			d.cond.Wait()
		}
		d.mu.Unlock()
		if l.isClosed() {
			return
		}
		// A ring link gathers the batch's records from the journal mapping
		// (ob, holding their segments until the kernel is done with them);
		// a net link copies them into buf.
		var ob *outBatch
		var start int
		if l.rio != nil {
			ob = l.rio.getBatch()
		} else {
			buf, start = startBatch(buf[:0])
		}
		through, n, size := prev, 0, batchHeaderSize
		for scanned := 0; size < r.cfg.BatchBytes && scanned < 65536; scanned++ {
			if ob != nil && ob.full() {
				break
			}
			v, ok := cur.Next()
			if !ok {
				break
			}
			through = v.Seq()
			if d.filter.wants(v) {
				if ob != nil {
					ob.add(cur, v.Bytes(), &r.io)
				} else {
					buf = append(buf, v.Bytes()...)
				}
				size += v.Len()
				n++
			}
		}
		if err := cur.Err(); err != nil && !errors.Is(err, journal.ErrClosed) {
			if ob != nil {
				l.rio.release(ob)
			}
			l.close(err)
			return
		}
		if through == prev { // caught up: wait for the journal to grow
			if ob != nil {
				l.rio.release(ob)
			}
			heartbeat.Reset(r.cfg.Heartbeat)
			select {
			case <-d.wake:
			case <-heartbeat.C:
			case <-l.closed:
				return
			}
			continue
		}
		d.sent.Store(through)
		d.mu.Lock()
		if n == 0 && len(d.outstanding) == 0 {
			// Nothing in this range is for the destination and nothing is in
			// flight: it holds everything it should up to through.
			d.mu.Unlock()
			if ob != nil {
				l.rio.release(ob)
			}
			d.advance(through)
			prev = through
			continue
		}
		if ob != nil {
			putBatchHeader(&ob.hdr, batchFrom, through, ob.recBytes)
		} else {
			buf = finishBatch(buf, start, batchFrom, through)
		}
		batchFrom = through + 1
		d.outstanding = append(d.outstanding, inflight{through: through, bytes: size})
		d.outBytes += size
		d.mu.Unlock()
		var err error
		if ob != nil {
			err = l.sendBatch(ob) // ob is the link's now
		} else {
			err = l.write(buf)
		}
		if err != nil {
			l.close(err)
			return
		}
		prev = through
	}
}

// onAck handles the destination's acknowledgment of everything up to
// through.
func (d *destination) onAck(l *link, through uint64) {
	d.mu.Lock()
	if d.run == nil || d.run.l != l {
		d.mu.Unlock()
		return
	}
	i := 0
	for ; i < len(d.outstanding) && d.outstanding[i].through <= through; i++ {
		d.outBytes -= d.outstanding[i].bytes
	}
	d.outstanding = append(d.outstanding[:0], d.outstanding[i:]...)
	d.cond.Broadcast()
	d.mu.Unlock()
	d.advance(through)
}

func (d *destination) advance(through uint64) {
	for {
		old := d.acked.Load()
		if through <= old {
			return
		}
		if d.acked.CompareAndSwap(old, through) {
			break
		}
	}
	if d.State() == StateSync {
		d.r.recomputeSyncPoint()
	}
}

// Stats describes a destination for `tandem stat`.
type Stats struct {
	Name         string
	Addr         string
	Mode         string // configured: sync or async
	State        string // sync, async or downgraded
	Connected    bool
	Passthrough  bool
	Topics       string
	SentThrough  uint64
	AckedThrough uint64
	LagMessages  uint64
	LagSeconds   float64
}

// Stats returns one entry per destination.
func (r *Replicator) Stats() []Stats {
	synced := r.j.SyncedSeq()
	out := make([]Stats, 0, len(r.dests))
	for _, d := range r.dests {
		d.mu.Lock()
		st := Stats{
			Name: d.cfg.Name, Addr: d.cfg.Addr, Mode: d.cfg.Mode.String(), State: d.state.String(),
			Connected: d.link != nil && !d.link.isClosed(), Passthrough: d.cfg.Passthrough,
			SentThrough: d.sent.Load(), AckedThrough: d.acked.Load(), LagSeconds: d.lag.Seconds(),
		}
		d.mu.Unlock()
		if d.cfg.Topics != nil {
			st.Topics = d.cfg.Topics.String()
		}
		if synced > st.AckedThrough {
			st.LagMessages = synced - st.AckedThrough
		}
		out = append(out, st)
	}
	return out
}
