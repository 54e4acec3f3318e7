package journal

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
)

func TestRoundTripAcrossRotation(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   func(t *testing.T) (FS, string)
	}{
		{"mem", func(t *testing.T) (FS, string) { return NewMemFS(), "/j" }},
		{"os", func(t *testing.T) (FS, string) { return OSFS{}, t.TempDir() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, dir := tc.fs(t)
			opts := memOpts(t, fs)
			opts.Dir = dir
			j := mustOpen(t, opts)
			if got := j.FirstSeq(); got != 1 || j.LastSeq() != 0 {
				t.Fatalf("empty journal: FirstSeq %d LastSeq %d, want 1, 0", got, j.LastSeq())
			}
			const n = 2000
			for i := 0; i < n; i++ {
				appendDet(t, j)
			}
			waitSynced(t, j, n)
			verifyDet(t, j, 1, n, true)
			st := j.Stats()
			if st.Segments < 10 || st.Rotations == 0 || st.LastSeq != n || st.SyncedSeq != n || st.FirstSeq != 1 {
				t.Fatalf("stats %+v", st)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			// Reopen: recovery rebuilds the same journal and appends continue.
			j = mustOpen(t, opts)
			defer j.Close()
			if j.LastSeq() != n || j.SyncedSeq() != n || j.FirstSeq() != 1 {
				t.Fatalf("reopened: first %d last %d synced %d", j.FirstSeq(), j.LastSeq(), j.SyncedSeq())
			}
			for i := 0; i < 100; i++ {
				appendDet(t, j)
			}
			waitSynced(t, j, n+100)
			verifyDet(t, j, 1, n+100, true)
		})
	}
}

func TestSeekAndFindAgainstModel(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	opts := memOpts(t, NewMemFS())
	opts.IndexInterval = 1 + rng.IntN(10)
	opts.SegmentSize = int64(4<<10 + rng.IntN(16<<10))
	j := mustOpen(t, opts)
	defer j.Close()
	n := uint64(1500)
	for i := uint64(0); i < n; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, n)
	c, err := j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 2000; i++ {
		seq := 1 + rng.Uint64N(n)
		if err := c.Seek(seq); err != nil {
			t.Fatalf("Seek(%d): %v", seq, err)
		}
		if c.Pos() != seq {
			t.Fatalf("Pos %d after Seek(%d)", c.Pos(), seq)
		}
		for k := 0; k < rng.IntN(5) && seq+uint64(k) <= n; k++ {
			v, ok := c.Next()
			if !ok {
				t.Fatalf("Next after Seek(%d)+%d: none, err %v", seq, k, c.Err())
			}
			if err := checkDet(v, seq+uint64(k)); err != nil {
				t.Fatal(err)
			}
		}
		// Find: the right bookmark resolves, a wrong one does not.
		h := detHeader(seq)
		b := record.Bookmark{Publisher: h.Publisher, PubSeq: h.PubSeq, Seq: seq}
		if got, err := j.Find(b); err != nil || got != seq {
			t.Fatalf("Find(%v) = %d, %v", b, got, err)
		}
		b.PubSeq++
		if _, err := j.Find(b); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Find(wrong %v) = %v, want ErrNotFound", b, err)
		}
	}
	if _, err := j.Find(record.Bookmark{Seq: n + 1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find beyond synced: %v", err)
	}
	// Seek beyond the end: nothing until it is appended and synced.
	if err := c.Seek(n + 1); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Next(); ok {
		t.Fatal("record beyond LastSeq")
	}
	appendDet(t, j)
	waitSynced(t, j, n+1)
	v, ok := c.Next()
	if !ok {
		t.Fatal("appended record not visible")
	}
	if err := checkDet(v, n+1); err != nil {
		t.Fatal(err)
	}
	// NewCursor(0) starts at the oldest record.
	c0, err := j.NewCursor(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close()
	if v, ok := c0.Next(); !ok || v.Seq() != 1 {
		t.Fatalf("NewCursor(0).Next = %v, %v", v.Seq(), ok)
	}
}

// gate blocks a chosen operation until released.
type gate struct {
	mu      sync.Mutex
	closed  bool
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 1000), release: make(chan struct{})}
}

func (g *gate) wait() {
	if !g.armed.Load() {
		return
	}
	g.entered <- struct{}{}
	<-g.release
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed.Store(false)
	if !g.closed {
		g.closed = true
		close(g.release)
	}
}

