package engine

import (
	"sort"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// resumeFilter is a subscription resumed from per-origin and per-publisher
// progress (wire.StartResume), typically on another instance of a sync
// pair after failover. It passes a record only if the subscriber has not
// seen it: its originSeq is beyond the progress in its origin's stream,
// and its publisher sequence beyond the progress for its publisher (which
// catches a message a publisher re-sent to this instance after failover,
// stored here under another origin).
//
// Why this neither loses nor repeats along sync links: every journal holds
// each origin's stream in order, so what the subscriber saw of an origin is
// a prefix of that stream, and everything after the prefix is unseen.
// Origins the subscriber never heard of are unseen from their start.
type resumeFilter struct {
	origins    []wire.PositionEntry // few: one per instance
	publishers map[uint64]uint64
}

func newResumeFilter(m *wire.Subscribe) *resumeFilter {
	f := &resumeFilter{publishers: map[uint64]uint64{}}
	for i := 0; i < m.BookmarkCount(); i++ {
		e := m.ResumeEntry(i)
		switch e.Kind {
		case wire.ResumeOrigin:
			f.origins = append(f.origins, wire.PositionEntry{Origin: e.ID, OriginSeq: e.Seq})
		case wire.ResumePublisher:
			f.publishers[e.ID] = max(f.publishers[e.ID], e.Seq)
		}
	}
	return f
}

func (f *resumeFilter) seen(origin uint64) uint64 {
	for _, o := range f.origins {
		if o.Origin == origin {
			return o.OriginSeq
		}
	}
	return 0
}

func (f *resumeFilter) wants(v record.View) bool {
	if v.OriginSeq() <= f.seen(v.Origin()) {
		return false
	}
	if p, ok := f.publishers[v.Publisher()]; ok && v.PubSeq() <= p {
		return false
	}
	return true
}

// resumeStart maps progress to a local seq at or before the first record
// the subscriber has not seen: the earliest, over every origin stream this
// instance holds, of where that stream's unseen part begins.
func (s *Server) resumeStart(f *resumeFilter) uint64 {
	s.j.Lock()
	defer s.j.Unlock()
	start := s.j.LastSeq() + 1
	if seen := f.seen(s.idx.self); seen < s.idx.selfLast {
		start = min(start, seen+1) // here local seq == originSeq
	}
	for id, o := range s.idx.origins {
		if l := o.startFor(f.seen(id)); l != 0 {
			start = min(start, l)
		}
	}
	return max(start, s.j.FirstSeq())
}

// nowPosition returns where a StartNow subscription begins and the
// per-origin progress that point represents.
func (s *Server) nowPosition() (uint64, []wire.PositionEntry) {
	s.j.Lock()
	defer s.j.Unlock()
	pos := []wire.PositionEntry{{Origin: s.idx.self, OriginSeq: s.idx.selfLast}}
	for id, o := range s.idx.origins {
		pos = append(pos, wire.PositionEntry{Origin: id, OriginSeq: o.last})
	}
	return s.j.LastSeq() + 1, pos
}

// positionScanMax bounds the journal records positionAt reads.
const positionScanMax = 1 << 20

// positionAt returns, per origin stream, the highest originSeq this
// journal stored before local seq from: the starting progress of a
// subscription that starts at from (after a bookmark, or at a time), sent
// in its Position frame, so that a resume (here or on another instance)
// delivers neither what lies before its start nor twice what it got.
//
// Each origin's stream is stored in originSeq order, so the answer is the
// originSeq of that origin's last record before from: found from the
// origin's nearest sample (every 64th record of it) by reading the journal
// up to from, at most positionScanMax records back from from, without the
// journal lock. An origin with no record in that window keeps its
// sample's originSeq: lower than exact (conservative), so a resume may
// deliver a few of that origin's messages from before the start, never
// lose one. This instance's own stream needs no scan: there local seq ==
// originSeq.
func (s *Server) positionAt(from uint64) []wire.PositionEntry {
	type origin struct{ id, seq uint64 }
	s.j.Lock()
	pos := []wire.PositionEntry{{Origin: s.idx.self, OriginSeq: from - 1}}
	var scan []origin
	lowest := from
	for id, o := range s.idx.origins {
		if o.identity {
			// An earlier run's own stream: local seq == originSeq, so the
			// highest originSeq before from is exact without a scan.
			if o.first != 0 && o.first < from {
				pos = append(pos, wire.PositionEntry{Origin: id, OriginSeq: min(o.last, from-1)})
			}
			continue
		}
		i := sort.Search(len(o.samples), func(i int) bool { return o.samples[i].local >= from })
		if i == 0 {
			continue // nothing of this origin before from
		}
		sm := o.samples[i-1]
		scan = append(scan, origin{id, sm.originSeq})
		lowest = min(lowest, sm.local+1)
	}
	s.j.Unlock()
	if len(scan) == 0 {
		return pos
	}
	if from > positionScanMax {
		lowest = max(lowest, from-positionScanMax)
	}
	if c, err := s.j.NewCursor(max(lowest, s.j.FirstSeq())); err == nil {
		for {
			v, ok := c.Next()
			if !ok || v.Seq() >= from {
				break
			}
			for i := range scan {
				if scan[i].id == v.Origin() {
					scan[i].seq = max(scan[i].seq, v.OriginSeq())
					break
				}
			}
		}
		c.Close()
	}
	sort.Slice(scan, func(a, b int) bool { return scan[a].id < scan[b].id })
	for _, o := range scan {
		pos = append(pos, wire.PositionEntry{Origin: o.id, OriginSeq: o.seq})
	}
	return pos
}
