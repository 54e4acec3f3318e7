package engine

import (
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
