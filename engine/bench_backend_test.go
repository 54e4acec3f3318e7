package engine

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/wire"
)

// cpuSeconds returns this process's user + system CPU time so far.
func cpuSeconds(tb testing.TB) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// loopCPUSeconds is the CPU time the server's event-loop threads used so
// far (each loop stays locked to its thread: its thread CPU clock).
func loopCPUSeconds(s *Server) float64 {
	var total float64
	for _, lp := range s.loops {
		var ts unix.Timespec
		clock := int32((^lp.tid)<<3 | 6) // MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)
		if unix.ClockGettime(clock, &ts) == nil {
			total += float64(ts.Nano()) / 1e9
		}
	}
	return total
}

// syscalls returns this process's read and write syscall counts so far
// (/proc/self/io syscr, syscw; io_uring_enter is neither).
func syscalls() (r, w float64) {
	b, _ := os.ReadFile("/proc/self/io")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			r, _ = strconv.ParseFloat(v, 64)
		} else if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			w, _ = strconv.ParseFloat(v, 64)
		}
	}
	return r, w
}

// BenchmarkBackendCPU compares the event-loop backends (issue 5, "Speed")
// on the backend the TestMain matrix selects (testEngine: epoll, then
// io_uring, in one run of the same binary):
//
//   - publish-128B, publish-4KiB: one windowed publisher (loadPublisher:
//     window 50,000, batches of 256, persisted acks) publishes b.N messages;
//   - fanout-8: one such publisher (payloads stamped, as in BenchmarkPubSub)
//     and 8 raw-socket subscribers on the topic, each receiving all b.N.
//
// Reports msgs/s (b.N over first write to last ack; for fan-out also
// deliveries/s until the last subscriber has all), p50/p99/p99.9
// publish-to-persisted-ack latency (per batch of 256, as loadPublisher
// samples it; for fan-out also the sampled publish-to-delivery e2e
// latency), and CPU per million messages: getrusage(RUSAGE_SELF) user+sys
// over the measured window divided by millions of messages published
// (fan-out: also per million deliveries). The load generator runs in the
// same process, so the CPU figure is server + load generator.
//
//	go test -run NONE -bench BackendCPU -benchtime 1000000x -count 3 ./engine/
func BenchmarkBackendCPU(b *testing.B) {
	for _, size := range []int{128, 4096} {
		name := fmt.Sprintf("publish-%dB", size)
		if size == 4096 {
			name = "publish-4KiB"
		}
		b.Run(name, func(b *testing.B) { benchBackendPublish(b, size) })
	}
	b.Run("fanout-8", func(b *testing.B) { benchBackendFanout(b, 8) })
}

const backendSegment = 256 << 20

func reportLatencies(b *testing.B, prefix string, lat []time.Duration) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(percentile(lat, 0.50)), prefix+"p50-µs")
	b.ReportMetric(us(percentile(lat, 0.99)), prefix+"p99-µs")
	b.ReportMetric(us(percentile(lat, 0.999)), prefix+"p99.9-µs")
}

func benchBackendPublish(b *testing.B, size int) {
	dir := b.TempDir()
	s := testServer(b, dir, func(c *Config) { c.Journal.SegmentSize = backendSegment })
	defer s.Close()
	waitPreallocated(b, dir, backendSegment)
	p := newLoadPublisher(b, s.Addr().String(), "cpu-pub", 50000, size)
	defer p.c.Close()
	n := uint64(b.N)
	b.ResetTimer()
	cpu0, loop0 := cpuSeconds(b), loopCPUSeconds(s)
	start := time.Now()
	err := p.run(n)
	el := time.Since(start)
	cpu, loopCPU := cpuSeconds(b)-cpu0, loopCPUSeconds(s)-loop0
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(loopCPU/(float64(n)*1e-6), "loop-cpu-s/Mmsgs")
	b.ReportMetric(float64(n)/el.Seconds(), "msgs/s")
	p.mu.Lock()
	lat := append([]time.Duration(nil), p.lat...)
	p.mu.Unlock()
	reportLatencies(b, "ack-", lat)
	b.ReportMetric(cpu/(float64(n)*1e-6), "cpu-s/Mmsgs")
	b.ReportMetric(cpu/el.Seconds(), "cpu-cores")
	if b.N >= 100_000 {
		b.Logf("%s: %d msgs of %d B in %v, CPU %.2fs (server + load generator)", s.Stats().Engine, n, size, el, cpu)
	}
}

func benchBackendFanout(b *testing.B, nsubs int) {
	dir := b.TempDir()
	s := testServer(b, dir, func(c *Config) { c.Journal.SegmentSize = backendSegment })
	defer s.Close()
	waitPreallocated(b, dir, backendSegment)
	topic := []byte("bench")
	subs := newBenchSubscribers(b, s, nsubs, "cpu-sub-", wire.StartNow, topic)
	p := newLoadPublisher(b, s.Addr().String(), "cpu-pub", 50000, 128)
	defer p.c.Close()

	n := uint64(b.N)
	deadline := time.Now().Add(5 * time.Minute)
	b.ResetTimer()
	cpu0, loop0 := cpuSeconds(b), loopCPUSeconds(s)
	_, w0 := syscalls()
	start := time.Now()
	var wg sync.WaitGroup
	for _, sub := range subs {
		wg.Add(1)
		go func() { defer wg.Done(); sub.run(n, deadline) }()
	}
	var pubErr error
	var pubEl time.Duration
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		pubErr = runStamped(p, n, topic)
		pubEl = time.Since(start)
	}()
	<-pubDone
	wg.Wait()
	el := time.Since(start)
	cpu, loopCPU := cpuSeconds(b)-cpu0, loopCPUSeconds(s)-loop0
	_, w1 := syscalls()
	b.StopTimer()
	if pubErr != nil {
		b.Fatal(pubErr)
	}
	b.ReportMetric(loopCPU/(float64(n*uint64(nsubs))*1e-6), "loop-cpu-s/Mdeliveries")
	b.ReportMetric((w1-w0)/(float64(n*uint64(nsubs))*1e-6), "writes/Mdeliveries")
	var e2e []time.Duration
	var last time.Time
	for i, sub := range subs {
		if sub.err != nil {
			b.Fatalf("subscriber %d (%d of %d delivered): %v", i, sub.count, n, sub.err)
		}
		if sub.finished.After(last) {
			last = sub.finished
		}
		e2e = append(e2e, sub.lat...)
	}
	p.mu.Lock()
	lat := append([]time.Duration(nil), p.lat...)
	p.mu.Unlock()
	b.ReportMetric(float64(n)/pubEl.Seconds(), "msgs/s")
	b.ReportMetric(float64(n*uint64(nsubs))/last.Sub(start).Seconds(), "deliveries/s")
	reportLatencies(b, "ack-", lat)
	reportLatencies(b, "e2e-", e2e)
	b.ReportMetric(cpu/(float64(n)*1e-6), "cpu-s/Mmsgs")
	b.ReportMetric(cpu/(float64(n*uint64(nsubs))*1e-6), "cpu-s/Mdeliveries")
	b.ReportMetric(cpu/el.Seconds(), "cpu-cores")
	if b.N >= 100_000 {
		b.Logf("%s: %d msgs to %d subscribers in %v, CPU %.2fs (server + load generator)", s.Stats().Engine, n, nsubs, el, cpu)
	}
}