func TestOnlySyncedRecordsAreVisible(t *testing.T) {
	g := newGate()
	efs := ErrorFS{FS: NewMemFS(), Inject: func(op, name string) error {
		if op == "sync" {
			g.wait()
		}
		return nil
	}}
	opts := memOpts(t, efs)
	var onSync atomic.Uint64
	opts.OnSync = func(s uint64) { onSync.Store(s) }
	j := mustOpen(t, opts)
	defer j.Close()
	for i := 0; i < 10; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, 10)
	eventually(t, "OnSync(10)", func() bool { return onSync.Load() == 10 })
	c, err := j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 10; i++ {
		if _, ok := c.Next(); !ok {
			t.Fatal("synced record not visible")
		}
	}

	g.armed.Store(true)
	seq := appendDet(t, j)
	<-g.entered // the flusher wrote the record and is inside SyncData
	if j.SyncedSeq() >= seq {
		t.Fatalf("SyncedSeq %d covers %d before its sync returned", j.SyncedSeq(), seq)
	}
	if v, ok := c.Next(); ok {
		t.Fatalf("unsynced record %d visible", v.Seq())
	}
	h := detHeader(seq)
	if _, err := j.Find(record.Bookmark{Publisher: h.Publisher, PubSeq: h.PubSeq, Seq: seq}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find of unsynced record: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	if err := j.WaitSynced(ctx, seq); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitSynced before the sync: %v", err)
	}
	cancel()
	g.open()
	waitSynced(t, j, seq)
	v, ok := c.Next()
	if !ok || checkDet(v, seq) != nil {
		t.Fatalf("record %d not visible after its sync", seq)
	}
}

func TestBatchStartFlag(t *testing.T) {
	fs := NewMemFS()
	j := mustOpen(t, memOpts(t, fs))
	defer j.Close()
	var batches []uint64
	for b := 0; b < 5; b++ {
		batches = append(batches, j.LastSeq()+1)
		j.Lock()
		for i := 0; i <= b; i++ {
			h := detHeader(j.LastSeq() + 1)
			if _, err := j.AppendLocked(&h, detTopic(h.Seq), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		j.Unlock()
		waitSynced(t, j, j.LastSeq())
	}
	c, _ := j.NewCursor(1)
	defer c.Close()
	next := 0
	for {
		v, ok := c.Next()
		if !ok {
			break
		}
		if err := v.Verify(); err != nil {
			t.Fatal(err)
		}
		isStart := next < len(batches) && v.Seq() == batches[next]
		if isStart {
			next++
		}
		if got := v.Flags()&record.FlagBatchStart != 0; got != isStart {
			t.Fatalf("seq %d: batch-start flag %v, want %v", v.Seq(), got, isStart)
		}
	}
}

func TestAppendRecordLocked(t *testing.T) {
	src := mustOpen(t, memOpts(t, NewMemFS()))
	defer src.Close()
	dst := mustOpen(t, memOpts(t, NewMemFS()))
	defer dst.Close()
	for i := 0; i < 50; i++ {
		appendDet(t, src)
		appendDet(t, dst) // offsets dst's seqs from src's
	}
	waitSynced(t, src, 50)
	c, _ := src.NewCursor(1)
	defer c.Close()
	var copies [][]byte
	for {
		v, ok := c.Next()
		if !ok {
			break
		}
		copies = append(copies, append([]byte(nil), v.Bytes()...))
	}
	dst.Lock()
	for i, rec := range copies {
		seq, err := dst.AppendRecordLocked(rec, 77)
		if err != nil || seq != uint64(51+i) {
			t.Fatalf("AppendRecordLocked: %d, %v", seq, err)
		}
	}
	dst.Unlock()
	if _, err := dst.AppendRecordLocked([]byte("short"), 0); err == nil {
		t.Fatal("AppendRecordLocked accepted garbage")
	}
	waitSynced(t, dst, 100)
	dc, _ := dst.NewCursor(51)
	defer dc.Close()
	for i := range copies {
		v, ok := dc.Next()
		if !ok {
			t.Fatal("missing replicated record")
		}
		src, _, _ := record.Parse(copies[i])
		if v.Seq() != uint64(51+i) || v.Verify() != nil || v.Via() != 77 || v.PubSeq() != src.PubSeq() || !bytes.Equal(v.Payload(), src.Payload()) || v.Time() != src.Time() {
			t.Fatalf("replicated record %d differs", i)
		}
	}
}

func TestTooLarge(t *testing.T) {
	opts := memOpts(t, NewMemFS())
	opts.SegmentSize = 4096
	j := mustOpen(t, opts)
	defer j.Close()
	var h record.Header
	big := make([]byte, 4096)
	if _, err := j.Append(&h, nil, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append(4 KiB) into 4 KiB segments: %v", err)
	}
	fits := make([]byte, 4096-segHeaderSize-record.HeaderSize)
	for i := 0; i < 3; i++ { // each fills a segment exactly
		if _, err := j.Append(&h, nil, fits); err != nil {
			t.Fatal(err)
		}
	}
	waitSynced(t, j, 3)
	if st := j.Stats(); st.Segments != 3 {
		t.Fatalf("%d segments, want 3", st.Segments)
	}
}

// fakeTimer lets a test decide when MaxSyncDelay expires.
type fakeTimer struct {
	c     chan time.Time
	reset chan time.Duration
}

func (f *fakeTimer) C() <-chan time.Time   { return f.c }
func (f *fakeTimer) Reset(d time.Duration) { f.reset <- d }
func (f *fakeTimer) Stop()                 {}

func TestMaxSyncDelay(t *testing.T) {
	ft := &fakeTimer{c: make(chan time.Time), reset: make(chan time.Duration, 10)}
	opts := memOpts(t, NewMemFS())
	opts.MaxSyncDelay = 5 * time.Millisecond
	opts.MaxBatchBytes = 4096
	opts.NewTimer = func() Timer { return ft }
	j := mustOpen(t, opts)
	defer func() {
		go func() { // Close may need the timer once more
			for range ft.reset {
				select {
				case ft.c <- time.Now():
				default:
				}
			}
		}()
		j.Close()
		close(ft.reset)
	}()

	seq := appendDet(t, j)
	if d := <-ft.reset; d != opts.MaxSyncDelay {
		t.Fatalf("timer set to %v", d)
	}
	// The flusher is waiting for the timer: nothing is synced.
	if j.SyncedSeq() != 0 {
		t.Fatal("synced before the delay expired")
	}
	ft.c <- time.Now()
	waitSynced(t, j, seq)

	// A full batch ends the delay without the timer.
	appendDet(t, j)
	<-ft.reset
	var last uint64
	for j.Stats().StagedBytes < opts.MaxBatchBytes {
		last = appendDet(t, j)
	}
	waitSynced(t, j, last)
}

func TestCloseFlushesAndRejects(t *testing.T) {
	fs := NewMemFS()
	opts := memOpts(t, fs)
	j := mustOpen(t, opts)
	for i := 0; i < 500; i++ {
		appendDet(t, j)
	}
	c, _ := j.NewCursor(1)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if j.SyncedSeq() != 500 {
		t.Fatalf("Close left SyncedSeq at %d", j.SyncedSeq())
	}
	if _, ok := c.Next(); ok {
		t.Fatal("cursor of a closed journal returned a record")
	}
	c.Close()
	if _, err := appendDetErr(j); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after Close: %v", err)
	}
	if err := j.WaitSynced(context.Background(), 501); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitSynced after Close: %v", err)
	}
	if err := j.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	j = mustOpen(t, opts)
	defer j.Close()
	verifyDet(t, j, 1, 500, true)
}

