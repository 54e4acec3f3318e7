package replicate_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/uring"
)

// Replication benchmarks (issue 3, "Speed"). Every instance runs in this
// process on loopback, one event loop each (two instances share the
// machine's cores), with its journal in b.TempDir() and 256 MiB segments
// (a whole 1M-message run of 128-byte messages fits in one, so no rotation
// falls in the measured window). The backend is the engine's default
// ("auto"), or TANDEM_ENGINE. The publisher is the client package's, so the
// figures include its cost, in the same process.
//
// Replication links run with each link I/O (replicate.Config.IO), a
// sub-benchmark each: io=net (the net.Conn, batches copied out of the
// journal) and io=ring (io_uring, batches gathered from the journal
// mapping, zero copy from DefaultZeroCopyMin up); io=ring is skipped where
// io_uring is not available. BenchmarkCatchUp also varies the record size.
//
//	go test -run NONE -bench PairPublish -benchtime 1000000x -count 3 ./replicate/
//	go test -run NONE -bench CatchUp -benchtime 1x -count 3 ./replicate/
//
// With a 50,000-message window the publisher saturates the instance, and
// the ack latency it sees is mostly queueing in the window (Little's law:
// about window / throughput), not the cost of a sync. TANDEM_BENCH_WINDOW
// sets another window for BenchmarkPairPublish (e.g. 1000) to look at
// latency nearer the fdatasync + round-trip floor.

const (
	benchSegment = 256 << 20
	benchPayload = 128
	benchWindow  = 50_000
	catchUpMsgs  = 1_000_000
	// catchUpBytes bounds the payload a catch-up moves: 1M messages of 128
	// bytes, fewer of larger ones.
	catchUpBytes = catchUpMsgs * benchPayload
)

// benchIOs are the link I/O modes the replication benchmarks compare.
var benchIOs = []string{replicate.IONet, replicate.IORing}

// skipIO skips a sub-benchmark of a link I/O this machine cannot run.
func skipIO(b *testing.B, io string) {
	b.Helper()
	if io == replicate.IORing {
		if err := uring.Available(); err != nil {
			b.Skipf("io=ring: io_uring not available: %v", err)
		}
	}
}

// startBenchNode starts an in-process instance for a benchmark, closed at
// cleanup. replListen "" means no replication at all (a plain single
// instance); otherwise peers are its destinations (replicate.ParseDestination)
// and io its link I/O.
func startBenchNode(b *testing.B, name, dir, replListen, io string, peers ...string) *node {
	b.Helper()
	var rc *replicate.Config
	if replListen != "" {
		rc = &replicate.Config{Listen: replListen, Secret: []byte("s3cret"), Heartbeat: 100 * time.Millisecond,
			DowngradeAfter: 2 * time.Second, UpgradeBelow: 200 * time.Millisecond, IO: io}
		for _, p := range peers {
			d, err := replicate.ParseDestination(p)
			if err != nil {
				b.Fatal(err)
			}
			rc.Destinations = append(rc.Destinations, d)
		}
	}
	logs := &logBuf{}
	s, err := engine.New(engine.Config{Name: name, Listen: "127.0.0.1:0", DataDir: dir, Loops: 1,
		Engine:  os.Getenv("TANDEM_ENGINE"),
		Journal: journal.Options{SegmentSize: benchSegment}, Replication: rc,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("i", name)})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	n := &node{name: name, dir: dir, srv: s, logs: logs}
	if rc != nil {
		if a := s.Replicator().Addr(); a != nil {
			n.repl = a.String()
		}
	}
	b.Cleanup(func() { n.srv.Close() })
	return n
}

