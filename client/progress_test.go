package client

import (
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

func TestRangeSet(t *testing.T) {
	seed := testSeed(t)
	rng := newRand(seed)
	for round := 0; round < 200; round++ {
		var r rangeSet
		in := map[uint64]bool{}
		n := 1 + rng.IntN(300)
		for i := 0; i < n; i++ {
			x := 1 + uint64(rng.IntN(400))
			_, changed := r.add(x)
			if changed == in[x] {
				t.Fatalf("round %d: add(%d) changed=%v, already in: %v", round, x, changed, in[x])
			}
			in[x] = true
		}
		if !validRanges(r.Floor(), r.Ranges()) {
			t.Fatalf("round %d: invalid set floor %d ranges %v", round, r.Floor(), r.Ranges())
		}
		for x := uint64(1); x <= 410; x++ {
			if r.contains(x) != in[x] {
				t.Fatalf("round %d: contains(%d) = %v, want %v (floor %d, ranges %v)", round, x, r.contains(x), in[x], r.Floor(), r.Ranges())
			}
		}
		if !in[r.Floor()+1] && (r.Floor() == 0 || in[r.Floor()]) {
			continue
		}
		t.Fatalf("round %d: floor %d is not the top of the run from 1", round, r.Floor())
	}
}

// Discarding 1, 2 and 4 leaves the floor at 2: the server resends from 3
// and the client drops 4.
func TestProgressOutOfOrderDiscard(t *testing.T) {
	b := NewMemoryBookmarkStore()
	b.SetPosition("s", nil)
	for _, q := range []uint64{1, 2, 4} {
		b.Discard(&Message{SubName: "s", Origin: 9, OriginSeq: q, Bookmark: record.Bookmark{Publisher: 5, PubSeq: q}})
	}
	e, _ := b.MostRecent("s")
	want := []wire.ResumeEntry{{ID: 9, Seq: 2, Kind: wire.ResumeOrigin}, {ID: 5, Seq: 2, Kind: wire.ResumePublisher}}
	if !slices.Equal(e, want) {
		t.Fatalf("resume entries %+v, want %+v", e, want)
	}
	for q, want := range map[uint64]bool{1: true, 2: true, 3: false, 4: true, 5: false} {
		if got := b.IsDiscarded(&Message{SubName: "s", Origin: 9, OriginSeq: q, Bookmark: record.Bookmark{Publisher: 5, PubSeq: q}}); got != want {
			t.Errorf("IsDiscarded(%d) = %v, want %v", q, got, want)
		}
	}
}

// Past MaxProgressRanges the oldest ranges are forgotten: counted, and
// never turned into "discarded" for a message that was not.
func TestProgressBound(t *testing.T) {
	b := NewMemoryBookmarkStore()
	b.SetPosition("s", nil)
	const n = MaxProgressRanges + 500
	m := &Message{SubName: "s", Origin: 9}
	for i := uint64(1); i <= n; i++ { // every other message: one range each
		m.OriginSeq, m.Bookmark = 2*i, record.Bookmark{Publisher: 5, PubSeq: 2 * i}
		b.Discard(m)
	}
	p := b.subs["s"]
	if p.nRanges > MaxProgressRanges {
		t.Fatalf("%d ranges kept, bound %d", p.nRanges, MaxProgressRanges)
	}
	// Two sets (origin and publisher) of n ranges each.
	if want := uint64(2*n - MaxProgressRanges); b.Forgotten() != want {
		t.Fatalf("forgotten %d, want %d", b.Forgotten(), want)
	}
	kept := 0
	for i := uint64(1); i <= 2*n+1; i++ {
		m.OriginSeq, m.Bookmark.PubSeq = i, i
		d := b.IsDiscarded(m)
		if d && i%2 == 1 {
			t.Fatalf("message %d never discarded but reported discarded", i)
		}
		if d {
			kept++
		}
	}
	if kept < MaxProgressRanges/2 {
		t.Fatalf("only %d discarded messages still known", kept)
	}
	// The newest are the ones kept.
	m.OriginSeq, m.Bookmark.PubSeq = 2*n, 2*n
	if !b.IsDiscarded(m) {
		t.Fatal("newest discard forgotten")
	}
	if e, _ := b.MostRecent("s"); e[0].Seq != 0 || e[1].Seq != 0 {
		t.Fatalf("floors moved over gaps: %+v", e)
	}

	f := newSeqFilter()
	for i := uint64(1); i <= n; i++ {
		f.add(5, 2*i)
	}
	if f.nRanges != MaxProgressRanges || f.forgotten != n-MaxProgressRanges {
		t.Fatalf("delivered filter: %d ranges, %d forgotten", f.nRanges, f.forgotten)
	}
	if f.contains(5, 3) || !f.contains(5, 2*n) || f.contains(5, 2) {
		t.Fatal("delivered filter holds the wrong ranges")
	}
}

// collector gathers an HA subscription's messages (pubSeqs) and discards
// those discard says.
type collector struct {
	mu      sync.Mutex
	got     []uint64
	sub     *HASubscription
	discard func(pubSeq uint64) bool
	ch      chan struct{}
}

func newCollector(discard func(uint64) bool) *collector {
	return &collector{discard: discard, ch: make(chan struct{}, 1)}
}

func (c *collector) handle(m *Message) {
	c.mu.Lock()
	c.got = append(c.got, m.Bookmark.PubSeq)
	sub := c.sub
	c.mu.Unlock()
	if c.discard(m.Bookmark.PubSeq) {
		for sub == nil { // the handler can run before Subscribe returns
			c.mu.Lock()
			sub = c.sub
			c.mu.Unlock()
			time.Sleep(time.Millisecond) // polling a condition; bounded by the test's deadline
		}
		if err := sub.Discard(m); err != nil {
			panic(err)
		}
	}
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

func (c *collector) set(s *HASubscription) {
	c.mu.Lock()
	c.sub = s
	c.mu.Unlock()
}

func (c *collector) snapshot() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// waitFor waits until the collector holds n messages.
func (c *collector) waitFor(t *testing.T, n int, d time.Duration) []uint64 {
	t.Helper()
	deadline := time.After(d)
	for {
		if got := c.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-c.ch:
		case <-deadline:
			t.Fatalf("have %v, want %d messages", c.snapshot(), n)
		}
	}
}

func haPublishN(t *testing.T, h *HAClient, topic string, from, to uint64) {
	t.Helper()
	ctx := ctxT(t)
	for i := from; i <= to; i++ {
		if _, err := h.Publish(ctx, topic, []byte(strconv.FormatUint(i, 10))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestHAResumeAfterOutOfOrderDiscard: discard 1, 2, 4 of 1..5, resume (in a
// new client, memory store kept; and with a file store reopened): 3 and 5
// are delivered once, 1, 2, 4 not at all.
func TestHAResumeAfterOutOfOrderDiscard(t *testing.T) {
	for _, kind := range []string{"memory", "file"} {
		t.Run(kind, func(t *testing.T) {
			addr := startEngine(t)
			pcfg := haConfig("ooo-pub", addr)
			pcfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
			pub := haConnect(t, pcfg)
			path := filepath.Join(t.TempDir(), "bm")
			var bms BookmarkStore = NewMemoryBookmarkStore()
			if kind == "file" {
				fb, err := OpenFileBookmarkStore(path, SyncBatch)
				if err != nil {
					t.Fatal(err)
				}
				bms = fb
			}
			haPublishN(t, pub, "ooo.t", 1, 5)

			scfg := haConfig("ooo-sub", addr)
			scfg.BookmarkStore = bms
			sc := haConnect(t, scfg)
			c := newCollector(func(q uint64) bool { return q == 1 || q == 2 || q == 4 })
			s, err := sc.Subscribe(ctxT(t), "ooo.t", WithSubID("r"), From(Epoch), WithHandler(c.handle))
			if err != nil {
				t.Fatal(err)
			}
			c.set(s)
			if got := c.waitFor(t, 5, 5*time.Second); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
				t.Fatalf("first run got %v", got)
			}
			sc.Close() // flushes the store
			if kind == "file" {
				bms.Close()
				fb, err := OpenFileBookmarkStore(path, SyncBatch)
				if err != nil {
					t.Fatal(err)
				}
				defer fb.Close()
				bms = fb
			}

			scfg.BookmarkStore = bms
			sc2 := haConnect(t, scfg)
			c2 := newCollector(func(uint64) bool { return true })
			s2, err := sc2.Subscribe(ctxT(t), "ooo.t", WithSubID("r"), WithHandler(c2.handle))
			if err != nil {
				t.Fatal(err)
			}
			c2.set(s2)
			haPublishN(t, pub, "ooo.t", 6, 6) // a marker: everything before it has arrived
			got := c2.waitFor(t, 1, 5*time.Second)
			for got[len(got)-1] != 6 {
				got = c2.waitFor(t, len(got)+1, 5*time.Second)
			}
			if !slices.Equal(got, []uint64{3, 5, 6}) {
				t.Fatalf("resumed subscription got %v, want [3 5 6]", got)
			}
		})
	}
}

// TestHALateMessagesAfterSplitBrain is issue 11 item 1's scenario: A
// acknowledges 1..100 alone while B is down, B acknowledges 101..150 while
// A is down, the pair converges; a fresh resumable subscription from Epoch
// on B must get all 150 (B holds 101..150 before 1..100), each once, and
// resume after them.
func TestHALateMessagesAfterSplitBrain(t *testing.T) {
	// Each instance acks alone once its peer has been away for 300 ms.
	a, b := startPairDowngrade(t, nil, 300*time.Millisecond)
	pcfg := haConfig("late-pub", a.addr(), b.addr())
	pcfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	pub := haConnect(t, pcfg)
	b.kill()
	haPublishN(t, pub, "late.t", 1, 100)
	b.start()
	a.kill()
	haPublishN(t, pub, "late.t", 101, 150)
	a.start()
	waitSync(t, a, b)
	eventually(t, "both hold 150", func() bool {
		return a.server().Stats().Stored == 150 && b.server().Stats().Stored == 150
	})

	path := filepath.Join(t.TempDir(), "bm")
	fb, err := OpenFileBookmarkStore(path, SyncBatch)
	if err != nil {
		t.Fatal(err)
	}
	scfg := haConfig("late-sub", b.addr())
	scfg.BookmarkStore = fb
	sc := haConnect(t, scfg)
	c := newCollector(func(uint64) bool { return true })
	s, err := sc.Subscribe(ctxT(t), "late.t", WithSubID("fresh"), From(Epoch), WithHandler(c.handle))
	if err != nil {
		t.Fatal(err)
	}
	c.set(s)
	haPublishN(t, pub, "late.t", 151, 151) // marker
	got := c.waitFor(t, 1, 10*time.Second)
	for !slices.Contains(got, 151) {
		got = c.waitFor(t, len(got)+1, 10*time.Second)
	}
	sorted := slices.Sorted(slices.Values(got))
	want := make([]uint64, 151)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(sorted, want) {
		t.Fatalf("fresh subscription on B got %d messages (%v), want 1..151 once each", len(got), got)
	}
	sc.Close()
	fb.Close()

	// Resume in a new process: nothing again, then the next one.
	fb, err = OpenFileBookmarkStore(path, SyncBatch)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	scfg.BookmarkStore = fb
	sc2 := haConnect(t, scfg)
	c2 := newCollector(func(uint64) bool { return true })
	s2, err := sc2.Subscribe(ctxT(t), "late.t", WithSubID("fresh"), WithHandler(c2.handle))
	if err != nil {
		t.Fatal(err)
	}
	c2.set(s2)
	haPublishN(t, pub, "late.t", 152, 152)
	if got := c2.waitFor(t, 1, 10*time.Second); !slices.Equal(got, []uint64{152}) {
		t.Fatalf("resumed subscription got %v, want [152]", got)
	}
}

// In-order progress (the usual case) does not allocate: Discard in both
// stores, IsDiscarded, and the delivered filter.
func TestProgressDoesNotAllocate(t *testing.T) {
	fb, err := OpenFileBookmarkStore(filepath.Join(t.TempDir(), "b"), SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	for _, b := range []BookmarkStore{NewMemoryBookmarkStore(), fb} {
		b.SetPosition("s", nil)
		m := &Message{SubName: "s", Origin: 9, OriginSeq: 1, Bookmark: record.Bookmark{Publisher: 5, PubSeq: 1}}
		b.Discard(m)
		allocs := testing.AllocsPerRun(10000, func() {
			m.OriginSeq++
			m.Bookmark.PubSeq++
			b.Discard(m)
			if !b.IsDiscarded(m) {
				t.Fatal("not discarded")
			}
		})
		if allocs != 0 {
			t.Fatalf("%T: Discard allocates %v times per call", b, allocs)
		}
	}
	f := newSeqFilter()
	f.add(5, 1)
	q := uint64(1)
	allocs := testing.AllocsPerRun(10000, func() {
		q++
		if f.contains(5, q) {
			t.Fatal("not delivered yet")
		}
		f.add(5, q)
	})
	if allocs != 0 {
		t.Fatalf("delivered filter allocates %v times per message", allocs)
	}
}

// Past the bound, the HA subscription reports (OnError, ErrProgressBound)
// that the store forgot ranges.
func TestHAReportsProgressBound(t *testing.T) {
	errs := make(chan error, 64)
	cfg := haConfig("bound", "127.0.0.1:1")
	cfg.OnError = func(err error) {
		if errors.Is(err, ErrProgressBound) {
			errs <- err
		}
	}
	h, err := NewHA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	s, err := h.Subscribe(ctxT(t), "bound.t", WithSubID("b"), From(Epoch), WithHandler(func(*Message) {}))
	if err != nil {
		t.Fatal(err)
	}
	m := &Message{SubName: "b", Origin: 9}
	for i := uint64(1); i <= MaxProgressRanges/2+1; i++ { // 2 sets: one range each per message
		m.OriginSeq, m.Bookmark = 2*i, record.Bookmark{Publisher: 5, PubSeq: 2 * i}
		s.Discard(m)
	}
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), `subscription "b"`) {
			t.Fatalf("report %v does not name the subscription", err)
		}
	case <-ctxT(t).Done():
		t.Fatal("no ErrProgressBound report")
	}
}
