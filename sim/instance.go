package sim

import (
	"fmt"

	"github.com/tandemhq/tandem/internal/rsm"
	"github.com/tandemhq/tandem/record"
)

// Messages on simulated links (replication and client connections).
type (
	mHello struct {
		From    string
		Journal record.JournalID
		Epoch   uint32
	}
	// mResume: the destination's position of the source's stream, and the
	// journal the destination runs on (in replicate, its Hello's).
	mResume struct {
		Pos     rsm.Position
		Journal record.JournalID
		Epoch   uint32
		Last    uint64 // the destination's durable last seq
	}
	mRefuse    struct{}
	mHeartbeat struct{}
	mBatch     struct {
		Journal       record.JournalID
		From, Through uint64
		ThroughCRC    uint32
		Recs          []Rec
	}
	mBatchAck struct{ Through uint64 }

	mLogon      struct{ Name string }
	mLogonReply struct {
		Instance                string
		LastPubSeq, AckedPubSeq uint64
	}
	mPublish struct {
		PubSeq uint64
		Topic  string
		Digest uint64
	}
	mAck       struct{ Through uint64 }
	mRefused   struct{ PubSeq uint64 }
	mError     struct{ Code string }
	mSubscribe struct {
		Topic   string
		Now     bool   // start at the current position
		Origins []mark // per-origin progress: everything up to Seq seen
		Pubs    []mark // per-publisher progress
	}
	mDeliver struct{ R Rec }
)

type mark struct{ ID, Seq uint64 }

// DestCfg is one replication destination of an instance.
type DestCfg struct {
	Name        string
	Sync        bool
	Passthrough bool
}

// InstanceCfg configures an instance.
type InstanceCfg struct {
	Name           string
	Dests          []DestCfg
	Accept         []string // peers whose streams it takes (receive side)
	DowngradeAfter int64    // rsm.Never: strict
	UpgradeBelow   int64
	Heartbeat      int64
}

type storedAt struct{ local, digest uint64 }

type pubIdx struct {
	stored    map[uint64]storedAt
	last      uint64
	lastLocal uint64
}

type simDest struct {
	cfg       DestCfg
	m         *rsm.Dest
	f         *rsm.Filter
	ep        *Endpoint
	run       uint64
	cursor    uint64 // next seq to examine
	batchFrom uint64
	dialing   bool
	lastSend  int64
}

type simSource struct {
	peer    string
	m       *rsm.Source
	ep      *Endpoint
	journal record.JournalID // of the current link's Hello
	epoch   uint32
	q       rsm.AckQueue
	saved   rsm.Position // the positions file
	hasFile bool
	// refused: the peer refused its stream from our position (a fork):
	// an operator must run repl-reset.
	refused bool
}

type pendingAck struct{ pubSeq, local uint64 }

type clientConn struct {
	ep      *Endpoint
	name    string
	pub     uint64
	pending []pendingAck
	sub     *serverSub
}

type serverSub struct {
	topic   string
	origins []mark
	pubs    []mark
	next    uint64 // next local seq to examine
}

// Instance is one simulated Tandem instance: a model engine and journal,
// and replication driven through internal/rsm.
type Instance struct {
	s      *Sim
	w      *World
	cfg    InstanceCfg
	name   string
	up     bool
	failed bool // its journal failed: stopped until an operator restarts it
	wiped  bool // lost its data directory at some point
	epoch  uint64
	// startedAt: when the current life began.
	startedAt int64
	j         *Journal
	origin    uint64
	// runEpoch: this run's epoch (record.OriginEpochID: origin ids per
	// start, as engine.New draws them).
	runEpoch uint32
	pubs     map[uint64]*pubIdx
	// appendAt: when each local seq was appended (for lag).
	appendAt  []int64
	dests     []*simDest
	sources   []*simSource
	conns     []*clientConn
	outSaved  []uint64 // positions files "out", per dest (0: none)
	outJID    record.JournalID
	syncPoint uint64
	conflicts int
	// backup: a copy of the data directory taken earlier (restore fault).
	backup *instanceFiles
}

