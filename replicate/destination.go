package replicate

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/internal/rsm"
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
	// forked: the destination's position is not in our journal (a fork,
	// see checkResume): nothing is shipped and it never counts for acks
	// until an operator resets it.
	forked atomic.Bool
	// maxRecord: the largest record the destination takes (from its
	// Hello's frame limit); 0 until known.
	maxRecord atomic.Int64
	// skipped: records too large for the destination, not shipped to it
	// (each counted once: skippedMax is the highest seq counted, as a
	// resend after a reconnection examines them again).
	skipped    atomic.Uint64
	skippedMax atomic.Uint64
	skipLogged atomic.Bool
	// holdBytes: journal bytes the destination has not acknowledged (an
	// estimate, see Replicator.checkHolds); holdAlarm: above HoldAlarmBytes.
	holdBytes atomic.Int64
	holdAlarm atomic.Bool

	mu sync.Mutex
	// m holds the destination's decisions (state, link, resume, window,
	// acknowledgments: internal/rsm); acked, sent and forked above mirror
	// it for lock-free readers, written under mu after each of its steps.
	m          *rsm.Dest
	cond       *sync.Cond
	link       *link
	forkReason string
	holdLogged time.Time
	run        *senderRun
}

type senderRun struct {
	id       uint64 // the machine's run
	l        *link
	done     chan struct{}
	maxFrame int // the destination's frame limit: no batch is larger
}

func newDestination(r *Replicator, d Destination) *destination {
	ds := &destination{r: r, cfg: d, id: record.ID(d.Name), filter: newFilter(r.self, d),
		wake: make(chan struct{}, 1)}
	// A sync destination starts in StateSync, not reached yet: see
	// rsm.NewDest.
	ds.m = rsm.NewDest(rsm.DestConfig{Sync: d.Mode == Sync, DowngradeAfter: int64(r.cfg.DowngradeAfter),
		UpgradeBelow: int64(r.cfg.UpgradeBelow), Window: r.cfg.WindowBytes}, time.Now().UnixNano())
	ds.cond = sync.NewCond(&ds.mu)
	return ds
}

// restoreAcked sets the acknowledged position saved before a restart.
func (d *destination) restoreAcked(seq uint64) {
	d.mu.Lock()
	d.m.Restore(seq)
	d.acked.Store(d.m.Acked())
	d.mu.Unlock()
}

// State returns the destination's current state.
func (d *destination) State() State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m.State()
}

func (d *destination) linkUp(l *link) {
	d.mu.Lock()
	d.link = l
	d.m.LinkUp()
	d.mu.Unlock()
}

func (d *destination) linkDown(l *link) {
	d.mu.Lock()
	if d.link == l {
		d.link = nil
		d.m.LinkDown()
	}
	d.cond.Broadcast()
	d.mu.Unlock()
}

// evaluate applies the downgrade/upgrade rule; true when the state changed.
func (d *destination) evaluate(now time.Time, lag time.Duration) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.link != nil && d.link.isClosed() {
		// Closed, not yet told (linkDown comes from the link's teardown).
		d.link = nil
		d.m.LinkDown()
	}
	connected := d.m.Connected()
	next, awayNs, changed := d.m.Evaluate(now.UnixNano(), int64(lag))
	if !changed {
		return false
	}
	away := time.Duration(awayNs)
	switch next {
	case StateDowngraded:
		d.r.log.Warn("sync destination downgraded to async: publishers' acks no longer wait for it",
			"peer", d.cfg.Name, "connected", connected, "away", away.String(), "lag", lag.String())
	case StateSync:
		d.r.log.Info("destination caught up: upgraded back to sync", "peer", d.cfg.Name, "lag", lag.String())
	}
	return true
}

