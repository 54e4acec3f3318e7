package engine

import (
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
}

type originSample struct{ originSeq, local uint64 }

const originSampleEvery = 64

func (o *originStream) add(originSeq, local uint64) {
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
// de-duplication and per-topic counts. It is rebuilt by scanning the journal
// at start-up and kept current by every append. Guarded by the journal lock.
type index struct {
	self       uint64 // this instance's id
	selfLast   uint64 // highest local seq of a record first published here
	origins    map[uint64]*originStream
	publishers map[uint64]*publisher
	topics     map[string]*topicCount
	stored     atomic.Uint64
	duplicates atomic.Uint64
}

func newIndex(self uint64) *index {
	return &index{self: self, origins: make(map[uint64]*originStream),
		publishers: make(map[uint64]*publisher), topics: make(map[string]*topicCount)}
}

// originLocked accounts for a stored record in its origin's stream.
func (x *index) originLocked(origin, originSeq, local uint64) {
	if origin == x.self {
		x.selfLast = max(x.selfLast, local)
		return
	}
	o := x.origins[origin]
	if o == nil {
		o = &originStream{id: origin}
		x.origins[origin] = o
	}
	o.add(originSeq, local)
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
	x.publisherLocked(v.Publisher()).add(v.PubSeq(), v.Seq())
	x.originLocked(v.Origin(), v.OriginSeq(), v.Seq())
	x.topicLocked(v.Topic()).n.Add(1)
	x.stored.Add(1)
}