type instanceFiles struct {
	j       *Journal
	sources []rsm.Position
	out     []uint64
}

func newInstance(s *Sim, cfg InstanceCfg) *Instance {
	in := &Instance{s: s, w: s.w, cfg: cfg, name: cfg.Name}
	in.j = newJournal(s.w)
	for range cfg.Dests {
		in.outSaved = append(in.outSaved, 0)
	}
	for _, p := range cfg.Accept {
		in.sources = append(in.sources, &simSource{peer: p})
	}
	s.net.Listen(cfg.Name, in.accept)
	return in
}

func (in *Instance) tracef(format string, args ...any) {
	in.w.Tracef("%s: "+format, append([]any{in.name}, args...)...)
}

// alive returns a guard: f runs only if the instance is still in the life
// it was scheduled in.
func (in *Instance) alive(f func()) func() {
	ep := in.epoch
	return func() {
		if in.up && in.epoch == ep {
			f()
		}
	}
}

// Start starts the instance (recovery from its journal and files).
func (in *Instance) Start() {
	in.epoch++
	in.up, in.failed = true, false
	in.startedAt = in.w.now
	in.runEpoch = 0
	if !BrokenNoEpochs {
		in.runEpoch = uint32(in.w.rng.Uint32()) | 1
	}
	in.origin = record.OriginEpochID(in.name, in.j.ID, in.runEpoch)
	in.rebuild()
	in.dests = in.dests[:0]
	for i, dc := range in.cfg.Dests {
		d := &simDest{cfg: dc, f: rsm.NewFilter(in.origin, dc.Passthrough, nil)}
		d.m = rsm.NewDest(rsm.DestConfig{Sync: dc.Sync, DowngradeAfter: in.cfg.DowngradeAfter,
			UpgradeBelow: in.cfg.UpgradeBelow, Window: 64 << 10}, in.w.now)
		if in.outSaved[i] != 0 && in.outJID == in.j.ID && in.outSaved[i] <= in.j.LastSeq() {
			d.m.Restore(in.outSaved[i])
		}
		in.dests = append(in.dests, d)
	}
	for _, src := range in.sources {
		pos := rsm.Position{}
		if src.hasFile {
			pos = src.saved
		}
		src.m, src.ep = rsm.NewSource(pos), nil
		src.q.Reset()
	}
	in.recomputeSyncPoint()
	in.tracef("start journal=%x last=%d", in.j.ID[:4], in.j.LastSeq())
	for _, d := range in.dests {
		in.dial(d)
	}
	in.w.After(in.cfg.Heartbeat/2, in.alive(in.tick))
	in.w.After(10*Millisecond, in.alive(in.evaluate))
	in.w.After(50*Millisecond, in.alive(in.savePositions))
}

// rebuild derives the index from the journal (recovery).
func (in *Instance) rebuild() {
	in.pubs = map[uint64]*pubIdx{}
	in.appendAt = in.appendAt[:0]
	for i := range in.j.recs {
		r := &in.j.recs[i]
		in.index(r)
		in.appendAt = append(in.appendAt, in.w.now)
	}
}

// storedAt returns what p holds under seq (p may be nil).
func (p *pubIdx) storedAt(seq uint64) (storedAt, bool) {
	if p == nil {
		return storedAt{}, false
	}
	st, ok := p.stored[seq]
	return st, ok
}

func (in *Instance) pub(id uint64) *pubIdx {
	p := in.pubs[id]
	if p == nil {
		p = &pubIdx{stored: map[uint64]storedAt{}}
		in.pubs[id] = p
	}
	return p
}

func (in *Instance) index(r *Rec) {
	p := in.pub(r.Pub)
	p.stored[r.PubSeq] = storedAt{local: r.Seq, digest: r.Digest}
	p.last = max(p.last, r.PubSeq)
	p.lastLocal = max(p.lastLocal, r.Seq)
}

