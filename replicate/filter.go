package replicate

import (
	"github.com/tandemhq/tandem/internal/rsm"
	"github.com/tandemhq/tandem/record"
)

// filter decides which stored records a destination gets: rsm.Filter
// (the rule is documented there) over record views.
type filter struct{ f *rsm.Filter }

// newFilter returns d's filter for an instance whose origin is self; the
// destination's origin is set (setDest) once its journal id is known.
func newFilter(self uint64, d Destination) *filter {
	return &filter{rsm.NewFilter(self, d.Passthrough, d.Topics)}
}

// setDest sets the destination's id: record.OriginID(name, journal).
func (f *filter) setDest(origin uint64) { f.f.SetDest(origin) }

// reseed: see rsm.Filter.Reseed.
func (f *filter) reseed(through uint64) { f.f.Reseed(through) }

func (f *filter) wants(v record.View) bool { return f.f.Wants(v.Seq(), v.Origin(), v.Via(), v.Topic()) }