// benchWaitPrealloc waits (at most 20 s) until the journal in dir has a
// fully zeroed next segment (journal/segment.go: next-N.seg.tmp), so the
// measurement does not start while that background write competes with
// the flusher's fdatasyncs. Same as engine's waitPreallocated.
func benchWaitPrealloc(b *testing.B, dir string) {
	b.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		tmps, _ := filepath.Glob(filepath.Join(dir, "next-*.seg.tmp"))
		for _, t := range tmps {
			if fi, err := os.Stat(t); err == nil && fi.Size() >= benchSegment {
				time.Sleep(100 * time.Millisecond) // its final fdatasync
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Logf("no fully preallocated segment seen in %s; measuring anyway", dir)
}

// pubResult is one windowed publishing run.
type pubResult struct {
	elapsed time.Duration // first Publish to the last persisted ack
	lat     []int64       // publish-to-persisted-ack latency of every message, ns, sorted
}

func (r pubResult) rate(n uint64) float64 { return float64(n) / r.elapsed.Seconds() }

// pctMicros returns the q-quantile of sorted ns latencies in µs.
func pctMicros(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]) / 1e3
}

// windowedPublish publishes n messages of size bytes on one topic to addr
// with the client package, asking for persisted acks, keeping at most
// window unacknowledged, and waits for the last ack.
//
// Latency: the publish time of every pubSeq is recorded just before
// Publish (in a preallocated slice); the ack handler, called once per
// message in pubSeq order on the client's reader goroutine, takes the
// clock once per cumulative ack and stores ack time - publish time. The
// loop below waits for window room itself (woken by the ack handler)
// before it takes the publish time, so the figure is publish to persisted
// ack, not including time spent blocked on a full window; Publish itself
// then never blocks on the window (it may on a full write buffer, which is
// part of sending).
func windowedPublish(b *testing.B, addr, name string, n uint64, size, window int) pubResult {
	b.Helper()
	ctx := context.Background()
	sent := make([]int64, n+1) // ns since base, by pubSeq
	lat := make([]int64, n+1)
	base := time.Now()
	var cp atomic.Pointer[client.Client]
	var firstErr atomic.Pointer[error]
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	var ackedTo uint64 // reader goroutine only
	var ackNow int64   // reader goroutine only
	handler := func(s uint64, err error) {
		if err != nil {
			firstErr.CompareAndSwap(nil, &err)
			return
		}
		if s > ackedTo { // first message of a new cumulative ack
			ackedTo = cp.Load().AckedSeq()
			ackNow = int64(time.Since(base))
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		if s <= n {
			lat[s] = ackNow - atomic.LoadInt64(&sent[s])
			if s == n {
				close(done)
			}
		}
	}
	c, err := client.Connect(ctx, addr, client.WithName(name), client.WithWindow(window),
		client.WithAckHandler(handler)) // persisted acks: the default
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cp.Store(c)
	payload := make([]byte, size)
	topic := "bench"
	fail := func(format string, args ...any) {
		b.Helper()
		if e := firstErr.Load(); e != nil {
			format += " (first ack error: %v)"
			args = append(args, *e)
		}
		b.Fatalf(format, args...)
	}
	start := time.Now()
	for s := uint64(1); s <= n; s++ {
		for s-c.AckedSeq() > uint64(window) {
			select {
			case <-wake:
			case <-c.Done():
				fail("publisher: connection ended at %d: %v", s, c.Err())
			}
		}
		atomic.StoreInt64(&sent[s], int64(time.Since(base)))
		got, err := c.Publish(ctx, topic, payload)
		if err != nil {
			fail("publish %d: %v", s, err)
		}
		if got != s {
			fail("Publish returned pubSeq %d, want %d", got, s)
		}
	}
	select {
	case <-done:
	case <-c.Done():
		fail("publisher: connection ended waiting for acks (%d of %d): %v", c.AckedSeq(), n, c.Err())
	case <-time.After(5 * time.Minute):
		fail("publisher: %d of %d acked after 5 minutes", c.AckedSeq(), n)
	}
	el := time.Since(start)
	if e := firstErr.Load(); e != nil {
		b.Fatalf("ack error: %v", *e)
	}
	lat = lat[1:]
	slices.Sort(lat)
	return pubResult{elapsed: el, lat: lat}
}

// BenchmarkPairPublish: one windowed publisher (client package, window
// 50,000, 128-byte payloads, persisted acks) publishes b.N messages to A:
//
//   - single: A alone, no replication configured;
//   - sync-pair: A and B a hot-hot pair (A dials B, each a sync destination
//     of the other), so every persisted ack on A waits for B's fdatasync too;
//   - async-pair: the same pair with async destinations.
//
// Reports msgs/s (b.N / first publish to last ack) and the p50/p99/p99.9
// publish-to-persisted-ack latency of every message (see windowedPublish),
// plus, for the pairs, how many times the sync destination was downgraded
// during the run (figures for a sync pair are only that if it is 0). The
// pairs run once per link I/O (io=net, io=ring).
func BenchmarkPairPublish(b *testing.B) {
	for _, mode := range []string{"single", "sync-pair", "async-pair"} {
		if mode == "single" {
			b.Run(mode, func(b *testing.B) { benchPairPublish(b, mode, "") })
			continue
		}
		b.Run(mode, func(b *testing.B) {
			for _, io := range benchIOs {
				b.Run("io="+io, func(b *testing.B) {
					skipIO(b, io)
					benchPairPublish(b, mode, io)
				})
			}
		})
	}
}

func benchPairPublish(b *testing.B, mode, io string) {
	var a, peer *node
	switch mode {
	case "single":
		a = startBenchNode(b, "A", b.TempDir(), "", "")
	default:
		m := "sync"
		if mode == "async-pair" {
			m = "async"
		}
		peer = startBenchNode(b, "B", b.TempDir(), "127.0.0.1:0", io, "A,"+m)
		a = startBenchNode(b, "A", b.TempDir(), "127.0.0.1:0", io, "B="+peer.repl+","+m)
		waitFor(b, 10*time.Second, "A->B link up", func() bool {
			d := a.dest(b, "B")
			return d.Connected && d.State == m
		})
		benchWaitPrealloc(b, peer.dir)
	}
	benchWaitPrealloc(b, a.dir)
	n := uint64(b.N)
	window := benchWindow
	if w := os.Getenv("TANDEM_BENCH_WINDOW"); w != "" {
		v, err := strconv.Atoi(w)
		if err != nil || v <= 0 {
			b.Fatalf("TANDEM_BENCH_WINDOW=%q: want a positive integer", w)
		}
		window = v
	}
	b.ResetTimer()
	r := windowedPublish(b, a.srv.Addr().String(), "bench-pub", n, benchPayload, window)
	b.StopTimer()
	b.ReportMetric(r.rate(n), "msgs/s")
	b.ReportMetric(pctMicros(r.lat, 0.50), "p50-µs")
	b.ReportMetric(pctMicros(r.lat, 0.99), "p99-µs")
	b.ReportMetric(pctMicros(r.lat, 0.999), "p99.9-µs")
	if peer != nil {
		downgrades := a.logs.count("downgraded to async")
		b.ReportMetric(float64(downgrades), "downgrades")
		if got := peer.srv.Journal().SyncedSeq(); mode == "sync-pair" && downgrades == 0 && got < n {
			b.Fatalf("sync pair: A acked %d messages but B holds %d", n, got)
		}
	}
	if b.N >= 100_000 {
		linkIO := io
		if linkIO == "" {
			linkIO = "none"
		}
		b.Logf("%s: engine %s, link I/O %s, %d messages, window %d, A journal syncs %d", mode, a.srv.Stats().Engine, linkIO, n, window, a.srv.Journal().Stats().Syncs)
	}
}

// BenchmarkCatchUp: the catch-up rate of a destination that was down while
// messages were published: 1,000,000 of 128 bytes, or as many 4 KiB or
// 64 KiB ones as make the same payload (128 MB: 31,250 and 1,953), once
// per link I/O (io=net, io=ring).
//
// A has accept-only async destination B (it replicates to B whenever B
// connects in, and never holds acks for it); B dials A. B is started once
// (the link comes up, nothing to ship), closed, then the messages are
// published to A and persisted there; then B is restarted on the same
// journal directory and dials A at once (A's own dialing back-off, up to
// 2 s after a long outage, would otherwise be part of the figure), and the
// clock runs from B's Start returning until B's journal SyncedSeq reaches
// the count, polled every 500 µs. catchup-msgs/s and catchup-MB/s (record
// bytes, headers included) are over that time; restart-ms is how long B's
// New+Start took (journal open and recovery), not included in the rate.
// With io=ring, A's catch-up batches (1 MiB) are above DefaultZeroCopyMin
// and go out zero-copy, until the notifications say the kernel copied
// anyway, as it does on loopback: from then on the link gathers them with
// SENDMSG (still no copy in user space). BenchmarkRingBatchSend
// (ringio_test.go) compares the three ways of sending by batch size.
//
// b.N is ignored: every run moves the same messages. Run it with
// -benchtime 1x and use -count for repetitions.
func BenchmarkCatchUp(b *testing.B) {
	for _, io := range benchIOs {
		for _, size := range []int{benchPayload, 4 << 10, 64 << 10} {
			b.Run(fmt.Sprintf("io=%s/size=%d", io, size), func(b *testing.B) {
				skipIO(b, io)
				benchCatchUp(b, io, size)
			})
		}
	}
}

func benchCatchUp(b *testing.B, io string, size int) {
	msgs := uint64(catchUpBytes / size)
	a := startBenchNode(b, "A", b.TempDir(), "127.0.0.1:0", io, "B,async")
	bdir := b.TempDir()
	bpeer := "A=" + a.repl + ",async"
	first := startBenchNode(b, "B", bdir, "127.0.0.1:0", io, bpeer)
	waitFor(b, 10*time.Second, "A->B link up", func() bool { return a.dest(b, "B").Connected })
	first.srv.Close()
	waitFor(b, 10*time.Second, "A->B link down", func() bool { return !a.dest(b, "B").Connected })

	benchWaitPrealloc(b, a.dir)
	window := min(benchWindow, int(64<<20/size))
	pub := windowedPublish(b, a.srv.Addr().String(), "bench-pub", msgs, size, window)
	if got := a.srv.Journal().SyncedSeq(); got != msgs {
		b.Fatalf("A's journal synced through %d, want %d", got, msgs)
	}
	if d := a.dest(b, "B"); d.Connected || d.AckedThrough != 0 {
		b.Fatalf("B should be down and hold nothing: %+v", d)
	}
	benchWaitPrealloc(b, a.dir) // A's next segment: not zeroing during the catch-up

	b.ResetTimer()
	t0 := time.Now()
	bn := startBenchNode(b, "B", bdir, "127.0.0.1:0", io, bpeer)
	t1 := time.Now()
	j := bn.srv.Journal()
	deadline := t1.Add(2 * time.Minute)
	for j.SyncedSeq() < msgs {
		if time.Now().After(deadline) {
			b.Fatalf("B synced %d of %d after 2 minutes; A: %+v", j.SyncedSeq(), msgs, a.srv.Stats().Replication)
		}
		time.Sleep(500 * time.Microsecond)
	}
	t2 := time.Now()
	b.StopTimer()
	if got := bn.srv.Stats().Stored; got != msgs {
		b.Fatalf("B stored %d messages, want %d", got, msgs)
	}
	recBytes := float64(msgs) * float64(record.Size(len("bench"), size))
	b.ReportMetric(float64(msgs)/t2.Sub(t1).Seconds(), "catchup-msgs/s")
	b.ReportMetric(recBytes/1e6/t2.Sub(t1).Seconds(), "catchup-MB/s")
	b.ReportMetric(float64(t2.Sub(t1).Microseconds())/1e3, "catchup-ms")
	b.ReportMetric(float64(t1.Sub(t0).Microseconds())/1e3, "restart-ms")
	b.ReportMetric(pub.rate(msgs), "pub-msgs/s")
	b.Logf("engine %s, link I/O %s; B journal syncs during catch-up %d", bn.srv.Stats().Engine, io, j.Stats().Syncs)
}