// Stop crashes the instance: silent (a machine crash: peers only time
// out) or not (a process crash: peers see the connections close). keep:
// how many unsynced records survive (kill -9 keeps the page cache; a
// power loss keeps a prefix).
func (in *Instance) Stop(silent bool, keep int) {
	if !in.up {
		return
	}
	in.up = false
	in.epoch++
	in.tracef("crash silent=%v keep=%d of %d unsynced", silent, keep, in.j.LastSeq()-in.j.SyncedSeq())
	in.j.crash(keep)
	for _, d := range in.dests {
		if d.ep != nil {
			d.ep.Close(silent)
			d.ep = nil
		}
	}
	for _, src := range in.sources {
		if src.ep != nil {
			src.ep.Close(silent)
			src.ep = nil
		}
	}
	for _, c := range in.conns {
		c.ep.Close(silent)
	}
	in.conns = in.conns[:0]
}

// Cut resets every connection of the instance (both ends see it close at
// once: an RST, not a silence); they are dialed again.
func (in *Instance) Cut() {
	if !in.up {
		return
	}
	in.tracef("connections cut")
	for _, d := range in.dests {
		if d.ep != nil {
			in.destDown(d, "connection reset")
		}
	}
	for _, src := range in.sources {
		if src.ep != nil {
			src.ep.Abort("connection reset")
		}
	}
	for _, c := range append([]*clientConn(nil), in.conns...) {
		c.ep.Abort("connection reset")
	}
}

// failStop is what an instance does when its journal fails: every client
// hears storage-failed, every connection closes, and it stays down until
// an operator restarts it (docs/operations.md: exit 3).
func (in *Instance) failStop(why string) {
	if BrokenLimpOn {
		in.tracef("journal failed (%s): limping on", why)
		return
	}
	in.tracef("journal failed (%s): fail-stop", why)
	in.s.chk.failed(in)
	for _, c := range in.conns {
		c.ep.Send(mError{Code: "storage-failed"})
	}
	in.failed = true
	in.Stop(false, 0)
}

// ---- journal sync (group commit) ----

func (in *Instance) kickSync() {
	j := in.j
	if j.syncing || j.synced == j.LastSeq() || in.failed {
		return
	}
	j.syncing = true
	target := j.LastSeq()
	in.w.After(in.w.Between(80*Microsecond, 400*Microsecond)+j.slow, in.alive(func() {
		j.syncing = false
		if j.failNextSync {
			j.failNextSync = false
			j.failed = true
			in.failStop("fdatasync error")
			return
		}
		j.synced = max(j.synced, target)
		in.onSynced()
		in.kickSync()
	}))
}

func (in *Instance) onSynced() {
	for _, d := range in.dests {
		in.pump(d)
	}
	for _, src := range in.sources {
		in.sendAcks(src)
	}
	in.releaseAcks()
	in.deliverAll()
}

func (in *Instance) appendRec(r Rec) (uint64, bool) {
	seq, ok := in.j.Append(r)
	if !ok {
		in.failStop("append failed: disk full")
		return 0, false
	}
	in.appendAt = append(in.appendAt, in.w.now)
	in.index(in.j.At(seq))
	in.kickSync()
	return seq, true
}

// ---- ack point ----

func (in *Instance) recomputeSyncPoint() {
	in.syncPoint = rsm.SyncPoint(len(in.dests), func(i int) (rsm.State, uint64) {
		return in.dests[i].m.State(), in.dests[i].m.Acked()
	})
	if BrokenAckBeforeSync {
		in.syncPoint = ^uint64(0)
	}
}

// ackPoint is the highest local seq a persisted ack may cover.
func (in *Instance) ackPoint() uint64 { return min(in.j.SyncedSeq(), in.syncPoint) }

// BrokenAckBeforeSync is a deliberately broken build for the checker's
// own test: persisted acks ignore the sync destinations.
var BrokenAckBeforeSync bool

func (in *Instance) releaseAcks() {
	if (in.failed || in.j.failed) && !BrokenLimpOn {
		return
	}
	ap := in.ackPoint()
	for _, c := range in.conns {
		n := 0
		for n < len(c.pending) && c.pending[n].local <= ap {
			n++
		}
		if n == 0 {
			continue
		}
		through := c.pending[n-1].pubSeq
		for _, p := range c.pending[:n] {
			in.s.chk.acked(in, c.pub, p.pubSeq)
		}
		c.pending = append(c.pending[:0], c.pending[n:]...)
		c.ep.Send(mAck{Through: through})
	}
}

