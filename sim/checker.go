package sim

import (
	"fmt"
	"time"

	"github.com/tandemhq/tandem/internal/rsm"
)

type msgKey struct{ pub, seq uint64 }

type msgInfo struct {
	key      msgKey
	pubName  string
	topic    string
	digests  []uint64 // contents published under this sequence (>1: reused)
	acked    bool
	digest   uint64   // the content acknowledged
	ackedAt  []string // instances whose acks the publisher saw
	refused  bool
	sawAckAt int64
}

type subState struct {
	got  map[msgKey]int
	last map[uint64]uint64 // per publisher: the last pubSeq delivered
}

// Checker verifies a run's promises as it goes (at each ack and delivery)
// and at its end.
type Checker struct {
	s     *Sim
	msgs  map[msgKey]*msgInfo
	order []*msgInfo // in publication order (deterministic iteration)
	subs  map[*Subscriber]*subState
	// indep: publishers some of whose messages an instance acknowledged
	// without every peer in sync (async, downgraded): per-publisher order
	// is then only promised per instance.
	indep     map[uint64]bool
	viol      []string
	conflicts int
}

func newChecker(s *Sim) *Checker {
	return &Checker{s: s, msgs: map[msgKey]*msgInfo{}, subs: map[*Subscriber]*subState{}, indep: map[uint64]bool{}}
}

func (c *Checker) violate(format string, args ...any) {
	v := fmt.Sprintf("t=%d.%06d ", c.s.w.now/Second, (c.s.w.now%Second)/Microsecond) + fmt.Sprintf(format, args...)
	c.s.w.Tracef("VIOLATION %s", v)
	if len(c.viol) < 20 {
		c.viol = append(c.viol, v)
	}
}

func (c *Checker) info(p *Publisher, seq uint64) *msgInfo {
	k := msgKey{p.id, seq}
	m := c.msgs[k]
	if m == nil {
		m = &msgInfo{key: k, pubName: p.name, topic: p.topic}
		c.msgs[k] = m
		c.order = append(c.order, m)
	}
	return m
}

func (c *Checker) published(p *Publisher, seq, digest uint64) {
	m := c.info(p, seq)
	for _, d := range m.digests {
		if d == digest {
			return
		}
	}
	m.digests = append(m.digests, digest)
}

func (c *Checker) refused(p *Publisher, seq uint64) { c.info(p, seq).refused = true }

func (c *Checker) conflict() { c.conflicts++ }

func (c *Checker) failed(in *Instance) {}

func (c *Checker) wiped(in *Instance) {}

// holds reports whether in's journal holds (pub, seq) with digest durably.
func holds(in *Instance, pub, seq, digest uint64) (stored, durable bool) {
	p := in.pubs[pub]
	if p == nil {
		return false, false
	}
	st, ok := p.stored[seq]
	if !ok || st.digest != digest {
		return false, false
	}
	return true, st.local <= in.j.SyncedSeq()
}

// acked: in sends a persisted ack for (pub, seq). Nothing may be acked
// from a failed journal; every sync destination in sync must hold it on
// its disk now.
func (c *Checker) acked(in *Instance, pub, seq uint64) {
	if in.failed || in.j.failed {
		c.violate("%s acked %x/%d with its journal failed", in.name, pub, seq)
	}
	st, ok := in.pubs[pub].stored[seq]
	if !ok {
		c.violate("%s acked %x/%d it does not hold", in.name, pub, seq)
		return
	}
	for _, d := range in.dests {
		if d.cfg.Sync && d.m.State() != rsm.StateSync {
			// Acking without a sync destination is allowed only once it
			// has been away (or lagging) for the downgrade age: never in a
			// strict pair, never sooner than that after a start.
			if in.cfg.DowngradeAfter == rsm.Never {
				c.violate("%s acked %x/%d without its strict sync destination %s (%v)", in.name, pub, seq, d.cfg.Name, d.m.State())
			} else if up := c.s.w.now - in.startedAt; up < in.cfg.DowngradeAfter {
				c.violate("%s acked %x/%d without its sync destination %s (%v) %v after starting, before the downgrade age %v",
					in.name, pub, seq, d.cfg.Name, d.m.State(), time.Duration(up), time.Duration(in.cfg.DowngradeAfter))
			}
		}
		if !d.cfg.Sync || d.m.State() != rsm.StateSync {
			c.indep[pub] = true
			continue
		}
		dst := c.s.inst(d.cfg.Name)
		if !dst.up {
			// Down: what it acknowledged was on its disk then; a disk lost
			// while down (a wipe) is a second failure, not this ack's.
			continue
		}
		if other, ok := dst.pubs[pub].storedAt(seq); ok && other.digest != st.digest {
			// The publisher re-used the sequence for another message (a
			// publisher without a store): the destination holds the other
			// one and counted the conflict; the promise for re-used
			// sequences is that they are counted, never acked as the
			// other's content.
			continue
		}
		if _, durable := holds(dst, pub, seq, st.digest); !durable {
			c.violate("%s acked %x/%d while its sync destination %s, in sync, did not hold it on disk", in.name, pub, seq, dst.name)
		}
	}
}

