package replicate

import (
	"regexp"

	"github.com/tandemhq/tandem/record"
)

// filter decides which stored records a destination gets.
//
//   - A record first published to this instance (via == 0; its origin is
//     self, record.OriginID of this instance's name and journal) goes to
//     every destination whose topic filter matches.
//   - A record this instance received by replication goes only to
//     passthrough destinations.
//   - Never back where it came from: not to its origin (the destination's
//     origin in the journal it runs on, learnt from its Hello), nor to the
//     instance this copy arrived from (via, the destination's name id). Longer cycles (a triangle of passthrough
//     links) end at the first instance that already holds the message: it
//     is de-duplicated there, stored once and so forwarded at most once.
type filter struct {
	self        uint64 // this instance's origin
	dest        uint64 // the destination's origin (0 until its journal is known)
	destVia     uint64 // the destination's via id: record.ID(name)
	passthrough bool
	topics      *regexp.Regexp
	// cache of topic verdicts (bounded), so a regex runs once per topic
	cache map[string]bool
}

const maxFilterCache = 4096

// newFilter returns d's filter for an instance whose origin is self; the
// destination's origin is set (setDest) once its journal id is known.
func newFilter(self uint64, d Destination) *filter {
	return &filter{self: self, destVia: record.ID(d.Name), passthrough: d.Passthrough, topics: d.Topics, cache: map[string]bool{}}
}

// setDest sets the destination's origin: record.OriginID(name, journal).
func (f *filter) setDest(origin uint64) { f.dest = origin }

func (f *filter) wants(v record.View) bool {
	origin, via := v.Origin(), v.Via()
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
	t := v.Topic()
	if ok, hit := f.cache[string(t)]; hit {
		return ok
	}
	ok := f.topics.Match(t)
	if len(f.cache) < maxFilterCache {
		f.cache[string(t)] = ok
	}
	return ok
}