// ackedThrough is the logon reply's AckedPubSeq: the top of the
// publisher's first run of stored sequences that the ack point covers.
func (in *Instance) ackedThrough(p *pubIdx) uint64 {
	ap := in.ackPoint()
	a := uint64(0)
	for s := uint64(1); ; s++ {
		st, ok := p.stored[s]
		if !ok || st.local > ap {
			return a
		}
		a = s
	}
}

// ---- replication: the source side (our journal to a destination) ----

func (in *Instance) dial(d *simDest) {
	if d.dialing || d.ep != nil || !in.up {
		return
	}
	d.dialing = true
	ep := in.epoch
	live := func() bool { return in.up && in.epoch == ep }
	in.s.net.Dial(in.name, d.cfg.Name, 100*Millisecond, func(e *Endpoint) {
		if !live() {
			e.Close(false)
			return
		}
		d.dialing = false
		d.ep = e
		d.lastSend = in.w.now
		d.m.LinkUp()
		e.onMsg = func(msg any) {
			if live() && d.ep == e {
				in.onDestMsg(d, e, msg)
			}
		}
		e.onClose = func(reason string) {
			if live() && d.ep == e {
				in.destDown(d, reason)
			}
		}
		e.Send(mHello{From: in.name, Journal: in.j.ID, Epoch: in.runEpoch})
	}, func(reason string) {
		if !live() {
			return
		}
		d.dialing = false
		in.w.After(50*Millisecond, in.alive(func() { in.dial(d) }))
	})
}

func (in *Instance) destDown(d *simDest, reason string) {
	in.tracef("link to %s down: %s", d.cfg.Name, reason)
	if d.ep != nil {
		d.ep.Close(false)
	}
	d.ep, d.run = nil, 0
	d.m.LinkDown()
	in.w.After(50*Millisecond, in.alive(func() { in.dial(d) }))
}

func (in *Instance) onDestMsg(d *simDest, e *Endpoint, msg any) {
	switch m := msg.(type) {
	case mHeartbeat:
	case mResume:
		from, v, reason := rsm.CheckResume(in.j.ID, m.Pos, 1, in.j.SyncedSeq(), func(seq uint64) (uint32, error) {
			return in.j.At(seq).CRC, nil
		})
		if BrokenTrustAnyJournal && m.Pos.Journal != in.j.ID && m.Pos.Seq > 0 {
			from, v = m.Pos.Seq+1, rsm.ResumeAt // the bug of the journal-identity fix
		}
		if src := in.source(d.cfg.Name); v != rsm.ResumeFork && !BrokenNoEpochs && src != nil &&
			rsm.LostOwnRecords(src.m.Journal(), src.m.ReceivedSeq(), m.Journal, m.Last) {
			in.tracef("%s lost records of its own stream that this instance holds (%d > its last %d): its stream starts afresh",
				d.cfg.Name, src.m.ReceivedSeq(), m.Last)
			from, v = 1, rsm.ResumeNewStream
		}
		if v == rsm.ResumeFork {
			d.m.Fork()
			in.tracef("fork with %s: %s", d.cfg.Name, reason)
			e.Send(mRefuse{})
			in.recomputeSyncPoint()
			return
		}
		d.run, _ = d.m.Resume(from)
		d.cursor, d.batchFrom = from, from
		d.f.SetDest(record.OriginEpochID(d.cfg.Name, m.Journal, m.Epoch))
		if v == rsm.ResumeNewStream && !BrokenNoReseed {
			d.f.Reseed(in.j.LastSeq())
		} else {
			d.f.Reseed(0)
		}
		in.tracef("resume %s from %d (%v)", d.cfg.Name, from, v)
		in.recomputeSyncPoint()
		in.releaseAcks()
		in.pump(d)
	case mBatchAck:
		if d.m.Ack(d.run, m.Through) {
			in.recomputeSyncPoint()
			in.releaseAcks()
		}
		in.pump(d)
	default:
		in.destDown(d, fmt.Sprintf("unexpected %T", msg))
	}
}

