package engine

import (
	"encoding/binary"
	"math/bits"
	"sort"
	"sync/atomic"

	"github.com/tandemhq/tandem/record"
)

// publisher is the de-duplication state of one publisher id: the set of
// publisher sequences this instance has stored, as sorted disjoint closed
// intervals. Publishers number their messages 1, 2, 3..., so the set is
// almost always one interval and the common case (next in order) is O(1).
// A gap appears when a message arrives before an older one (a publisher that
// restarted without a store, or a late copy from a replication peer); the
// older one is still stored when it comes, exactly once.
//
// Guarded by the journal lock (Store methods run with it held).
type publisher struct {
	id     uint64
	ranges []seqRange
	// last is the highest publisher sequence stored (0: none).
	last uint64
	// lastLocal is the local sequence of the newest record stored for this
	// publisher: a duplicate is acknowledged as persisted once the journal
	// has synced this far (the original may not be synced yet).
	lastLocal uint64
	// recent remembers, for the publisher sequences stored most recently,
	// a digest of topic and payload and the local seq: slot pubSeq % len.
	// It tells a true duplicate (same message re-sent) from a conflicting
	// one (the sequence reused for another message), and which stored
	// sequences the ack point already covers (the logon reply).
	recent []recentSlot
	// oooLocal is the highest local seq of a record stored out of order
	// (its pubSeq below the highest stored then).
	oooLocal uint64
	// conflictLogged makes the log report conflicting replicated copies
	// once per publisher.
	conflictLogged bool
}

// recentSlot is one entry of publisher.recent; pubSeq 0 is empty.
type recentSlot struct {
	pubSeq, local, digest uint64
}

// digestWindow is how many of a publisher's most recent sequences keep a
// digest (24 bytes each: at most 24 KiB per publisher, grown on demand
// from 16 slots). A duplicate older than that cannot be checked and is
// treated as a true duplicate, as before digests existed.
const digestWindow = 1024

// messageDigest is the 64-bit digest of what makes two copies of a message
// the same message: its topic and payload (not the record CRC, which also
// covers the instance-local fields). It is stable across processes and
// machines (fixed seeds, no maphash): digests are stored in the index
// state of the journal's checkpoints (indexstate.go) and compared with
// digests computed after a restart. Changing it changes the state format
// (indexStateVersion). Not a cryptographic hash: it tells a re-sent message
// from another one under a reused sequence, against accidents, not
// adversaries (a publisher colliding on purpose only confuses its own
// de-duplication). For a 15-byte topic and 128-byte payload it took about
// 12 ns where the two one-shot maphash.Bytes calls it replaced took about
// 10 ns, measured in the same run (BenchmarkMessageDigest).
func messageDigest(topic, payload []byte) uint64 {
	return (hashBytes(topic, digestSeedTopic)*0x9E3779B97F4A7C15 ^ hashBytes(payload, digestSeedPayload)) | 1 // never 0
}

// Constants of hashBytes (wyhash's) and messageDigest's seeds.
const (
	hk0               = 0xa0761d6478bd642f
	hk1               = 0xe7037ed1a0b428db
	hk2               = 0x8ebc6af09c88c6e3
	hk3               = 0x589965cc75374cc3
	digestSeedTopic   = 0x2d358dccaa6c78a5
	digestSeedPayload = 0x8bb84b93962eacc9
)

func hashMix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// hashBytes is a 64-bit hash of b in the style of wyhash: 16 bytes per
// 64x64->128-bit multiply, the length folded in.
func hashBytes(b []byte, seed uint64) uint64 {
	n := uint64(len(b))
	h := seed ^ hashMix(seed^hk0, hk1)
	for len(b) > 16 {
		h = hashMix(binary.LittleEndian.Uint64(b)^hk1, binary.LittleEndian.Uint64(b[8:])^h)
		b = b[16:]
	}
	var a, c uint64
	switch {
	case len(b) >= 8:
		a, c = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[len(b)-8:])
	case len(b) >= 4:
		a, c = uint64(binary.LittleEndian.Uint32(b)), uint64(binary.LittleEndian.Uint32(b[len(b)-4:]))
	case len(b) > 0:
		a = uint64(b[0])<<16 | uint64(b[len(b)>>1])<<8 | uint64(b[len(b)-1])
	}
	return hashMix(hk1^n, hashMix(a^hk1, c^h^hk2)^hk3)
}

