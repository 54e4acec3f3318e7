package sim

import (
	"github.com/tandemhq/tandem/record"
)

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

// clientConnState is what both HA clients share: the server list, the
// connection, reconnection with backoff, heartbeat timeouts.
type haConn struct {
	s        *Sim
	name     string
	servers  []string
	cur      int
	ep       *Endpoint
	loggedOn bool
	server   string // the instance of the current logon
	backoff  int64
	up       bool
	epoch    uint64
	hb       int64
	lastSend int64
}

func (h *haConn) tracef(format string, args ...any) {
	h.s.w.Tracef("%s: "+format, append([]any{h.name}, args...)...)
}

func (h *haConn) alive(f func()) func() {
	ep := h.epoch
	return func() {
		if h.up && h.epoch == ep {
			f()
		}
	}
}

// connect dials the current server; onUp runs once connected (before the
// logon reply), onMsg for each message, onDown when it ends.
func (h *haConn) connect(onMsg func(any), onDown func()) {
	if !h.up || h.ep != nil {
		return
	}
	ep := h.epoch
	live := func() bool { return h.up && h.epoch == ep }
	uri := h.servers[h.cur%len(h.servers)]
	h.s.net.Dial(h.name, uri, 100*Millisecond, func(e *Endpoint) {
		if !live() {
			e.Close(false)
			return
		}
		h.ep = e
		h.lastSend = h.s.w.now
		e.onMsg = func(msg any) {
			if live() && h.ep == e {
				onMsg(msg)
			}
		}
		e.onClose = func(string) {
			if live() && h.ep == e {
				h.down(onMsg, onDown)
			}
		}
		e.Send(mLogon{Name: h.name})
	}, func(reason string) {
		if live() {
			h.retry(onMsg, onDown)
		}
	})
}

// down: the connection ended; fail over to the next server.
func (h *haConn) down(onMsg func(any), onDown func()) {
	if h.ep != nil {
		h.ep.Close(false)
	}
	h.ep, h.loggedOn, h.server = nil, false, ""
	onDown()
	h.retry(onMsg, onDown)
}

func (h *haConn) retry(onMsg func(any), onDown func()) {
	h.cur++
	// ExponentialDelayStrategy: 10 ms doubling to 200 ms, 20% jitter.
	if h.backoff == 0 {
		h.backoff = 10 * Millisecond
	} else {
		h.backoff = min(2*h.backoff, 200*Millisecond)
	}
	d := h.backoff - h.backoff/5 + h.s.w.Between(0, 2*h.backoff/5)
	h.s.w.After(d, h.alive(func() { h.connect(onMsg, onDown) }))
}

func (h *haConn) heartbeat(onMsg func(any), onDown func()) {
	if h.ep != nil {
		if h.s.w.now-h.ep.lastRecv > 3*h.hb {
			h.tracef("server %s timed out", h.ep.PeerNode())
			h.down(onMsg, onDown)
		} else if h.s.w.now-h.lastSend >= h.hb/2 {
			h.ep.Send(mHeartbeat{})
			h.lastSend = h.s.w.now
		}
	}
	h.s.w.After(h.hb/2, h.alive(func() { h.heartbeat(onMsg, onDown) }))
}

// Publisher is an HA publisher with a publish store.
type Publisher struct {
	haConn
	id       uint64
	store    StoreKind
	ents     []storeEnt // unpersisted, in sequence order
	nextSeq  uint64
	total    int // messages the application publishes
	done     int // published so far
	interval int64
	topic    string
	life     uint64 // incarnation (content differs across lives without a file store)
	reused   bool   // a life started without its store: sequences may repeat
}