// BrokenLimpOn and BrokenConflictAsDuplicate: see broken.go.
var BrokenLimpOn, BrokenConflictAsDuplicate bool

// BrokenNoEpochs: origin ids per journal only, and no LostOwnRecords (the
// product before the restore fix this simulator prompted).
var BrokenNoEpochs bool

// BrokenNoReseed: a destination that resumes from nothing of this journal
// is not reseeded (rsm.Filter.Reseed; the product before that fix).
var BrokenNoReseed bool

// BrokenTrustAnyJournal disables the journal-identity check (issue #10's
// fix): a destination's position in another journal is trusted.
var BrokenTrustAnyJournal bool

// pump ships durable records to d while its window is open: the sender of
// replicate/destination.go, over the model journal.
func (in *Instance) pump(d *simDest) {
	if d.ep == nil || d.run == 0 || d.m.Forked() {
		return
	}
	for d.m.WindowOpen() && d.cursor <= in.j.SyncedSeq() {
		var recs []Rec
		through, size := d.cursor-1, 32
		for d.cursor <= in.j.SyncedSeq() && len(recs) < 32 {
			r := in.j.At(d.cursor)
			if d.f.Wants(r.Seq, r.Origin, r.Via, []byte(r.Topic)) {
				recs = append(recs, *r)
				size += 100
			}
			through = d.cursor
			d.cursor++
		}
		if len(recs) == 0 && d.m.EmptyRange() {
			if d.m.Ship(d.run, through, 0, 0) {
				in.recomputeSyncPoint()
				in.releaseAcks()
			}
			continue
		}
		d.ep.Send(mBatch{Journal: in.j.ID, From: d.batchFrom, Through: through, ThroughCRC: in.j.At(through).CRC, Recs: recs})
		d.lastSend = in.w.now
		d.m.Ship(d.run, through, len(recs), size)
		d.batchFrom = through + 1
	}
}

// ---- replication: the destination side (a peer's stream to us) ----

func (in *Instance) source(peer string) *simSource {
	for _, s := range in.sources {
		if s.peer == peer {
			return s
		}
	}
	return nil
}

// accept takes a connection (a replication link or a client).
func (in *Instance) accept(e *Endpoint) bool {
	if !in.up {
		return false
	}
	ep := in.epoch
	live := func() bool { return in.up && in.epoch == ep }
	var c *clientConn
	var src *simSource
	e.onMsg = func(msg any) {
		if !live() {
			return
		}
		switch m := msg.(type) {
		case mHello:
			s := in.source(m.From)
			if s == nil {
				e.Close(false)
				return
			}
			if s.ep != nil && s.ep != e {
				s.ep.Close(false) // replaced
			}
			src, s.ep = s, e
			held, switched := s.m.Follow(m.Journal)
			s.journal, s.epoch = m.Journal, m.Epoch
			s.q.Reset()
			if switched {
				in.tracef("%s runs on a new journal: following it from its start", m.From)
			}
			e.Send(mResume{Pos: held, Journal: in.j.ID, Epoch: in.runEpoch, Last: in.j.SyncedSeq()})
		case mBatch:
			if src == nil || src.ep != e {
				return
			}
			src.refused = false
			in.onBatch(src, m)
		case mRefuse:
			in.tracef("%s refuses its stream (fork)", src.peer)
			if src != nil {
				src.refused = true
			}
		case mHeartbeat:
		case mLogon:
			c = &clientConn{ep: e, name: m.Name, pub: record.ID(m.Name)}
			in.conns = append(in.conns, c)
			p := in.pub(c.pub)
			e.Send(mLogonReply{Instance: in.name, LastPubSeq: p.last, AckedPubSeq: in.ackedThrough(p)})
		case mPublish:
			if c != nil {
				in.onPublish(c, m)
			}
		case mSubscribe:
			if c != nil {
				c.sub = &serverSub{topic: m.Topic, origins: m.Origins, pubs: m.Pubs, next: 1}
				if m.Now {
					c.sub.next = in.j.SyncedSeq() + 1
				}
				in.deliver(c)
			}
		}
	}
	e.onClose = func(string) {
		if !live() {
			return
		}
		if src != nil && src.ep == e {
			src.ep = nil
			src.q.Reset()
		}
		if c != nil {
			in.dropConn(c)
		}
	}
	return true
}