// remember records the digest and local seq of pubSeq.
func (p *publisher) remember(pubSeq, local, digest uint64) {
	if n := len(p.recent); n < digestWindow && pubSeq >= uint64(n) {
		// Grow (doubling) while the publisher's sequences outrun the window.
		nn := max(16, n)
		for nn < digestWindow && uint64(nn) <= pubSeq {
			nn *= 2
		}
		nn = min(nn, digestWindow)
		if nn != n {
			old := p.recent
			p.recent = make([]recentSlot, nn)
			for _, e := range old {
				if e.pubSeq != 0 {
					p.recent[e.pubSeq%uint64(nn)] = e
				}
			}
		}
	}
	slot := &p.recent[pubSeq%uint64(len(p.recent))]
	if slot.pubSeq > pubSeq {
		return // a late copy: the slot keeps the higher sequence
	}
	*slot = recentSlot{pubSeq, local, digest}
}

// digestOf returns the digest stored for pubSeq, if it is still in the
// window.
func (p *publisher) digestOf(pubSeq uint64) (uint64, bool) {
	if len(p.recent) == 0 {
		return 0, false
	}
	e := p.recent[pubSeq%uint64(len(p.recent))]
	return e.digest, e.pubSeq == pubSeq
}

// conflicts reports whether a copy of pubSeq with this digest is a
// different message than the one stored (pubSeq must be stored).
func (p *publisher) conflicts(pubSeq, digest uint64) bool {
	d, ok := p.digestOf(pubSeq)
	return ok && d != digest
}

// ackedThrough returns the top of the publisher's first run of stored
// sequences that the ack point covers: every stored sequence at or below
// it is durable here and on every sync destination in sync. What an HA
// client may drop from its publish store at logon. Conservative: lower is
// always safe (the client re-sends, the server answers duplicates).
//
// Why it is right: a record stored in order (pubSeq above every stored
// one) gets a higher local seq than every record of lower pubSeq stored
// before it, so if in-order record q is covered, so is every in-order
// record below q; records stored out of order (gap fills) are all covered
// when the highest local seq among them (oooLocal) is.
func (p *publisher) ackedThrough(ackPoint uint64) uint64 {
	if len(p.ranges) == 0 {
		return 0
	}
	top := p.ranges[0].hi
	if p.lastLocal <= ackPoint {
		return top // everything stored is covered
	}
	if p.oooLocal > ackPoint {
		return 0
	}
	covered := uint64(0)
	for _, e := range p.recent {
		if e.pubSeq != 0 && e.local <= ackPoint {
			covered = max(covered, e.pubSeq)
		}
	}
	return min(top, covered)
}

type seqRange struct{ lo, hi uint64 }

// has reports whether pubSeq was stored.
func (p *publisher) has(pubSeq uint64) bool {
	r := p.ranges
	if n := len(r); n > 0 && pubSeq > r[n-1].hi {
		return false
	}
	i := sort.Search(len(r), func(i int) bool { return r[i].hi >= pubSeq })
	return i < len(r) && r[i].lo <= pubSeq
}

// add records pubSeq as stored at local sequence local. pubSeq must not be
// present already.
func (p *publisher) add(pubSeq, local uint64) {
	if pubSeq < p.last && local > p.oooLocal {
		p.oooLocal = local
	}
	if local > p.lastLocal {
		p.lastLocal = local
	}
	if pubSeq > p.last {
		p.last = pubSeq
	}
	r := p.ranges
	n := len(r)
	if n > 0 && r[n-1].hi+1 == pubSeq { // the common case: next in order
		r[n-1].hi = pubSeq
		return
	}
	if n == 0 || pubSeq > r[n-1].hi+1 {
		p.ranges = append(r, seqRange{pubSeq, pubSeq})
		return
	}
	i := sort.Search(n, func(i int) bool { return r[i].hi >= pubSeq })
	// r[i] is the first range ending at or after pubSeq; pubSeq < r[i].lo.
	joinPrev := i > 0 && r[i-1].hi+1 == pubSeq
	joinNext := r[i].lo == pubSeq+1
	switch {
	case joinPrev && joinNext:
		r[i-1].hi = r[i].hi
		p.ranges = append(r[:i], r[i+1:]...)
	case joinPrev:
		r[i-1].hi = pubSeq
	case joinNext:
		r[i].lo = pubSeq
	default:
		p.ranges = append(r, seqRange{})
		copy(p.ranges[i+1:], p.ranges[i:])
		p.ranges[i] = seqRange{pubSeq, pubSeq}
	}
}

// topicCount counts the messages stored on one topic.
type topicCount struct {
	name string
	n    atomic.Uint64
}

