package engine

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// Pacing of BenchmarkPersistedAckLatencyFixedRate.
const (
	fixedRateTick    = time.Millisecond       // one batch of rate*tick messages per tick
	fixedRateWarmup  = 250 * time.Millisecond // sent at the same rate, not measured
	fixedRateMeasure = 2 * time.Second        // measured window
	fixedRateDrain   = 10 * time.Second       // longest wait for the last ack
	fixedRatePayload = 128
	// fixedRateSegment (the journal default) holds a whole run at 100k/s
	// (~45 MB), so no rotation falls in the measured window.
	fixedRateSegment = 64 << 20
)

// BenchmarkPersistedAckLatencyFixedRate: one publisher offering a fixed rate
// (not as fast as possible) of 128-byte messages asking for persisted acks,
// against the real server. It reports the publish-to-persisted-ack latency
// of every message, corrected for coordinated omission, and the rate
// achieved.
//
// Schedule: tick k is due at t0 + k*1ms and carries messages
// k*perTick+1 .. (k+1)*perTick (perTick = rate/1000). The sender spins
// (time.Now + runtime.Gosched; time.Sleep rounds sub-millisecond sleeps up
// to ~1.1 ms on this machine kind) and, whenever ticks are due, sends all of
// them in one write. A message's intended send time is its tick's due time
// and its latency is (arrival of the cumulative persisted ack covering it)
// - (intended send time), so a stalled sender or server shows up as latency
// instead of as fewer, later samples. The batching itself is part of the
// offered load: a message is due with its tick, not at seq/rate.
//
// Each run is a fixed 250 ms warm-up plus a 2 s measured window whatever
// b.N is: b.N is ignored (one run per invocation; with the default
// -benchtime the framework stops at b.N=1 because a run takes > 1 s, and
// ns/op is meaningless). Use -count for repetitions.
//
// The sender sleeps with nanosleep(2) until each tick is due (precise, and
// it leaves both cores to the server; an earlier version spun, and the
// spinning load generator made the flusher wait for a CPU after every
// fdatasync: 2 ms group-commit cycles and 25 ms p99 at 10k msgs/s). send-lag-p99-µs reports how late
// (p99 over ticks) the sender actually wrote relative to the schedule, to
// tell client lateness from server latency; sync-cycle-µs is the run's
// duration over the journal's syncs in it (the mean group-commit cycle).
func BenchmarkPersistedAckLatencyFixedRate(b *testing.B) {
	for _, rate := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("rate=%dk", rate/1000), func(b *testing.B) {
			benchFixedRate(b, rate, nil)
		})
	}
}

// BenchmarkPersistedAckLatencySyncVia: the same at 10k msgs/s with the
// group commit through the flusher's io_uring ring (its goroutine locked
// to its thread) and through plain pwrite + fdatasync (an ordinary
// goroutine), to see what waking a locked flusher costs (issue 15: the
// execution tracer put 165-230 µs mean scheduling delay on that wake-up).
// Run with -cpu 2,5 for the GOMAXPROCS side of it.
func BenchmarkPersistedAckLatencySyncVia(b *testing.B) {
	for _, via := range []string{journal.SyncUring, journal.SyncSyscall} {
		b.Run("sync="+via, func(b *testing.B) {
			benchFixedRate(b, 10_000, func(c *Config) { c.Journal.SyncVia = via })
		})
	}
}