func newPublisher(s *Sim, name string, servers []string, store StoreKind, total int, interval int64, topic string) *Publisher {
	p := &Publisher{haConn: haConn{s: s, name: name, servers: servers, hb: 20 * Millisecond},
		id: record.ID(name), store: store, nextSeq: 1, total: total, interval: interval, topic: topic}
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

// Start starts (or restarts) the publisher's process.
func (p *Publisher) Start() {
	p.up = true
	p.epoch++
	p.backoff = 0
	p.tracef("start store=%v unpersisted=%d next=%d", p.store, len(p.ents), p.nextSeq)
	p.connect(p.onMsg, p.onDown)
	p.s.w.After(p.interval, p.alive(p.publishNext))
	p.s.w.After(p.hb/2, p.alive(func() { p.heartbeat(p.onMsg, p.onDown) }))
}

// Crash kills the publisher's process.
func (p *Publisher) Crash() {
	if !p.up {
		return
	}
	p.up = false
	p.epoch++
	if p.ep != nil {
		p.ep.Close(false)
		p.ep = nil
	}
	p.loggedOn = false
	if p.store == StoreMemory {
		p.ents = p.ents[:0]
		p.nextSeq = 1
		p.life++
		p.reused = true
	}
	p.tracef("crash")
}

func (p *Publisher) onDown() {}

func (p *Publisher) publishNext() {
	if p.done < p.total {
		seq := p.nextSeq
		p.nextSeq++
		e := storeEnt{seq: seq, topic: p.topic, digest: p.digest(seq)}
		p.ents = append(p.ents, e)
		p.done++
		p.s.chk.published(p, seq, e.digest)
		if p.loggedOn {
			p.ep.Send(mPublish{PubSeq: seq, Topic: e.topic, Digest: e.digest})
		}
	}
	if p.done < p.total {
		p.s.w.After(p.interval, p.alive(p.publishNext))
	}
}

func (p *Publisher) discard(through uint64) {
	n := 0
	for n < len(p.ents) && p.ents[n].seq <= through {
		n++
	}
	p.ents = append(p.ents[:0], p.ents[n:]...)
}

func (p *Publisher) onMsg(msg any) {
	switch m := msg.(type) {
	case mHeartbeat:
	case mLogonReply:
		// attach (client/ha.go): only what the server's ack point covers
		// leaves the store; the rest is re-published, in order, before
		// any new publish.
		p.discard(m.AckedPubSeq)
		last := uint64(0)
		if n := len(p.ents); n > 0 {
			last = p.ents[n-1].seq
		}
		p.nextSeq = max(p.nextSeq, last+1, m.LastPubSeq+1)
		p.loggedOn, p.server, p.backoff = true, m.Instance, 0
		p.tracef("logged on to %s last=%d acked=%d replay=%d", m.Instance, m.LastPubSeq, m.AckedPubSeq, len(p.ents))
		for _, e := range p.ents {
			p.ep.Send(mPublish{PubSeq: e.seq, Topic: e.topic, Digest: e.digest})
		}
	case mAck:
		for _, e := range p.ents {
			if e.seq > m.Through {
				break
			}
			p.s.chk.pubSawAck(p, e.seq, e.digest, p.server)
		}
		p.discard(m.Through)
	case mRefused:
		for i, e := range p.ents {
			if e.seq == m.PubSeq {
				p.s.chk.refused(p, e.seq)
				p.ents = append(p.ents[:i], p.ents[i+1:]...)
				break
			}
		}
	case mError: // storage-failed: fail over at once
		p.tracef("server %s: %s", p.server, m.Code)
		p.down(p.onMsg, p.onDown)
	}
}

// Subscriber is an HA subscriber with a bookmark store: it resumes from
// its progress after a failover and filters what it has had.
type Subscriber struct {
	haConn
	topic     string
	store     StoreKind
	origins   []progressSet
	pubs      []progressSet
	resumable bool // has kept its progress through every crash
}

type progressSet struct {
	id uint64
	rangeSet
}

func newSubscriber(s *Sim, name string, servers []string, store StoreKind, topic string) *Subscriber {
	return &Subscriber{haConn: haConn{s: s, name: name, servers: servers, hb: 20 * Millisecond},
		topic: topic, store: store, resumable: true}
}

func findSet(sets *[]progressSet, id uint64) *rangeSet {
	for i := range *sets {
		if (*sets)[i].id == id {
			return &(*sets)[i].rangeSet
		}
	}
	*sets = append(*sets, progressSet{id: id})
	return &(*sets)[len(*sets)-1].rangeSet
}

// Start starts (or restarts) the subscriber's process.
func (b *Subscriber) Start() {
	b.up = true
	b.epoch++
	b.backoff = 0
	b.tracef("start store=%v", b.store)
	b.connect(b.onMsg, func() {})
	b.s.w.After(b.hb/2, b.alive(func() { b.heartbeat(b.onMsg, func() {}) }))
}

// Crash kills the subscriber's process.
func (b *Subscriber) Crash() {
	if !b.up {
		return
	}
	b.up = false
	b.epoch++
	if b.ep != nil {
		b.ep.Close(false)
		b.ep = nil
	}
	b.loggedOn = false
	if b.store == StoreMemory {
		b.origins, b.pubs = nil, nil
		b.resumable = false
	}
	b.tracef("crash")
}

func (b *Subscriber) onMsg(msg any) {
	switch m := msg.(type) {
	case mHeartbeat:
	case mLogonReply:
		b.loggedOn, b.server, b.backoff = true, m.Instance, 0
		sub := mSubscribe{Topic: b.topic}
		for _, o := range b.origins {
			sub.Origins = append(sub.Origins, mark{ID: o.id, Seq: o.floor})
		}
		for _, p := range b.pubs {
			sub.Pubs = append(sub.Pubs, mark{ID: p.id, Seq: p.floor})
		}
		b.tracef("subscribed on %s (%d origins, %d publishers)", m.Instance, len(sub.Origins), len(sub.Pubs))
		b.ep.Send(sub)
	case mDeliver:
		r := &m.R
		if findSet(&b.pubs, r.Pub).contains(r.PubSeq) || findSet(&b.origins, r.Origin).contains(r.OriginSeq) {
			return // had it (a resend after failover): filtered
		}
		b.s.chk.delivered(b, r, b.server)
		findSet(&b.origins, r.Origin).add(r.OriginSeq)
		findSet(&b.pubs, r.Pub).add(r.PubSeq)
	case mError:
		b.down(b.onMsg, func() {})
	}
}