// originStream tracks one origin instance's stream as this journal holds it
// (in originSeq order: replication ships each origin's stream in order).
// For origins other than this instance it keeps one sample (originSeq,
// local seq) every originSampleEvery records, so a resuming subscriber's
// per-origin progress maps to a local position in O(log n). This
// instance's own stream needs no samples: there, local seq == originSeq.
type originStream struct {
	id      uint64
	last    uint64 // highest originSeq stored
	count   uint64
	samples []originSample
	// identity: a stream this instance published in an earlier run (an
	// earlier epoch of its origin): there local seq == originSeq, so it
	// needs no samples; first is its first record's seq.
	identity bool
	first    uint64
}

type originSample struct{ originSeq, local uint64 }

const originSampleEvery = 64

func (o *originStream) add(originSeq, local uint64) {
	if o.identity {
		o.count++
		o.last = max(o.last, originSeq)
		if o.first == 0 {
			o.first = originSeq
		}
		return
	}
	if o.count%originSampleEvery == 0 {
		o.samples = append(o.samples, originSample{originSeq, local})
	}
	o.count++
	if originSeq > o.last {
		o.last = originSeq
	}
}

// startFor returns a local seq at or before the first record of this
// stream with originSeq > seen; 0 when the stream holds nothing unseen.
func (o *originStream) startFor(seen uint64) uint64 {
	if o.identity {
		if seen >= o.last {
			return 0
		}
		return max(seen+1, o.first)
	}
	if seen >= o.last || len(o.samples) == 0 {
		return 0
	}
	i := sort.Search(len(o.samples), func(i int) bool { return o.samples[i].originSeq > seen })
	if i == 0 {
		return o.samples[0].local
	}
	return o.samples[i-1].local
}

// index is what the engine derives from the journal: publishers for
// de-duplication and per-topic counts. At start-up it is restored from the
// state in the journal's newest checkpoint and the records after it (or
// from every record: Server.rebuild), and kept current by every append; it
// is encoded into each new checkpoint (indexstate.go). Guarded by the
// journal lock.
type index struct {
	// instance: record.OriginID(name, journal), what the saved state is
	// of; self: this run's origin (record.OriginEpochID), whose stream is
	// selfFirst..selfLast (local seq == originSeq), selfCount records.
	instance   uint64
	self       uint64
	selfFirst  uint64
	selfLast   uint64 // highest local seq of a record first published here in this run
	selfCount  uint64
	origins    map[uint64]*originStream
	publishers map[uint64]*publisher
	topics     map[string]*topicCount
	stored     atomic.Uint64
	duplicates atomic.Uint64
	// conflicts counts copies of a (publisher, pubSeq) already stored with
	// another topic or payload: client publishes refused sequence-reused and
	// replicated records not stored.
	conflicts atomic.Uint64
}

func newIndex(self uint64) *index {
	return &index{self: self, origins: make(map[uint64]*originStream),
		publishers: make(map[uint64]*publisher), topics: make(map[string]*topicCount)}
}

// originLocked accounts for a stored record in its origin's stream.
// own: the record was published here (via 0), in this run or an earlier
// one.
func (x *index) originLocked(origin, originSeq, local uint64, own bool) {
	if origin == x.self {
		x.selfOwnLocked(local)
		return
	}
	o := x.origins[origin]
	if o == nil {
		// A stream published here in an earlier run: originSeq == local.
		o = &originStream{id: origin, identity: own && originSeq == local}
		x.origins[origin] = o
	}
	o.add(originSeq, local)
}

// selfOwnLocked accounts for a record of this run's own stream.
func (x *index) selfOwnLocked(local uint64) {
	x.selfLast = max(x.selfLast, local)
	if x.selfFirst == 0 {
		x.selfFirst = local
	}
	x.selfCount++
}

// publisherLocked returns the state for id, creating it.
func (x *index) publisherLocked(id uint64) *publisher {
	p := x.publishers[id]
	if p == nil {
		p = &publisher{id: id}
		x.publishers[id] = p
	}
	return p
}

// topicLocked returns the counter for topic, creating it. Looking up an
// existing topic does not allocate.
func (x *index) topicLocked(topic []byte) *topicCount {
	t := x.topics[string(topic)]
	if t == nil {
		t = &topicCount{name: string(topic)}
		x.topics[t.name] = t
	}
	return t
}

// observeLocked accounts for a stored record (at recovery or replication).
func (x *index) observeLocked(v record.View) {
	p := x.publisherLocked(v.Publisher())
	p.add(v.PubSeq(), v.Seq())
	p.remember(v.PubSeq(), v.Seq(), messageDigest(v.Topic(), v.Payload()))
	x.originLocked(v.Origin(), v.OriginSeq(), v.Seq(), v.Via() == 0)
	x.topicLocked(v.Topic()).n.Add(1)
	x.stored.Add(1)
}
