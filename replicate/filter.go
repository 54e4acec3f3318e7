package replicate

import (
	"regexp"

	"github.com/tandemhq/tandem/record"
)

// filter decides which stored records a destination gets.
//
//   - A record first published to this instance (origin == self) goes to
//     every destination whose topic filter matches.
//   - A record this instance received by replication goes only to
//     passthrough destinations.
//   - Never back where it came from: not to its origin, nor to the instance
//     this copy arrived from (via). Longer cycles (a triangle of passthrough
//     links) end at the first instance that already holds the message: it
//     is de-duplicated there, stored once and so forwarded at most once.
type filter struct {
	self        uint64
	dest        uint64
	passthrough bool
	topics      *regexp.Regexp
	// cache of topic verdicts (bounded), so a regex runs once per topic
	cache map[string]bool
}

const maxFilterCache = 4096

func newFilter(self string, d Destination) *filter {
	return &filter{self: record.ID(self), dest: record.ID(d.Name), passthrough: d.Passthrough, topics: d.Topics, cache: map[string]bool{}}
}

func (f *filter) wants(v record.View) bool {
	origin := v.Origin()
	if origin == f.dest || v.Via() == f.dest {
		return false
	}
	if origin != f.self && !f.passthrough {
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