// pubSawAck: the publisher received an ack covering seq from server.
func (c *Checker) pubSawAck(p *Publisher, seq, digest uint64, server string) {
	m := c.info(p, seq)
	m.acked, m.digest, m.sawAckAt = true, digest, c.s.w.now
	m.ackedAt = append(m.ackedAt, server)
	in := c.s.inst(server)
	if stored, _ := holds(in, p.id, seq, digest); !stored {
		c.violate("%s's ack covers %s/%d but it holds another message (or none) under that sequence", server, p.name, seq)
	}
}

func (c *Checker) delivered(b *Subscriber, r *Rec, server string) {
	if !b.resumable {
		return
	}
	st := c.subs[b]
	if st == nil {
		st = &subState{got: map[msgKey]int{}, last: map[uint64]uint64{}}
		c.subs[b] = st
	}
	k := msgKey{r.Pub, r.PubSeq}
	st.got[k]++
	if st.got[k] > 1 {
		c.violate("%s got %x/%d twice (from %s)", b.name, r.Pub, r.PubSeq, server)
	}
	m := c.msgs[k]
	reused := m != nil && len(m.digests) > 1
	if last := st.last[r.Pub]; r.PubSeq < last && !c.indep[r.Pub] && !reused {
		c.violate("%s got %x/%d after %d from %s: out of the publisher's order", b.name, r.Pub, r.PubSeq, last, server)
	}
	st.last[r.Pub] = max(st.last[r.Pub], r.PubSeq)
}

// final checks the end state, after every fault healed and the run
// settled.
func (c *Checker) final() {
	insts := c.s.insts
	for _, m := range c.order {
		if !m.acked || len(m.digests) > 1 {
			continue
		}
		// Who must hold it: every instance that does, and from each, its
		// destinations (a copy received by replication only goes on to
		// passthrough destinations), to a fixed point.
		want := make([]bool, len(insts))
		for i, in := range insts {
			if s, _ := holds(in, m.key.pub, m.key.seq, m.digest); s {
				want[i] = true
			}
		}
		any := false
		for _, w := range want {
			any = any || w
		}
		if !any {
			lost := false
			for _, name := range m.ackedAt {
				lost = lost || !c.s.inst(name).wiped
			}
			if lost {
				c.violate("%s/%d acknowledged by %v is on no instance", m.pubName, m.key.seq, m.ackedAt)
			}
			continue
		}
		for changed := true; changed; {
			changed = false
			for i, in := range insts {
				if !want[i] {
					continue
				}
				own := false
				if p := in.pubs[m.key.pub]; p != nil {
					if st, ok := p.stored[m.key.seq]; ok {
						own = in.j.At(st.local).Via == 0
					}
				}
				for _, d := range in.cfg.Dests {
					j := c.s.instIndex(d.Name)
					if !want[j] && (own || d.Passthrough) {
						want[j], changed = true, true
					}
				}
			}
		}
		for i, in := range insts {
			if !want[i] || in.wiped {
				continue
			}
			if s, _ := holds(in, m.key.pub, m.key.seq, m.digest); !s {
				c.violate("%s/%d acknowledged by %v is missing on %s", m.pubName, m.key.seq, m.ackedAt, in.name)
			}
		}
	}
	// A publisher whose store survived everything sees every message it
	// published acknowledged (or refused) once the faults healed: what it
	// drops from its store unacknowledged is lost without anyone knowing.
	for _, p := range c.s.pubs {
		if p.store != StoreFile {
			continue
		}
		for _, m := range c.order {
			if m.key.pub == p.id && !m.acked && !m.refused {
				c.violate("%s (file store) never saw %s/%d acknowledged (%d left in its store)", p.name, p.name, m.key.seq, len(p.ents))
				break
			}
		}
	}
	// What survived somewhere must reach every resumable subscriber (a
	// message lost everywhere is reported above, or was allowed: an async
	// peer's, or on instances that lost their disks).
	survived := map[msgKey]bool{}
	for _, m := range c.order {
		for _, in := range insts {
			if s, _ := holds(in, m.key.pub, m.key.seq, m.digest); s {
				survived[m.key] = true
				break
			}
		}
	}
	for _, b := range c.s.subs {
		if !b.resumable {
			continue
		}
		st := c.subs[b]
		for _, m := range c.order {
			if !m.acked || len(m.digests) > 1 || m.topic != b.topic || !survived[m.key] {
				continue
			}
			if st == nil || st.got[m.key] == 0 {
				c.violate("resumable subscriber %s never got %s/%d (acknowledged by %v)", b.name, m.pubName, m.key.seq, m.ackedAt)
				break
			}
		}
	}
}