func benchFixedRate(b *testing.B, rate int, cfg func(*Config)) {
	perTick := int(int64(rate) * int64(fixedRateTick) / int64(time.Second))
	if perTick < 1 {
		b.Fatalf("rate %d below one message per tick", rate)
	}
	dir := b.TempDir()
	s := testServer(b, dir, func(c *Config) {
		c.Journal.SegmentSize = fixedRateSegment
		if cfg != nil {
			cfg(c)
		}
	})
	defer s.Close()
	waitPreallocated(b, dir, fixedRateSegment)
	c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	off, n := fixedRateLogon(b, c, buf, "fixed-rate")

	ticks := int((fixedRateWarmup + fixedRateMeasure) / fixedRateTick)
	total := uint64(ticks * perTick)
	// Messages with seq > warmSeqs are measured (their ticks are due at or
	// after t0 + warm-up).
	warmSeqs := uint64(int(fixedRateWarmup/fixedRateTick) * perTick)

	type result struct {
		lat     []time.Duration
		lastAck time.Time
		err     error
	}
	b.ResetTimer()
	syncs0 := s.Journal().Stats().Syncs
	t0 := time.Now()
	intended := func(seq uint64) time.Time {
		return t0.Add(time.Duration((seq-1)/uint64(perTick)) * fixedRateTick)
	}
	done := make(chan result, 1)
	go func() { // acks
		var r result
		r.lat = make([]time.Duration, 0, total-warmSeqs)
		acked := uint64(0)
		c.SetReadDeadline(t0.Add(fixedRateWarmup + fixedRateMeasure + fixedRateDrain))
		for acked < total {
			for acked < total {
				f, k, err := wire.Split(buf[off:n], len(buf))
				if err != nil {
					r.err = err
					done <- r
					return
				}
				if k == 0 {
					break
				}
				off += k
				if f.Type != wire.TypeAck {
					continue
				}
				var a wire.Ack
				wire.DecodeAck(f.Body, &a)
				if a.Code != 0 {
					r.err = fmt.Errorf("ack %s refused: %s %s", a.Kind, a.Code, a.Text)
					done <- r
					return
				}
				if a.Kind != wire.AckKindPersisted || a.Seq <= acked {
					continue
				}
				now := time.Now()
				for seq := acked + 1; seq <= a.Seq; seq++ {
					if seq > warmSeqs {
						r.lat = append(r.lat, now.Sub(intended(seq)))
					}
				}
				acked = a.Seq
				r.lastAck = now
			}
			if acked == total {
				break
			}
			n = copy(buf, buf[off:n])
			off = 0
			m, err := c.Read(buf[n:])
			if err != nil {
				r.err = fmt.Errorf("reading acks (%d of %d acked): %w", acked, total, err)
				done <- r
				return
			}
			n += m
		}
		done <- r
	}()

	// Sender: the schedule above, all due ticks in one write.
	topic := []byte("bench")
	payload := make([]byte, fixedRatePayload)
	frames := make([]byte, 0, 64<<10)
	lags := make([]time.Duration, 0, ticks)
	c.SetWriteDeadline(t0.Add(fixedRateWarmup + fixedRateMeasure + fixedRateDrain))
	var sendErr error
	for k := 0; k < ticks; {
		now := time.Now()
		el := now.Sub(t0)
		if wait := time.Duration(k)*fixedRateTick - el; wait > 0 {
			// nanosleep(2) blocks this thread for the exact wait (hrtimers);
			// time.Sleep would round up to ~1.1 ms here, and spinning would
			// take one of the machine's two cores from the server.
			ts := unix.NsecToTimespec(int64(wait))
			unix.Nanosleep(&ts, nil)
			continue
		}
		end := min(ticks, int(el/fixedRateTick)+1) // ticks k..end-1 are due
		frames = frames[:0]
		for seq := uint64(k*perTick) + 1; seq <= uint64(end*perTick); seq++ {
			frames = wire.AppendPublish(frames, seq, wire.AckPersisted, topic, payload)
		}
		for i := k; i < end; i++ {
			lags = append(lags, now.Sub(t0.Add(time.Duration(i)*fixedRateTick)))
		}
		if _, err := c.Write(frames); err != nil {
			sendErr = err
			break
		}
		k = end
	}
	if sendErr != nil {
		c.Close() // unblocks the ack reader
		<-done
		b.Fatal(sendErr)
	}
	r := <-done
	b.StopTimer()
	syncs := s.Journal().Stats().Syncs - syncs0
	if r.err != nil {
		b.Fatal(r.err)
	}
	measured := float64(total - warmSeqs)
	window := r.lastAck.Sub(t0.Add(fixedRateWarmup))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(measured/window.Seconds(), "msgs/s")
	b.ReportMetric(us(percentile(r.lat, 0.50)), "p50-µs")
	b.ReportMetric(us(percentile(r.lat, 0.99)), "p99-µs")
	b.ReportMetric(us(percentile(r.lat, 0.999)), "p99.9-µs")
	b.ReportMetric(us(percentile(r.lat, 1)), "max-µs")
	b.ReportMetric(us(percentile(lags, 0.99)), "send-lag-p99-µs")
	if syncs > 0 { // mean flusher cycle (write + fdatasync) over the whole run
		b.ReportMetric(us(r.lastAck.Sub(t0)/time.Duration(syncs)), "sync-cycle-µs")
	}
}

// fixedRateLogon logs c on and returns the unread bytes left in buf after
// the logon reply (buf[off:n]).
func fixedRateLogon(tb testing.TB, c net.Conn, buf []byte, name string) (off, n int) {
	tb.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte(name)})); err != nil {
		tb.Fatal(err)
	}
	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			tb.Fatalf("logon: %v", err)
		}
		n += m
		f, k, err := wire.Split(buf[:n], len(buf))
		if err != nil {
			tb.Fatal(err)
		}
		if k > 0 {
			if f.Type != wire.TypeLogonReply {
				tb.Fatalf("logon: got %s %s", f.Type, describe(f))
			}
			return k, n
		}
	}
}

// waitPreallocated waits (at most 20 s) until the journal's preallocator has
// zero-filled the next segment (journal/segment.go: next-N.seg.tmp, written
// with O_DIRECT then synced) so that a measurement does not start while
// that background write competes with the flusher's fdatasyncs.
func waitPreallocated(tb testing.TB, dir string, size int64) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		tmps, _ := filepath.Glob(filepath.Join(dir, "next-*.seg.tmp"))
		for _, t := range tmps {
			if fi, err := os.Stat(t); err == nil && fi.Size() >= size {
				time.Sleep(100 * time.Millisecond) // its final fdatasync
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Logf("no fully preallocated segment seen in %s; measuring anyway", dir)
}
