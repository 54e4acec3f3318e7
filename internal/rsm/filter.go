package rsm

import "regexp"

// Filter decides which stored records a destination gets.
//
//   - A record first published to this instance (via == 0; its origin is
//     self, record.OriginID of this instance's name and journal) goes to
//     every destination whose topic filter matches.
//   - A record this instance received by replication goes only to
//     passthrough destinations.
//   - Never back where it came from: not to its origin (the destination's
//     origin in the journal it runs on, learnt from its Hello), nor to the
//     instance this copy arrived from (via, the destination's name id).
//     Longer cycles (a triangle of passthrough links) end at the first
//     instance that already holds the message: it is de-duplicated there,
//     stored once and so forwarded at most once.
type Filter struct {
	self        uint64 // this instance's origin
	dest        uint64 // the destination's origin (0 until its journal is known)
	destVia     uint64 // the destination's via id: record.ID(name)
	passthrough bool
	topics      *regexp.Regexp
	// cache of topic verdicts (bounded), so a regex runs once per topic
	cache map[string]bool
}

const maxFilterCache = 4096

// NewFilter returns the filter of a destination whose via id is destVia
// (record.ID of its name), for an instance whose origin is self; the
// destination's origin is set (SetDest) once its journal id is known.
// topics nil: every topic.
func NewFilter(self, destVia uint64, passthrough bool, topics *regexp.Regexp) *Filter {
	return &Filter{self: self, destVia: destVia, passthrough: passthrough, topics: topics, cache: map[string]bool{}}
}

// SetDest sets the destination's origin: record.OriginID(name, journal).
func (f *Filter) SetDest(origin uint64) { f.dest = origin }

// Wants reports whether the destination gets a record of origin, stored
// here via (0: published here), on topic.
func (f *Filter) Wants(origin, via uint64, topic []byte) bool {
	if origin == f.dest || via == f.destVia {
		return false
	}
	// Published here: via 0. (origin == self alone would miss records
	// stored before this journal had an id, whose origin is ID(name).)
	if via != 0 && origin != f.self && !f.passthrough {
		return false
	}
	if f.topics == nil {
		return true
	}
	if ok, hit := f.cache[string(topic)]; hit {
		return ok
	}
	ok := f.topics.Match(topic)
	if len(f.cache) < maxFilterCache {
		f.cache[string(topic)] = ok
	}
	return ok
}