// onResume checks the position the destination reports for our stream
// (checkResume) and (re)starts shipping our journal over l from where it
// says, or refuses the stream (a fork).
func (d *destination) onResume(l *link, pos position) {
	// A Resume read from a link that has been replaced (both instances
	// dialed) must not stop the sender of the link that replaced it.
	if l.isClosed() || d.r.activeLink(l.peer) != l {
		return
	}
	r := d.r
	from, verdict, reason := checkResume(r.cfg.JournalID, pos, r.j.FirstSeq(), r.j.SyncedSeq(), r.crcAt)
	if verdict != resumeFork {
		// A destination that runs on a journal whose stream we hold beyond
		// its last durable seq lost records of its own origin that may be
		// only here (restored from an older copy): its position of our
		// stream cannot vouch for them, so our stream starts afresh,
		// reseeded (rsm.LostOwnRecords).
		src := r.source(l.peer)
		src.mu.Lock()
		lost := rsm.LostOwnRecords(src.m.Journal(), src.m.ReceivedSeq(), l.peerJournal, l.peerLast)
		held := src.m.ReceivedSeq()
		src.mu.Unlock()
		if lost {
			r.log.Warn("destination lost records of its own stream that this instance holds (a restored data directory): shipping it this journal afresh",
				"peer", d.cfg.Name, "held_seq", held, "its_last", l.peerLast)
			from, verdict = max(r.j.FirstSeq(), 1), resumeNewStream
			pos = position{} // logged above, not as another journal's
		}
	}
	switch verdict {
	case resumeFork:
		d.stopSender()
		d.mu.Lock()
		d.forkReason = reason
		first := d.m.Fork()
		d.forked.Store(true)
		d.mu.Unlock()
		if first {
			r.log.Error("replication fork: the destination holds records of this journal that this instance does not; "+
				"its stream is refused until an operator runs `tandem repl-reset` on the destination (docs/replication.md)",
				"peer", d.cfg.Name, "journal", r.cfg.JournalID.String(), "position_seq", pos.Seq, "reason", reason)
		}
		if err := l.write(appendRefuse(nil, refuseFork, "fork: "+reason)); err != nil {
			l.close(err)
		}
		r.recomputeSyncPoint()
		return
	case resumeNewStream:
		if pos.Seq != 0 {
			r.log.Info("destination holds a position in another journal of this instance: this journal's stream starts at its first retained record",
				"peer", d.cfg.Name, "journal", r.cfg.JournalID.String(), "their_journal", pos.Journal.String(), "their_seq", pos.Seq, "from", from)
		}
	case resumeBehind:
		r.log.Error("destination is behind the retained journal: messages it never got were deleted",
			"peer", d.cfg.Name, "resume", pos.Seq+1, "first_held", from)
	}
	d.stopSender()
	d.mu.Lock()
	if l.isClosed() {
		d.mu.Unlock()
		return
	}
	d.forkReason = ""
	id, unforked := d.m.Resume(from)
	d.forked.Store(false)
	d.acked.Store(d.m.Acked())
	d.sent.Store(d.m.Sent())
	d.filter.setDest(record.OriginEpochID(l.peer, l.peerJournal, l.peerEpoch))
	if verdict == resumeNewStream {
		// It holds nothing of this journal: it gets every record held now,
		// what it shipped here before it lost its disk included.
		d.filter.reseed(r.j.LastSeq())
	} else {
		d.filter.reseed(0)
	}
	run := &senderRun{id: id, l: l, done: make(chan struct{}), maxFrame: l.peerMaxFrame}
	d.run = run
	d.mu.Unlock()
	if unforked {
		r.log.Info("replication fork resolved: the destination's position is in this journal again", "peer", d.cfg.Name)
	}
	r.recomputeSyncPoint()
	r.wg.Add(1)
	go d.send(run, from)
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
		buf = make([]byte, 0, min(r.cfg.BatchBytes+64<<10, run.maxFrame))
	}
	prev := from - 1
	// batchFrom is where the next batch's range starts: just after the
	// last batch sent. Ranges skipped without sending (nothing in them for
	// the destination) are covered by the next batch, so the destination
	// sees a continuous stream.
	batchFrom := from
	// pending: a record read for the last batch that did not fit in the
	// destination's frame limit; it starts the next batch. Its view stays
	// valid because the cursor is not moved until it is taken.
	var pending record.View
	havePending := false
	heartbeat := time.NewTimer(r.cfg.Heartbeat)
	defer heartbeat.Stop()
	for !l.isClosed() {
		d.mu.Lock()
		for !d.m.WindowOpen() && !l.isClosed() && d.run == run {
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
		var throughCRC uint32
		for scanned := 0; size < r.cfg.BatchBytes && scanned < 65536; scanned++ {
			if ob != nil && ob.full() {
				break
			}
			v := pending
			if havePending {
				havePending = false
			} else {
				var ok bool
				if v, ok = cur.Next(); !ok {
					break
				}
			}
			if d.filter.wants(v) {
				if size+v.Len() > run.maxFrame {
					if n > 0 { // the next batch's
						pending, havePending = v, true
						break
					}
					// Alone too large for the destination: skipped for it.
					d.skipTooLarge(v)
				} else {
					if ob != nil {
						ob.add(cur, v.Bytes(), &r.io)
					} else {
						buf = append(buf, v.Bytes()...)
					}
					size += v.Len()
					n++
				}
			}
			through, throughCRC = v.Seq(), v.CRC()
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
		d.mu.Lock()
		if n == 0 && d.m.EmptyRange() {
			// Nothing in this range is for the destination and nothing is in
			// flight: it holds everything it should up to through.
			advanced := d.m.Ship(run.id, through, 0, 0)
			d.mirrorLocked()
			d.mu.Unlock()
			if ob != nil {
				l.rio.release(ob)
			}
			if advanced {
				d.advanced()
			}
			prev = through
			continue
		}
		if ob != nil {
			putBatchHeader(&ob.hdr, batchFrom, through, throughCRC, ob.recBytes)
		} else {
			buf = finishBatch(buf, start, batchFrom, through, throughCRC)
		}
		batchFrom = through + 1
		d.m.Ship(run.id, through, max(n, 1), size)
		d.mirrorLocked()
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
		if h := r.hooks.Shipped; h != nil {
			h(through)
		}
		prev = through
	}
}

// skipTooLarge counts a record the destination cannot take (larger than
// its frame limit allows) and logs the first one.
func (d *destination) skipTooLarge(v record.View) {
	if old := d.skippedMax.Load(); v.Seq() <= old || !d.skippedMax.CompareAndSwap(old, v.Seq()) {
		return // counted before (only the sender goroutine writes it)
	}
	d.skipped.Add(1)
	if !d.skipLogged.Swap(true) {
		d.r.log.Error("record too large for the destination's frame limit: not replicated to it (counted in stat as skipped_too_large; logged once)",
			"peer", d.cfg.Name, "seq", v.Seq(), "bytes", v.Len(), "destination_max_record", d.maxRecord.Load())
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
	advanced := d.m.Ack(d.run.id, through)
	d.mirrorLocked()
	d.cond.Broadcast()
	d.mu.Unlock()
	if h := d.r.hooks.PeerAck; h != nil {
		h(through)
	}
	if advanced {
		d.advanced()
	}
}

// mirrorLocked copies the machine's positions to the lock-free mirrors.
func (d *destination) mirrorLocked() {
	d.acked.Store(d.m.Acked())
	d.sent.Store(d.m.Sent())
}

// advanced: the destination's acknowledged position moved; the ack point
// may have (only a destination in StateSync holds it).
func (d *destination) advanced() {
	if d.State() == StateSync {
		d.r.recomputeSyncPoint()
	}
}

// Stats describes a destination for `tandem stat`.
type Stats struct {
	Name         string
	Addr         string
	Mode         string // configured: sync or async
	State        string // sync, async, downgraded or fork
	Reason       string // why the state is fork
	Connected    bool
	Passthrough  bool
	Topics       string
	SentThrough  uint64
	AckedThrough uint64
	LagMessages  uint64
	LagSeconds   float64
	// SkippedTooLarge counts records not shipped to the destination because
	// they exceed its frame limit.
	SkippedTooLarge uint64
	// MaxRecord is the largest record the destination takes (0: not known).
	MaxRecord int
	// HoldBytes estimates the journal bytes kept for the destination (not
	// acknowledged); HoldAlarm is set while it exceeds HoldAlarmBytes.
	HoldBytes int64
	HoldAlarm bool
}

// Stats returns one entry per destination.
func (r *Replicator) Stats() []Stats {
	synced := r.j.SyncedSeq()
	out := make([]Stats, 0, len(r.dests))
	for _, d := range r.dests {
		d.mu.Lock()
		st := Stats{
			Name: d.cfg.Name, Addr: d.cfg.Addr, Mode: d.cfg.Mode.String(), State: d.m.State().String(),
			Connected: d.link != nil && !d.link.isClosed(), Passthrough: d.cfg.Passthrough,
			SentThrough: d.sent.Load(), AckedThrough: d.acked.Load(), LagSeconds: time.Duration(d.m.Lag()).Seconds(),
			SkippedTooLarge: d.skipped.Load(), MaxRecord: int(d.maxRecord.Load()),
			HoldBytes: d.holdBytes.Load(), HoldAlarm: d.holdAlarm.Load(),
		}
		if d.forked.Load() {
			st.State, st.Reason = "fork", d.forkReason
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