func (in *Instance) dropConn(c *clientConn) {
	for i, x := range in.conns {
		if x == c {
			in.conns = append(in.conns[:i], in.conns[i+1:]...)
			return
		}
	}
}

func (in *Instance) onBatch(src *simSource, m mBatch) {
	if err := src.m.Batch(src.journal, m.From); err != nil {
		in.tracef("batch from %s refused: %v", src.peer, err)
		src.ep.Abort("bad batch")
		return
	}
	if m.Journal != src.journal {
		src.ep.Abort("batch of another journal")
		return
	}
	var stored uint64
	for _, r := range m.Recs {
		if !src.m.Fresh(r.Seq) {
			continue
		}
		p := in.pub(r.Pub)
		if st, ok := p.stored[r.PubSeq]; ok {
			if st.digest != r.Digest {
				in.conflicts++
				in.s.chk.conflict()
			}
			stored = max(stored, p.lastLocal)
			continue
		}
		nr := r
		nr.Via = record.OriginEpochID(src.peer, src.journal, src.epoch)
		seq, ok := in.appendRec(nr)
		if !ok {
			return
		}
		stored = seq
	}
	src.q.Push(src.m.Received(m.Through, m.ThroughCRC, stored))
	in.sendAcks(src)
}

func (in *Instance) sendAcks(src *simSource) {
	if src.ep == nil {
		return
	}
	if a, ok := src.q.Ready(in.j.SyncedSeq()); ok {
		src.ep.Send(mBatchAck{Through: a.Through})
		src.m.Acked(rsm.Position{Journal: src.journal, Seq: a.Through, CRC: a.CRC})
	}
}

// ---- clients ----

func (in *Instance) onPublish(c *clientConn, m mPublish) {
	if in.failed {
		return
	}
	p := in.pub(c.pub)
	if st, ok := p.stored[m.PubSeq]; ok {
		if st.digest != m.Digest && !BrokenConflictAsDuplicate {
			in.conflicts++
			in.s.chk.conflict()
			c.ep.Send(mRefused{PubSeq: m.PubSeq})
			return
		}
		c.pending = append(c.pending, pendingAck{pubSeq: m.PubSeq, local: p.lastLocal})
		in.releaseAcks()
		return
	}
	seq, ok := in.appendRec(Rec{Origin: in.origin, Pub: c.pub, PubSeq: m.PubSeq, Topic: m.Topic, Digest: m.Digest})
	if !ok {
		return
	}
	c.pending = append(c.pending, pendingAck{pubSeq: m.PubSeq, local: seq})
}

func (sub *serverSub) wants(r *Rec) bool {
	if r.Topic != sub.topic {
		return false
	}
	for _, o := range sub.origins {
		if o.ID == r.Origin && r.OriginSeq <= o.Seq {
			return false
		}
	}
	for _, p := range sub.pubs {
		if p.ID == r.Pub && r.PubSeq <= p.Seq {
			return false
		}
	}
	return true
}

func (in *Instance) deliverAll() {
	for _, c := range in.conns {
		in.deliver(c)
	}
}

// deliver sends c's subscription the durable records it has not had.
func (in *Instance) deliver(c *clientConn) {
	sub := c.sub
	if sub == nil {
		return
	}
	for ; sub.next <= in.j.SyncedSeq(); sub.next++ {
		r := in.j.At(sub.next)
		if sub.wants(r) {
			c.ep.Send(mDeliver{R: *r})
		}
	}
}

// ---- timers ----

