package rsm

import (
	"fmt"
	"regexp"
	"testing"
)

func TestFilterCacheBounded(t *testing.T) {
	f := NewFilter(1, 2, false, regexp.MustCompile(`7$`))
	for i := 0; i < maxFilterCache+100; i++ {
		topic := fmt.Sprintf("t%d", i)
		if got, want := f.Wants(1, 0, []byte(topic)), i%10 == 7; got != want {
			t.Fatalf("topic %q: wants %v", topic, got)
		}
	}
	if len(f.cache) > maxFilterCache {
		t.Fatalf("filter cache grew to %d entries", len(f.cache))
	}
}
