package journal

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// appendStamped appends n records stamped by the journal clock.
func appendStamped(t *testing.T, j *Journal, n int) uint64 {
	t.Helper()
	payload := make([]byte, 200)
	var seq uint64
	for i := 0; i < n; i++ {
		var h record.Header
		var err error
		if seq, err = j.Append(&h, []byte("r"), payload); err != nil {
			t.Fatal(err)
		}
	}
	waitSynced(t, j, seq)
	return seq
}

func TestRetentionByAge(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	fs := NewMemFS()
	opts := memOpts(t, fs)
	opts.SegmentSize = 4 << 10
	opts.Now = clock.Now
	opts.RetentionAge = time.Hour
	j := mustOpen(t, opts)
	defer j.Close()

	old := appendStamped(t, j, 100) // several segments at t0
	clock.Advance(30 * time.Minute)
	appendStamped(t, j, 100)
	if n, err := j.ApplyRetention(); err != nil || n != 0 || j.FirstSeq() != 1 {
		t.Fatalf("nothing is an hour old yet: removed %d, %v, first %d", n, err, j.FirstSeq())
	}
	clock.Advance(45 * time.Minute) // the first 100 records are 75 min old
	if _, err := j.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	first := j.FirstSeq()
	if first <= 1 || first > old+1 {
		t.Fatalf("FirstSeq %d after age retention, want in (1, %d]", first, old+1)
	}
	// The segment holding `old` also holds records only 45 minutes old,
	// unless it ended exactly at old.
	if _, err := j.NewCursor(1); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("NewCursor(1) after trim: %v", err)
	}
	for _, name := range segFiles(t, fs, opts.Dir) {
		if seg, _ := parseSegmentName(name[strings.LastIndex(name, "/")+1:]); seg < first {
			t.Fatalf("segment %s still on disk", name)
		}
	}
	// Survives a reopen.
	j.Close()
	j2 := mustOpen(t, opts)
	defer j2.Close()
	if j2.FirstSeq() != first {
		t.Fatalf("reopened FirstSeq %d, want %d", j2.FirstSeq(), first)
	}
}

func TestRetentionByBytesAndHold(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	opts.SegmentSize = 4 << 10
	opts.RetentionBytes = 5 * opts.SegmentSize
	var hold atomic.Uint64
	hold.Store(1)
	opts.RetentionHold = hold.Load
	j := mustOpen(t, opts)
	defer j.Close()

	last := appendStamped(t, j, 200) // ~10 segments
	if st := j.Stats(); st.Segments < 8 {
		t.Fatalf("only %d segments", st.Segments)
	}
	if n, err := j.ApplyRetention(); err != nil || n != 0 || j.FirstSeq() != 1 {
		t.Fatalf("hold 1: removed %d, %v, FirstSeq %d", n, err, j.FirstSeq())
	}
	hold.Store(60)
	if _, err := j.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if f := j.FirstSeq(); f == 1 || f > 60 {
		t.Fatalf("hold 60: FirstSeq %d, want in (1, 60]", f)
	}
	if st := j.Stats(); st.Bytes <= opts.RetentionBytes {
		t.Fatalf("hold let retention go below the limit: %+v", st)
	}
	hold.Store(last + 1)
	if _, err := j.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if st := j.Stats(); st.Bytes > opts.RetentionBytes || st.Segments != 5 {
		t.Fatalf("after releasing the hold: %d segments, %d bytes", st.Segments, st.Bytes)
	}
	c, err := j.NewCursor(j.FirstSeq())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := 0
	for {
		if _, ok := c.Next(); !ok {
			break
		}
		n++
	}
	if uint64(n) != last-j.FirstSeq()+1 {
		t.Fatalf("read %d records after retention, want %d", n, last-j.FirstSeq()+1)
	}
}

// A cursor on a deleted segment keeps reading it; the segment is closed
// (unmapped) only when the cursor moves off it. Real files and mappings, so
// a premature unmap would fault.
func TestRetentionWaitsForCursor(t *testing.T) {
	var closes atomic.Int32
	efs := ErrorFS{FS: OSFS{}, Inject: func(op, name string) error {
		if op == "close" {
			closes.Add(1)
		}
		return nil
	}}
	var hold atomic.Uint64
	hold.Store(1) // keep everything until the cursor is on segment 1
	opts := Options{Dir: t.TempDir(), FS: efs, SegmentSize: 4 << 10, IndexInterval: 4, RetentionBytes: 1,
		RetentionHold: hold.Load, Logger: quietLogger()}
	j := mustOpen(t, opts)
	defer j.Close()
	for i := 0; i < 100; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, 100)
	c, err := j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, ok := c.Next()
	if !ok || checkDet(v, 1) != nil {
		t.Fatal("first record")
	}
	firstSeg := c.seg
	hold.Store(1 << 62)
	eventually(t, "retention to delete all sealed segments", func() bool {
		j.ApplyRetention()
		return j.Stats().Segments == 1
	})
	if j.FirstSeq() <= 1 {
		t.Fatal("FirstSeq did not move")
	}
	closesBefore := closes.Load()
	if firstSeg.refs.Load() != 1 {
		t.Fatalf("deleted segment has %d references, want the cursor's", firstSeg.refs.Load())
	}
	// The cursor reads on through its deleted segment, then hits the hole.
	seq := uint64(2)
	for ; c.seg == firstSeg; seq++ {
		v, ok := c.Next()
		if !ok {
			break
		}
		if err := checkDet(v, seq); err != nil {
			t.Fatal(err)
		}
	}
	if !errors.Is(c.Err(), ErrTrimmed) {
		t.Fatalf("cursor past a trimmed range: %v", c.Err())
	}
	if closes.Load() != closesBefore || firstSeg.refs.Load() != 1 {
		t.Fatal("segment closed while the cursor is still on it")
	}
	if err := c.Seek(j.FirstSeq()); err != nil {
		t.Fatal(err)
	}
	if closes.Load() != closesBefore+1 || firstSeg.refs.Load() != 0 {
		t.Fatalf("deleted segment not closed when the cursor left it (%d closes, %d refs)", closes.Load()-closesBefore, firstSeg.refs.Load())
	}
	if _, ok := c.Next(); !ok {
		t.Fatal("cursor does not resume at FirstSeq")
	}
}
