// Package sim is Tandem's deterministic simulator: several instances, HA
// publishers with publish stores and HA subscribers with bookmark stores,
// over a simulated network, on one goroutine with a logical clock and a
// seeded PRNG, under a random fault schedule. After each run a checker
// verifies the promises of docs/architecture.md (nothing acknowledged is
// lost, resumable subscribers get every acknowledged message once and in
// each publisher's order, conflicting duplicates never acked as another's
// content, no ack from a failed journal).
//
// What runs for real and what is modelled:
//
//   - Replication's decisions are the real ones: internal/rsm's Dest
//     (state, downgrade, resume, window, acknowledgments), Source
//     (continuity, resend de-duplication, pending acks, durable position),
//     AckQueue, CheckResume, NextState, SyncPoint. The sim drives them as
//     replicate does, over simulated links.
//   - The journal is a model with the crash semantics of the real one:
//     appends are volatile until a group-commit sync completes; a crash
//     keeps the synced prefix and any prefix of the unsynced tail (a torn
//     or partly written tail is truncated by recovery to a prefix); a
//     failed sync or a full disk fails the journal, and the instance stops
//     (fail-stop). It leaves out segments, retention, checkpoints and
//     byte-level corruption (recover.go's own tests cover those).
//   - The engine (publish, de-duplication by publisher sequence with
//     digests, persisted acks at min(synced, sync point), logon reply,
//     resume filter, delivery) is a model of engine/: conservative where
//     the engine is clever (a resumed subscription scans from the first
//     record, the logon's acked sequence is the covered prefix).
//   - Clients: the HA publisher's and subscriber's decisions (what leaves
//     the store at logon, what is re-published, progress, duplicate
//     filter) follow client/ha.go and client/bookmarks.go.
//
// A run is reproducible from its seed: `make sim SEEDS=1 SEED=S` prints
// the trace digest, identical on every run with the same Go version.
package sim

import (
	"container/heap"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
)

// Time units (logical nanoseconds).
const (
	Microsecond int64 = 1000
	Millisecond       = 1000 * Microsecond
	Second            = 1000 * Millisecond
)

type event struct {
	at  int64
	seq uint64
	f   func()
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// World is one run: the clock, the PRNG, the event queue and the trace.
type World struct {
	Seed int64
	rng  *rand.Rand
	now  int64
	q    eventHeap
	next uint64

	trace     uint64 // FNV-1a over every trace line
	traceN    int
	tail      []string // the last traceTail lines
	tailAt    int
	traceHash interface{ Sum64() uint64 }
	hw        interface {
		Write([]byte) (int, error)
		Sum64() uint64
	}
	verbose bool
	lines   []string // every line (verbose)
}

const traceTail = 80

func newWorld(seed int64) *World {
	w := &World{Seed: seed, rng: rand.New(rand.NewPCG(uint64(seed), 0x7a6e_6465_6d00_5eed))}
	w.hw = fnv.New64a()
	w.tail = make([]string, 0, traceTail)
	return w
}

// Now returns the logical time.
func (w *World) Now() int64 { return w.now }

// At runs f at time t (or now, if t is past).
func (w *World) At(t int64, f func()) {
	if t < w.now {
		t = w.now
	}
	w.next++
	heap.Push(&w.q, event{at: t, seq: w.next, f: f})
}

// After runs f d from now.
func (w *World) After(d int64, f func()) { w.At(w.now+d, f) }

// Intn returns a uniform int in [0, n).
func (w *World) Intn(n int) int { return w.rng.IntN(n) }

// Between returns a uniform int64 in [lo, hi].
func (w *World) Between(lo, hi int64) int64 { return lo + w.rng.Int64N(hi-lo+1) }

// Chance returns true with probability num/den.
func (w *World) Chance(num, den int) bool { return w.rng.IntN(den) < num }

// Tracef adds a line to the trace (digested; the tail kept for reports).
func (w *World) Tracef(format string, args ...any) {
	line := fmt.Sprintf("%d.%06d ", w.now/Second, (w.now%Second)/Microsecond) + fmt.Sprintf(format, args...)
	w.hw.Write([]byte(line))
	w.hw.Write([]byte{'\n'})
	w.traceN++
	if len(w.tail) < traceTail {
		w.tail = append(w.tail, line)
	} else {
		w.tail[w.tailAt] = line
		w.tailAt = (w.tailAt + 1) % traceTail
	}
	if w.verbose {
		w.lines = append(w.lines, line)
	}
}

// TraceTail returns the last lines of the trace, oldest first.
func (w *World) TraceTail() string {
	var b strings.Builder
	for i := 0; i < len(w.tail); i++ {
		b.WriteString(w.tail[(w.tailAt+i)%len(w.tail)])
		b.WriteByte('\n')
	}
	return b.String()
}

// Digest returns the digest of the whole trace so far.
func (w *World) Digest() uint64 { return w.hw.Sum64() }

// runUntil runs events up to time t.
func (w *World) runUntil(t int64) {
	for len(w.q) > 0 && w.q[0].at <= t {
		e := heap.Pop(&w.q).(event)
		w.now = e.at
		e.f()
	}
	if w.now < t {
		w.now = t
	}
}
