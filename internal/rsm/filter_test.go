package rsm

import (
	"fmt"
	"regexp"
	"testing"
)

func TestFilterCacheBounded(t *testing.T) {
	f := NewFilter(1, false, regexp.MustCompile(`7$`))
	for i := 0; i < maxFilterCache+100; i++ {
		topic := fmt.Sprintf("t%d", i)
		if got, want := f.Wants(uint64(i+1), 1, 0, []byte(topic)), i%10 == 7; got != want {
			t.Fatalf("topic %q: wants %v", topic, got)
		}
	}
	if len(f.cache) > maxFilterCache {
		t.Fatalf("filter cache grew to %d entries", len(f.cache))
	}
}

// A destination that comes back on a new journal (its data directory
// lost) gets again what it had forwarded and what it had published: its
// id changed. The sim found the forwarded case (seed 2996, strict pair).
func TestFilterDestinationOnNewJournal(t *testing.T) {
	const self, oldB, newB, c = 1, 20, 21, 30
	f := NewFilter(self, false, nil)
	f.SetDest(oldB)
	if f.Wants(5, oldB, oldB, []byte("t")) {
		t.Fatal("a record B shipped here went back to B")
	}
	if f.Wants(5, c, c, []byte("t")) {
		t.Fatal("a record C shipped here went to B (not passthrough)")
	}
	// B comes back with an empty data directory: a new journal, reseeded
	// up to seq 10.
	f.SetDest(newB)
	f.Reseed(10)
	if !f.Wants(5, oldB, oldB, []byte("t")) {
		t.Fatal("B on a new journal does not get again what it had shipped here")
	}
	if f.Wants(11, c, c, []byte("t")) {
		t.Fatal("past the reseed, a record C shipped here went to B (not passthrough)")
	}
	if f.Wants(12, newB, newB, []byte("t")) {
		t.Fatal("a record of B's new journal went back to it")
	}
}
