package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// The index state is what the engine stores in the journal's checkpoints
// (journal.Options.StateCheckpoint) so that a restart replays only the
// records after it (rebuild): the index as of a journal seq. The journal
// covers it with the checkpoint's CRC; this is its layout, all integers
// little-endian, every list sorted by id (or name) so equal indexes encode
// to equal bytes:
//
//	u32 version (indexStateVersion) | u64 instance | u64 self |
//	u64 selfFirst | u64 selfLast | u64 selfCount | u64 stored
//	u32 publishers, each:
//	    u64 id | u64 last | u64 lastLocal | u64 oooLocal
//	    u32 ranges, each: u64 lo | u64 hi
//	    u32 window length (len(recent)) | u32 filled slots, each:
//	        u64 pubSeq | u64 local | u64 digest      (slot = pubSeq % length)
//	u32 origins, each:
//	    u64 id | u64 last | u64 count | u64 first (0 unless identity) |
//	    u32 samples, each: u64 originSeq | u64 local
//	                 (first != 0: an identity stream, no samples: records this
//	                 instance published in an earlier run, local seq == originSeq)
//	u32 topics, each: u16 name length | name | u64 count
//
// The digests are messageDigest values, which is why that function is
// stable across processes: a change to it must change indexStateVersion.
// instance is record.OriginID(name, journal); self the origin of the run
// that wrote the state (record.OriginEpochID). A state of another version,
// or of another instance, is not used: rebuild then replays every record.
// A state of an earlier run of this instance is: its own stream becomes an
// identity stream of the origins. Version 2 added the epochs (instance,
// selfFirst, selfCount, identity streams).
const indexStateVersion = 2

var errIndexState = errors.New("engine: index state")

// appendState appends the encoded index to b. Called with the journal
// lock held.
func (x *index) appendState(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, indexStateVersion)
	b = le.AppendUint64(b, x.instance)
	b = le.AppendUint64(b, x.self)
	b = le.AppendUint64(b, x.selfFirst)
	b = le.AppendUint64(b, x.selfLast)
	b = le.AppendUint64(b, x.selfCount)
	b = le.AppendUint64(b, x.stored.Load())

	pids := make([]uint64, 0, len(x.publishers))
	for id := range x.publishers {
		pids = append(pids, id)
	}
	sort.Slice(pids, func(a, c int) bool { return pids[a] < pids[c] })
	b = le.AppendUint32(b, uint32(len(pids)))
	for _, id := range pids {
		p := x.publishers[id]
		b = le.AppendUint64(b, p.id)
		b = le.AppendUint64(b, p.last)
		b = le.AppendUint64(b, p.lastLocal)
		b = le.AppendUint64(b, p.oooLocal)
		b = le.AppendUint32(b, uint32(len(p.ranges)))
		for _, r := range p.ranges {
			b = le.AppendUint64(b, r.lo)
			b = le.AppendUint64(b, r.hi)
		}
		b = le.AppendUint32(b, uint32(len(p.recent)))
		filled := 0
		for _, e := range p.recent {
			if e.pubSeq != 0 {
				filled++
			}
		}
		b = le.AppendUint32(b, uint32(filled))
		for _, e := range p.recent {
			if e.pubSeq != 0 {
				b = le.AppendUint64(b, e.pubSeq)
				b = le.AppendUint64(b, e.local)
				b = le.AppendUint64(b, e.digest)
			}
		}
	}

	oids := make([]uint64, 0, len(x.origins))
	for id := range x.origins {
		oids = append(oids, id)
	}
	sort.Slice(oids, func(a, c int) bool { return oids[a] < oids[c] })
	b = le.AppendUint32(b, uint32(len(oids)))
	for _, id := range oids {
		o := x.origins[id]
		b = le.AppendUint64(b, o.id)
		b = le.AppendUint64(b, o.last)
		b = le.AppendUint64(b, o.count)
		first := uint64(0)
		if o.identity {
			first = max(o.first, 1)
		}
		b = le.AppendUint64(b, first)
		b = le.AppendUint32(b, uint32(len(o.samples)))
		for _, sm := range o.samples {
			b = le.AppendUint64(b, sm.originSeq)
			b = le.AppendUint64(b, sm.local)
		}
	}

	names := make([]string, 0, len(x.topics))
	for name := range x.topics {
		names = append(names, name)
	}
	sort.Strings(names)
	b = le.AppendUint32(b, uint32(len(names)))
	for _, name := range names {
		b = le.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = le.AppendUint64(b, x.topics[name].n.Load())
	}
	return b
}