func TestBackpressure(t *testing.T) {
	g := newGate()
	efs := ErrorFS{FS: NewMemFS(), Inject: func(op, name string) error {
		if op == "sync" {
			g.wait()
		}
		return nil
	}}
	opts := memOpts(t, efs)
	opts.MaxStagedBytes = 4096
	j := mustOpen(t, opts)
	defer j.Close()
	g.armed.Store(true)
	appendDet(t, j)
	<-g.entered // flusher holds the first record inside SyncData
	done := make(chan uint64)
	go func() {
		var last uint64
		for i := 0; i < 200; i++ {
			last = appendDet(t, j)
		}
		done <- last
	}()
	eventually(t, "staged bytes to reach MaxStagedBytes", func() bool { return j.Stats().StagedBytes >= opts.MaxStagedBytes })
	select {
	case <-done:
		t.Fatal("appender did not block at MaxStagedBytes")
	default:
	}
	g.open()
	last := <-done
	waitSynced(t, j, last)
	verifyDet(t, j, 1, last, true)
}

func TestConcurrentAppendersAndReaders(t *testing.T) {
	opts := memOpts(t, NewMemFS())
	opts.SegmentSize = 64 << 10
	j := mustOpen(t, opts)
	defer j.Close()
	const writers, per = 4, 500
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				seq := appendDet(t, j)
				if i%50 == 0 {
					if err := j.WaitSynced(context.Background(), seq); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	readerDone := make(chan error)
	go func() {
		c, err := j.NewCursor(1)
		if err != nil {
			readerDone <- err
			return
		}
		defer c.Close()
		for seq := uint64(1); seq <= writers*per; {
			v, ok := c.Next()
			if !ok {
				if err := j.WaitSynced(context.Background(), seq); err != nil {
					readerDone <- err
					return
				}
				continue
			}
			if err := checkDet(v, seq); err != nil {
				readerDone <- err
				return
			}
			seq++
		}
		readerDone <- nil
	}()
	wg.Wait()
	if err := <-readerDone; err != nil {
		t.Fatal(err)
	}
}

func TestZeroAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	opts := Options{Dir: t.TempDir(), SegmentSize: 64 << 20, Logger: quietLogger()}
	j := mustOpen(t, opts)
	defer j.Close()
	topic := []byte("orders/eu")
	payload := make([]byte, 128)
	var h record.Header
	h.Publisher, h.PubSeq = 1, 1
	for i := 0; i < 20000; i++ { // grow both staging buffers
		if _, err := j.Append(&h, topic, payload); err != nil {
			t.Fatal(err)
		}
	}
	waitSynced(t, j, j.LastSeq())
	allocs := testing.AllocsPerRun(5000, func() {
		j.Lock()
		h.Time = 0
		if _, err := j.AppendLocked(&h, topic, payload); err != nil {
			t.Fatal(err)
		}
		j.Unlock()
	})
	if allocs != 0 {
		t.Fatalf("AppendLocked: %v allocs per call", allocs)
	}
	waitSynced(t, j, j.LastSeq())
	c, err := j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allocs = testing.AllocsPerRun(10000, func() {
		if _, ok := c.Next(); !ok {
			t.Fatal("Next: none")
		}
	})
	if allocs != 0 {
		t.Fatalf("Cursor.Next: %v allocs per call", allocs)
	}
}
