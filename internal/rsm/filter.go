package rsm

import "regexp"

// Filter decides which stored records a destination gets.
//
//   - A record first published to this instance (via == 0; its origin is
//     self, record.OriginID of this instance's name and journal) goes to
//     every destination whose topic filter matches.
//   - A record this instance received by replication goes only to
//     passthrough destinations, except while a destination is reseeded:
//     one that resumed from nothing of this journal (new, or back from a
//     lost data directory) gets every record up to the last one held
//     when it resumed, so what it had published or forwarded before it
//     lost its disk is on it again (the simulator found the hole, seed
//     2996: a strict pair acknowledged re-sent messages as held by a peer
//     that had come back wiped). Not kept across a restart of this
//     instance: the stream then resumes past what was re-sent.
//   - Never back where it came from: not to its origin, nor to the
//     instance this copy arrived from (via). Both are ids of an instance's
//     name and the journal it runs on (record.OriginID): a destination
//     that lost its data directory runs on a new journal, so what it
//     originated or forwarded before is shipped to it again (found by the
//     simulator, seed 2996: with name ids for via, a sync peer that came
//     back wiped was never re-sent the records it had forwarded, and the
//     pair acknowledged messages only one instance held). Longer cycles (a triangle of passthrough links) end at the first
//     instance that already holds the message: it is de-duplicated there,
//     stored once and so forwarded at most once.
type Filter struct {
	self uint64 // this instance's origin
	// dest: the destination's id, record.OriginID(name, its journal): 0
	// until its journal is known. It is both the origin of what it
	// published and the via of what it shipped here.
	dest uint64
	// reseed: records up to this seq go to the destination whatever their
	// via (see above); 0: none.
	reseed      uint64
	passthrough bool
	topics      *regexp.Regexp
	// cache of topic verdicts (bounded), so a regex runs once per topic
	cache map[string]bool
}

const maxFilterCache = 4096

// NewFilter returns the filter of a destination for an instance whose
// origin is self; the destination's id is set (SetDest) once its journal
// id is known. topics nil: every topic.
func NewFilter(self uint64, passthrough bool, topics *regexp.Regexp) *Filter {
	return &Filter{self: self, passthrough: passthrough, topics: topics, cache: map[string]bool{}}
}

// SetDest sets the destination's id: record.OriginID(name, journal).
func (f *Filter) SetDest(id uint64) { f.dest = id }

// Reseed makes the destination get every record up to seq through,
// whatever its via (a destination that holds nothing of this journal).
func (f *Filter) Reseed(through uint64) { f.reseed = through }

// Wants reports whether the destination gets the record at seq, of
// origin, stored here via (0: published here), on topic.
func (f *Filter) Wants(seq, origin, via uint64, topic []byte) bool {
	if origin == f.dest || (via != 0 && via == f.dest) {
		return false
	}
	// Published here: via 0. (origin == self alone would miss records
	// stored before this journal had an id, whose origin is ID(name).)
	if via != 0 && origin != f.self && !f.passthrough && seq > f.reseed {
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
