package journal

import (
	"testing"

	"github.com/tandemhq/tandem/record"
)

// TestHoldOutlivesCursorAndClose: record bytes handed out by reference
// (what a zero-copy send does) stay mapped and unchanged while a Hold is
// kept, though the cursor moved on and the journal closed. Without the hold
// the OS mapping is gone and reading the view faults.
func TestHoldOutlivesCursorAndClose(t *testing.T) {
	opts := memOpts(t, OSFS{})
	opts.Dir = t.TempDir()
	j := mustOpen(t, opts)
	const n = 500
	for i := 0; i < n; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, n)
	cur, err := j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	var holds []Hold
	var views [][]byte
	var h Hold
	for {
		v, ok := cur.Next()
		if !ok {
			break
		}
		if !h.Same(cur) {
			h = cur.Hold()
			holds = append(holds, h)
		}
		views = append(views, v.Bytes())
	}
	if len(views) != n || len(holds) < 2 {
		t.Fatalf("read %d records over %d segments; want %d over several", len(views), len(holds), n)
	}
	cur.Close()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// Every segment is still mapped through its hold.
	for i, b := range views {
		v, _, err := record.Parse(b)
		if err != nil {
			t.Fatalf("record %d after close: %v", i+1, err)
		}
		if err := checkDet(v, uint64(i+1)); err != nil {
			t.Fatalf("record %d after close: %v", i+1, err)
		}
	}
	for _, h := range holds {
		h.Release()
	}
	var zero Hold
	zero.Release() // the zero Hold holds nothing
}
