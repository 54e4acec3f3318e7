package sim

import (
	"errors"
	"math/rand/v2"

	"github.com/tandemhq/tandem/internal/hasm"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// The simulator's HA clients are drivers of internal/hasm's Machine, the
// decisions client.HAClient runs: which server next and when, what leaves
// the publish store at a logon and what is re-published, refusals,
// re-subscriptions and their resume entries, the duplicate filter. The
// drivers here do what client/ha.go's does with sockets and files, over
// the simulated network and model stores.

// StoreKind is what a simulated client keeps across its own crashes.
type StoreKind uint8

// Store kinds.
const (
	// StoreFile: a file store (publish store or bookmark store) that
	// survives the client's crash (it is synced before each use).
	StoreFile StoreKind = iota
	// StoreMemory: a memory store: lost when the client crashes.
	StoreMemory
)

func (k StoreKind) String() string {
	if k == StoreFile {
		return "file"
	}
	return "memory"
}

type storeEnt struct {
	seq    uint64
	topic  string
	digest uint64
}

type haConnEnt struct {
	id       hasm.ConnID
	ep       *Endpoint
	loggedOn bool
	server   string
	at       int64 // when the dial began (the connect timeout)
}

// haDriver runs one hasm.Machine over the simulated network: the part of
// client/ha.go that is I/O.
type haDriver struct {
	s        *Sim
	name     string
	servers  []string
	m        *hasm.Machine
	conns    []*haConnEnt
	cur      *haConnEnt // the current connection (ActUp)
	up       bool
	epoch    uint64
	hb       int64
	lastSend int64
	acts     []hasm.Action
	// hooks of the publisher or subscriber
	onAttach    func(a hasm.Action, c *haConnEnt) (storeLast uint64)
	onAction    func(a hasm.Action)
	onMsg       func(c *haConnEnt, msg any)
	loggedOnce  bool // this life has been up once
	timerArmed  int64
	timerPlaced bool
}

func (h *haDriver) tracef(format string, args ...any) {
	h.s.w.Tracef("%s: "+format, append([]any{h.name}, args...)...)
}

func (h *haDriver) alive(f func()) func() {
	ep := h.epoch
	return func() {
		if h.up && h.epoch == ep {
			f()
		}
	}
}

func (h *haDriver) newMachine(cfg hasm.Config) {
	w := h.s.w
	cfg.Name = h.name
	cfg.Chooser = hasm.NewDefaultChooser(h.servers...)
	cfg.Delay = &hasm.ExponentialDelay{Initial: 10 * Millisecond, MultNum: 2, MultDen: 1, Max: 200 * Millisecond,
		JitterPPM: 200_000, Rand: rand.New(rand.NewPCG(w.rng.Uint64(), 1))}
	cfg.Rand = rand.New(rand.NewPCG(w.rng.Uint64(), 2))
	cfg.StableAfter = 200 * Millisecond
	cfg.MaxFrame = 1 << 20
	h.m = hasm.New(cfg)
}

func (h *haDriver) start() {
	h.up = true
	h.epoch++
	h.conns, h.cur, h.loggedOnce = h.conns[:0], nil, false
	h.m.Step(hasm.Input{Kind: hasm.InStart, Now: h.s.w.now})
	h.process()
	h.s.w.After(h.hb/2, h.alive(h.heartbeat))
}

func (h *haDriver) crash() {
	h.up = false
	h.epoch++
	for _, c := range h.conns {
		if c.ep != nil {
			c.ep.Close(false)
		}
	}
	h.conns, h.cur = h.conns[:0], nil
}

func (h *haDriver) conn(id hasm.ConnID) *haConnEnt {
	for _, c := range h.conns {
		if c.id == id {
			return c
		}
	}
	return nil
}

func (h *haDriver) dropConn(c *haConnEnt) {
	for i, x := range h.conns {
		if x == c {
			h.conns = append(h.conns[:i], h.conns[i+1:]...)
			break
		}
	}
	if h.cur == c {
		h.cur = nil
	}
}

// step feeds an input and carries out what the machine asks.
func (h *haDriver) step(in hasm.Input) {
	in.Now = h.s.w.now
	if err := h.m.Step(in); err != nil {
		panic("sim: hasm misuse: " + err.Error())
	}
	h.process()
}

func (h *haDriver) process() {
	for h.up && h.m.HasReady() {
		h.acts = append(h.acts[:0], h.m.Ready().Actions...)
		h.m.Advance()
		for _, a := range h.acts {
			h.exec(a)
		}
	}
}

func (h *haDriver) exec(a hasm.Action) {
	w := h.s.w
	switch a.Kind {
	case hasm.ActDial:
		h.dial(a.Conn, a.URI)
	case hasm.ActTimer:
		at := a.At
		w.At(at, h.alive(func() {
			h.m.Tick(w.now)
			h.process()
		}))
	case hasm.ActAttach:
		c := h.conn(a.Conn)
		last := h.onAttach(a, c)
		h.step(hasm.Input{Kind: hasm.InAttached, Conn: a.Conn, Seq: last})
	case hasm.ActUp:
		h.cur = h.conn(a.Conn)
		h.loggedOnce = true
	case hasm.ActDown:
		if h.cur != nil && h.cur.id == a.Conn {
			h.cur = nil
		}
	case hasm.ActClose:
		if c := h.conn(a.Conn); c != nil {
			if c.ep != nil {
				c.ep.Close(false)
			}
			h.dropConn(c)
		}
	case hasm.ActEvent:
		if a.Event.State == hasm.StateFailedOver || a.Event.State == hasm.StateStopped {
			h.tracef("%v %s (from %s) %v", a.Event.State, a.Event.URI, a.Event.From, a.Event.Err)
		}
	case hasm.ActStopped:
		h.tracef("stopped: %v", a.Err)
	default:
		if h.onAction != nil {
			h.onAction(a)
		}
	}
}

func (h *haDriver) dial(id hasm.ConnID, uri string) {
	ep := h.epoch
	live := func() bool { return h.up && h.epoch == ep }
	c := &haConnEnt{id: id, at: h.s.w.now}
	h.conns = append(h.conns, c)
	h.s.net.Dial(h.name, uri, 100*Millisecond, func(e *Endpoint) {
		if !live() || h.conn(id) != c {
			e.Close(false)
			return
		}
		c.ep = e
		h.lastSend = h.s.w.now
		e.onMsg = func(msg any) {
			if !live() || h.conn(id) != c {
				return
			}
			if r, ok := msg.(mLogonReply); ok && !c.loggedOn {
				c.loggedOn, c.server = true, r.Instance
				h.step(hasm.Input{Kind: hasm.InDialed, Conn: id,
					Logon: hasm.Logon{LastPubSeq: r.LastPubSeq, AckedPubSeq: r.AckedPubSeq, Instance: r.Instance}})
				return
			}
			if m, ok := msg.(mError); ok {
				h.lose(c, errors.New(m.Code), hasm.CauseGoingAway)
				return
			}
			h.onMsg(c, msg)
		}
		e.onClose = func(reason string) {
			if live() && h.conn(id) == c {
				h.lose(c, errors.New(reason), hasm.CauseOther)
			}
		}
		e.Send(mLogon{Name: h.name})
	}, func(reason string) {
		if live() && h.conn(id) == c {
			h.dropConn(c)
			h.step(hasm.Input{Kind: hasm.InDialFailed, Conn: id, Err: errors.New(reason), Cause: hasm.CauseOther})
		}
	})
}

// lose: connection c ended (closed, silent, or the server going away).
func (h *haDriver) lose(c *haConnEnt, err error, cause hasm.Cause) {
	if c.ep != nil {
		c.ep.Close(false)
	}
	h.dropConn(c)
	if c.loggedOn {
		h.step(hasm.Input{Kind: hasm.InLost, Conn: c.id, Err: err, Cause: cause})
	} else {
		h.step(hasm.Input{Kind: hasm.InDialFailed, Conn: c.id, Err: err, Cause: cause})
	}
}

// heartbeat: the client's heartbeats and idle timeout (outside the
// machine, as in client/conn.go: a silent server comes in as CauseSilent).
func (h *haDriver) heartbeat() {
	now := h.s.w.now
	for _, c := range append([]*haConnEnt(nil), h.conns...) {
		if c.ep == nil {
			continue
		}
		if !c.loggedOn {
			// The connect timeout (HAConfig.ConnectTimeout): a server that
			// took the connection and went silent before its logon reply.
			if now-c.at > 5*h.hb {
				h.tracef("logon to %s timed out", c.ep.PeerNode())
				h.lose(c, errors.New("logon timeout"), hasm.CauseOther)
			}
			continue
		}
		if now-c.ep.lastRecv > 3*h.hb {
			h.tracef("server %s went silent", c.server)
			h.lose(c, errors.New("heartbeat timeout"), hasm.CauseSilent)
		} else if now-h.lastSend >= h.hb/2 {
			c.ep.Send(mHeartbeat{})
			h.lastSend = now
		}
	}
	h.s.w.After(h.hb/2, h.alive(h.heartbeat))
}

// Publisher is an HA publisher with a publish store.
type Publisher struct {
	haDriver
	id       uint64
	store    StoreKind
	ents     []storeEnt // unpersisted, in sequence order
	total    int        // messages the application publishes
	done     int        // published so far
	interval int64
	topic    string
	life     uint64 // incarnation (content differs across lives without a file store)
	reused   bool   // a life started without its store: sequences may repeat
	// naive: numbers its messages from 1 in every life, ignoring the logon
	// reply's LastPubSeq (a plain client, or a second process under the
	// same name): its re-used sequences must be refused sequence-reused,
	// never acknowledged as the stored message.
	naive     bool
	naiveNext uint64
}

// BrokenPublishBeforeLogon lets publishers number and store messages
// before their first logon (the HA client's behaviour before the fix the
// simulator prompted): after a restart with a memory store they collide
// with acknowledged sequences and leave the store at the logon as
// persisted.
var BrokenPublishBeforeLogon bool

func newPublisher(s *Sim, name string, servers []string, store StoreKind, total int, interval int64, topic string) *Publisher {
	p := &Publisher{haDriver: haDriver{s: s, name: name, servers: servers, hb: 20 * Millisecond},
		id: record.ID(name), store: store, total: total, interval: interval, topic: topic}
	p.onAttach, p.onAction, p.onMsg = p.attach, p.action, p.msg
	return p
}

func (p *Publisher) digest(seq uint64) uint64 {
	// The content of message seq in this life: a file store replays the
	// same content after a crash; a new life without it publishes new
	// content under sequences that may repeat.
	x := p.id ^ seq*0x9E3779B97F4A7C15 ^ p.life*0xC2B2AE3D27D4EB4F
	x ^= x >> 31
	return x*0xBF58476D1CE4E5B9 | 1
}

func (p *Publisher) lastStored() uint64 {
	if n := len(p.ents); n > 0 {
		return p.ents[n-1].seq
	}
	return 0
}

// Start starts (or restarts) the publisher's process: NewHA over its
// store, then Connect.
func (p *Publisher) Start() {
	p.newMachine(hasm.Config{Store: true, NextPubSeq: p.lastStored() + 1})
	p.naiveNext = 1
	p.tracef("start store=%v naive=%v unpersisted=%d", p.store, p.naive, len(p.ents))
	p.start()
	p.s.w.After(p.interval, p.alive(p.publishNext))
}

// Crash kills the publisher's process.
func (p *Publisher) Crash() {
	if !p.up {
		return
	}
	p.crash()
	if p.store == StoreMemory {
		p.ents = p.ents[:0]
		p.life++
		p.reused = true
	}
	p.tracef("crash")
}

func (p *Publisher) send(c *haConnEnt, e storeEnt) {
	if c != nil && c.ep != nil {
		c.ep.Send(mPublish{PubSeq: e.seq, Topic: e.topic, Digest: e.digest})
	}
}

func (p *Publisher) publishNext() {
	if p.done < p.total && (p.m.Numbered() || BrokenPublishBeforeLogon) {
		seq := p.m.NextPubSeq()
		if p.naive {
			seq = p.naiveNext
			p.naiveNext++
		}
		e := storeEnt{seq: seq, topic: p.topic, digest: p.digest(seq)}
		p.ents = append(p.ents, e)
		p.done++
		p.s.chk.published(p, seq, e.digest)
		if p.m.Stored(seq, len(e.topic), 64) == hasm.VerdictSend {
			p.send(p.cur, e)
		}
		p.process()
	}
	if p.done < p.total {
		p.s.w.After(p.interval, p.alive(p.publishNext))
	}
}

// attach (ActAttach): the store discards what the server's ack point
// covers (a logon reply's AckedPubSeq is an acknowledgment as much as an
// Ack frame), and the rest is re-published in order on the new
// connection.
func (p *Publisher) attach(a hasm.Action, c *haConnEnt) uint64 {
	p.discard(a.Seq, c.server, !p.naive)
	n := 0
	for _, e := range p.ents {
		if p.m.Replayed(a.Conn, e.seq, len(e.topic), 64) == hasm.VerdictSend {
			p.send(c, e)
			n++
		}
	}
	p.tracef("logged on to %s acked=%d replay=%d", c.server, a.Seq, n)
	return p.lastStored()
}

// discard drops the store's messages <= through; seen: the publisher saw
// them acknowledged by server.
func (p *Publisher) discard(through uint64, server string, seen bool) {
	n := 0
	for n < len(p.ents) && p.ents[n].seq <= through {
		if seen {
			p.s.chk.pubSawAck(p, p.ents[n].seq, p.ents[n].digest, server)
		}
		n++
	}
	p.ents = append(p.ents[:0], p.ents[n:]...)
}

func (p *Publisher) action(a hasm.Action) {
	switch a.Kind {
	case hasm.ActStoreDiscard:
		server := ""
		if p.cur != nil {
			server = p.cur.server
		}
		p.discard(a.Seq, server, server != "")
	case hasm.ActStoreRemove:
		for i, e := range p.ents {
			if e.seq == a.Seq {
				p.s.chk.refused(p, e.seq)
				p.ents = append(p.ents[:i], p.ents[i+1:]...)
				break
			}
		}
	case hasm.ActFailedWrite:
		p.tracef("failed write %d: %v", a.Seq, a.Code)
	}
}

func (p *Publisher) msg(c *haConnEnt, msg any) {
	switch m := msg.(type) {
	case mAck:
		if c == p.cur {
			p.step(hasm.Input{Kind: hasm.InAcked, Conn: c.id, Seq: m.Through})
		}
	case mRefused:
		p.step(hasm.Input{Kind: hasm.InRefused, Conn: c.id, Seq: m.PubSeq, Code: wire.CodeSequenceReused, Reason: "sequence reused"})
	}
}

// Subscriber is an HA subscriber with a bookmark store: it resumes from
// its progress after a failover and filters what it has had.
type Subscriber struct {
	haDriver
	topic     string
	store     StoreKind
	origins   []progressSet // the bookmark store: what was discarded
	pubs      []progressSet
	filter    hasm.SubFilter
	sub       hasm.SubID
	resumable bool // has kept its progress through every crash
	cur       *Rec // the message being offered (Discards)
}

type progressSet struct {
	id uint64
	hasm.RangeSet
}

func newSubscriber(s *Sim, name string, servers []string, store StoreKind, topic string) *Subscriber {
	b := &Subscriber{haDriver: haDriver{s: s, name: name, servers: servers, hb: 20 * Millisecond},
		topic: topic, store: store, resumable: true}
	b.onAttach = func(hasm.Action, *haConnEnt) uint64 { return 0 }
	b.onAction, b.onMsg = b.action, b.msg
	return b
}

func findSet(sets *[]progressSet, id uint64) *hasm.RangeSet {
	for i := range *sets {
		if (*sets)[i].id == id {
			return &(*sets)[i].RangeSet
		}
	}
	*sets = append(*sets, progressSet{id: id})
	return &(*sets)[len(*sets)-1].RangeSet
}

// MostRecent is the bookmark store's resume entries for the subscription
// (hasm.Bookmarks): per origin and per publisher, the floor.
func (b *Subscriber) MostRecent(string) ([]wire.ResumeEntry, bool) {
	if len(b.origins) == 0 && len(b.pubs) == 0 {
		return nil, false
	}
	var out []wire.ResumeEntry
	for _, o := range b.origins {
		out = append(out, wire.ResumeEntry{ID: o.id, Seq: o.Floor(), Kind: wire.ResumeOrigin})
	}
	for _, p := range b.pubs {
		out = append(out, wire.ResumeEntry{ID: p.id, Seq: p.Floor(), Kind: wire.ResumePublisher})
	}
	return out, true
}

// IsDiscarded answers for the message being offered (hasm.Discards).
func (b *Subscriber) IsDiscarded() bool {
	r := b.cur
	return findSet(&b.pubs, r.Pub).Contains(r.PubSeq) || findSet(&b.origins, r.Origin).Contains(r.OriginSeq)
}

// Start starts (or restarts) the subscriber's process.
func (b *Subscriber) Start() {
	b.newMachine(hasm.Config{Bookmarks: b})
	b.filter = hasm.SubFilter{}
	b.tracef("start store=%v", b.store)
	b.sub, _ = b.m.AddSub(b.name+"-orders", b.topic, hasm.StartEpoch)
	b.start()
}

// Crash kills the subscriber's process.
func (b *Subscriber) Crash() {
	if !b.up {
		return
	}
	b.crash()
	if b.store == StoreMemory {
		b.origins, b.pubs = nil, nil
		b.resumable = false
	}
	b.tracef("crash")
}

func (b *Subscriber) action(a hasm.Action) {
	switch a.Kind {
	case hasm.ActSubscribe:
		c := b.conn(a.Conn)
		if c == nil || c.ep == nil {
			b.step(hasm.Input{Kind: hasm.InSubscribed, Conn: a.Conn, Sub: a.Sub, Err: errors.New("connection gone"),
				Cause: hasm.CauseConnGone, Initial: a.Initial})
			return
		}
		m := mSubscribe{Topic: b.topic, Now: a.Start == hasm.ModeNow}
		if a.Start == hasm.ModeResume {
			for _, e := range a.Resume {
				if e.Kind == wire.ResumeOrigin {
					m.Origins = append(m.Origins, mark{ID: e.ID, Seq: e.Seq})
				} else {
					m.Pubs = append(m.Pubs, mark{ID: e.ID, Seq: e.Seq})
				}
			}
		}
		b.tracef("subscribe on %s (%v, %d origins, %d publishers)", c.server, a.Start, len(m.Origins), len(m.Pubs))
		c.ep.Send(m)
		b.step(hasm.Input{Kind: hasm.InSubscribed, Conn: a.Conn, Sub: a.Sub, Initial: a.Initial})
	case hasm.ActSubEnded:
		b.tracef("subscription ended: %v", a.Err)
	}
}

func (b *Subscriber) msg(c *haConnEnt, msg any) {
	if m, ok := msg.(mDeliver); ok {
		r := &m.R
		b.cur = r
		if !b.filter.Admit(r.Pub, r.PubSeq, b) {
			return // had it (a resend after failover): filtered
		}
		b.s.chk.delivered(b, r, c.server)
		b.filter.Delivered(r.Pub, r.PubSeq)
		// Processed: discarded into the bookmark store.
		findSet(&b.origins, r.Origin).Add(r.OriginSeq)
		findSet(&b.pubs, r.Pub).Add(r.PubSeq)
	}
}