// stateReader decodes the index state, remembering the first error.
type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", errIndexState)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *stateReader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *stateReader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (r *stateReader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// count reads a list length and checks that the rest holds at least that
// many items of min bytes each.
func (r *stateReader) count(min int) int {
	n := int(r.u32())
	if r.err == nil && n > len(r.b)/min {
		r.err = fmt.Errorf("%w: %d items do not fit in %d bytes", errIndexState, n, len(r.b))
		return 0
	}
	return n
}

// decodeIndexState decodes a state written by appendState for instance,
// into an index of this run's origin self. Errors wrap errIndexState.
func decodeIndexState(b []byte, instance, self uint64) (*index, error) {
	r := &stateReader{b: b}
	if v := r.u32(); r.err == nil && v != indexStateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errIndexState, v, indexStateVersion)
	}
	if id := r.u64(); r.err == nil && id != instance {
		return nil, fmt.Errorf("%w: of instance %016x, this is %016x", errIndexState, id, instance)
	}
	x := newIndex(self)
	x.instance = instance
	savedSelf := r.u64()
	first, last, count := r.u64(), r.u64(), r.u64()
	if savedSelf == self {
		x.selfFirst, x.selfLast, x.selfCount = first, last, count
	} else if count > 0 {
		// An earlier run's own stream: an identity stream now.
		x.origins[savedSelf] = &originStream{id: savedSelf, identity: true, first: first, last: last, count: count}
	}
	x.stored.Store(r.u64())
	for n := r.count(44); n > 0 && r.err == nil; n-- {
		p := &publisher{id: r.u64(), last: r.u64(), lastLocal: r.u64(), oooLocal: r.u64()}
		if nr := r.count(16); nr > 0 {
			p.ranges = make([]seqRange, nr)
			for i := range p.ranges {
				p.ranges[i] = seqRange{r.u64(), r.u64()}
			}
		}
		window := int(r.u32())
		if window > digestWindow {
			return nil, fmt.Errorf("%w: digest window of %d", errIndexState, window)
		}
		if window > 0 {
			p.recent = make([]recentSlot, window)
		}
		for nf := r.count(24); nf > 0 && r.err == nil; nf-- {
			e := recentSlot{r.u64(), r.u64(), r.u64()}
			if window == 0 || e.pubSeq == 0 {
				return nil, fmt.Errorf("%w: bad digest slot", errIndexState)
			}
			p.recent[e.pubSeq%uint64(window)] = e
		}
		x.publishers[p.id] = p
	}
	for n := r.count(36); n > 0 && r.err == nil; n-- {
		o := &originStream{id: r.u64(), last: r.u64(), count: r.u64()}
		if o.first = r.u64(); o.first != 0 {
			o.identity = true
		}
		if ns := r.count(16); ns > 0 {
			o.samples = make([]originSample, ns)
			for i := range o.samples {
				o.samples[i] = originSample{r.u64(), r.u64()}
			}
		}
		x.origins[o.id] = o
	}
	for n := r.count(10); n > 0 && r.err == nil; n-- {
		name := string(r.take(int(r.u16())))
		t := &topicCount{name: name}
		t.n.Store(r.u64())
		x.topics[name] = t
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", errIndexState, len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return x, nil
}
