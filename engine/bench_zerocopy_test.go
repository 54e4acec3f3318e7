package engine

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// BenchmarkReplayZeroCopy measures where zero-copy delivery pays: the
// journal holds 64 MiB of records of one size; each iteration two
// subscribers replay all of it from EPOCH over loopback. copy: every record
// is copied into the connection's send buffer (ZeroCopyMin -1); zc: every
// record goes out with SENDMSG_ZC from the journal mapping (ZeroCopyMin 1;
// io_uring only, skipped on epoll), although loopback makes the kernel copy;
// zc-adaptive: the default behaviour, which goes back to copying once the
// kernel reports it copied. Reports MB/s of records delivered,
// deliveries/s and the process's CPU seconds per GB delivered (server and
// the in-process subscribers; the subscribers' share is the same in both
// modes).
//
//	go test -run NONE -bench ReplayZeroCopy -benchtime 3x -count 3 ./engine/
func BenchmarkReplayZeroCopy(b *testing.B) {
	const total = 64 << 20
	const nsubs = 2
	for _, size := range []int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10} {
		for _, mode := range []string{"copy", "zc", "zc-adaptive"} {
			b.Run(fmt.Sprintf("size=%d/%s", size, mode), func(b *testing.B) {
				if mode != "copy" && testEngine != "uring" {
					b.Skip("zero-copy delivery needs the io_uring backend")
				}
				zcMin := -1
				if mode != "copy" {
					zcMin = 1
				}
				dir := b.TempDir()
				s := testServer(b, dir, func(c *Config) {
					c.ZeroCopyMin = zcMin
					c.zcEvenIfCopied = mode == "zc"
					c.Journal = journal.Options{SegmentSize: 128 << 20}
				})
				defer s.Close()
				if mode != "copy" && s.loops[0].ur.zcMin == 0 {
					b.Skip("kernel lacks IORING_OP_SENDMSG_ZC")
				}
				n := uint64(total / size)
				p := newLoadPublisher(b, s.Addr().String(), "pub", 4096, size)
				if err := p.run(n); err != nil {
					b.Fatal(err)
				}
				p.c.Close()
				var ru0, ru1 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
				b.ResetTimer()
				start := time.Now()
				for it := 0; it < b.N; it++ {
					var wg sync.WaitGroup
					subs := newBenchSubscribers(b, s, nsubs, fmt.Sprint("sub-", it, "-"), wire.StartEpoch, []byte("bench"))
					for _, sub := range subs {
						wg.Add(1)
						go func() { defer wg.Done(); sub.run(n, time.Now().Add(5*time.Minute)) }()
					}
					wg.Wait()
					for i, sub := range subs {
						if sub.err != nil {
							b.Fatalf("subscriber %d: %v", i, sub.err)
						}
						sub.c.Close()
					}
				}
				el := time.Since(start)
				b.StopTimer()
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
				cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
				bytes := float64(b.N) * nsubs * float64(n) * float64(size)
				b.ReportMetric(bytes/el.Seconds()/1e6, "MB/s")
				b.ReportMetric(float64(b.N)*nsubs*float64(n)/el.Seconds(), "deliveries/s")
				b.ReportMetric(cpu.Seconds()/(bytes/1e9), "cpu-s/GB")
			})
		}
	}
}