func (in *Instance) tick() {
	hb := in.cfg.Heartbeat
	now := in.w.now
	for _, d := range in.dests {
		if d.ep == nil {
			continue
		}
		if now-d.ep.lastRecv > 3*hb {
			in.destDown(d, "heartbeat timeout")
			continue
		}
		if now-d.lastSend >= hb/2 {
			d.ep.Send(mHeartbeat{})
			d.lastSend = now
		}
	}
	for _, src := range in.sources {
		if src.ep == nil {
			continue
		}
		if now-src.ep.lastRecv > 3*hb {
			in.tracef("link from %s: heartbeat timeout", src.peer)
			src.ep.Abort("heartbeat timeout")
			continue
		}
		src.ep.Send(mHeartbeat{})
	}
	for _, c := range in.conns {
		if now-c.ep.lastRecv > 3*hb {
			c.ep.Abort("client timeout")
			continue
		}
		c.ep.Send(mHeartbeat{})
	}
	in.w.After(hb/2, in.alive(in.tick))
}

func (in *Instance) evaluate() {
	now := in.w.now
	changed := false
	for _, d := range in.dests {
		lag := int64(0)
		if a := d.m.Acked(); a < in.j.SyncedSeq() && int(a) < len(in.appendAt) {
			lag = now - in.appendAt[a]
		}
		st, _, ch := d.m.Evaluate(now, lag)
		if ch {
			in.tracef("%s is now %v", d.cfg.Name, st)
			changed = true
		}
	}
	if changed {
		in.recomputeSyncPoint()
		in.releaseAcks()
	}
	in.w.After(10*Millisecond, in.alive(in.evaluate))
}

func (in *Instance) savePositions() {
	in.saveFiles()
	in.w.After(50*Millisecond, in.alive(in.savePositions))
}

func (in *Instance) saveFiles() {
	for _, src := range in.sources {
		if src.m != nil {
			src.saved, src.hasFile = src.m.Durable(), true
		}
	}
	for i, d := range in.dests {
		in.outSaved[i] = d.m.Acked()
	}
	in.outJID = in.j.ID
}

// ---- operator actions on the data directory ----

// ReplReset is `tandem repl-reset --peer P` for every peer that refused
// its stream (a fork): the instance stops, forgets its position of that
// stream, and starts; it takes the stream afresh (de-duplication drops
// what it holds).
func (in *Instance) ReplReset() {
	var peers []string
	for _, s := range in.sources {
		if s.refused {
			peers = append(peers, s.peer)
		}
	}
	if len(peers) == 0 {
		return
	}
	in.saveFiles()
	in.Stop(false, 0)
	for _, s := range in.sources {
		if s.refused {
			s.refused, s.hasFile, s.saved = false, false, rsm.Position{}
		}
	}
	in.tracef("operator: repl-reset %v", peers)
	in.Start()
}

// Wipe replaces the data directory with an empty one (a lost disk); the
// instance must be down.
func (in *Instance) Wipe() {
	in.j = newJournal(in.w)
	for _, s := range in.sources {
		s.hasFile = false
	}
	for i := range in.outSaved {
		in.outSaved[i] = 0
	}
	in.wiped = true
	in.s.chk.wiped(in)
	in.tracef("data directory wiped")
}

// Backup takes a copy of the data directory (durable state only).
func (in *Instance) Backup() {
	f := &instanceFiles{j: in.j.clone(), out: append([]uint64(nil), in.outSaved...)}
	for _, s := range in.sources {
		f.sources = append(f.sources, s.saved)
	}
	in.backup = f
}

// Restore puts the backup back (the instance must be down): the journal
// keeps its id but loses what was written since, a fork for its peers.
func (in *Instance) Restore() bool {
	if in.backup == nil {
		return false
	}
	in.j = in.backup.j.clone()
	copy(in.outSaved, in.backup.out)
	for i, s := range in.sources {
		s.saved = in.backup.sources[i]
	}
	in.wiped = true // what it acknowledged since the backup is gone from it
	in.s.chk.wiped(in)
	in.tracef("data directory restored from a backup (last=%d)", in.j.LastSeq())
	return true
}
