package engine

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// pubSubSample: every pubSubSample-th delivery of each subscriber is timed.
const pubSubSample = 16

// BenchmarkPubSub: one publisher (window 50,000, batches of 256, persisted
// acks, loadPublisher's ack reader) publishes b.N 128-byte messages on one
// topic; N subscribers (raw sockets, StartNow, exact topic) read the Deliver
// frames and count them. Each payload carries the publisher's
// time.Now().UnixNano() in its first 8 bytes (taken once per batch, just
// before the batch is encoded and written); a subscriber timestamps each
// read and, for every 16th delivery, records receipt - send time. Reports:
//
//   - deliveries/s: b.N * subs / (last delivery of the last subscriber - start)
//   - pub-msgs/s: b.N / (last persisted ack - start)
//   - e2e-p50-µs, e2e-p99-µs: publish send -> delivery receipt (sampled)
//
// Deliveries go out only after the record is durable (subscribers are served
// from the journal), so end-to-end latency includes the group commit. The
// subscribers decode only the sampled frames fully (wire.DecodeDeliver);
// the others are split and counted.
func BenchmarkPubSub(b *testing.B) {
	for _, subs := range []int{1, 8} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			benchPubSub(b, subs)
		})
	}
}

func benchPubSub(b *testing.B, nsubs int) {
	const segment = 256 << 20
	dir := b.TempDir()
	s := testServer(b, dir, func(c *Config) { c.Journal.SegmentSize = segment })
	defer s.Close()
	waitPreallocated(b, dir, segment)
	topic := []byte("bench")

	subs := newBenchSubscribers(b, s, nsubs, "sub-", wire.StartNow, topic)
	p := newLoadPublisher(b, s.Addr().String(), "pub", 50000, 128)
	defer p.c.Close()

	n := uint64(b.N)
	deadline := time.Now().Add(5 * time.Minute)
	b.ResetTimer()
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
	b.StopTimer()
	if pubErr != nil {
		b.Fatal(pubErr)
	}
	var last time.Time
	var lat []time.Duration
	for i, sub := range subs {
		if sub.err != nil {
			b.Fatalf("subscriber %d (%d of %d delivered): %v", i, sub.count, n, sub.err)
		}
		if sub.finished.After(last) {
			last = sub.finished
		}
		lat = append(lat, sub.lat...)
	}
	el := last.Sub(start)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(float64(n*uint64(nsubs))/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(n)/pubEl.Seconds(), "pub-msgs/s")
	b.ReportMetric(us(percentile(lat, 0.50)), "e2e-p50-µs")
	b.ReportMetric(us(percentile(lat, 0.99)), "e2e-p99-µs")
}

// runStamped is loadPublisher.run with a send timestamp in each payload.
func runStamped(p *loadPublisher, n uint64, topic []byte) error {
	payload := make([]byte, len(p.payload))
	frames := make([]byte, 0, p.batch*(len(payload)+64))
	for seq := uint64(1); seq <= n; {
		p.mu.Lock()
		for seq-1-p.acked.Load() >= p.window && p.err == nil {
			p.cond.Wait()
		}
		err := p.err
		p.mu.Unlock()
		if err != nil {
			return err
		}
		now := time.Now()
		binary.LittleEndian.PutUint64(payload, uint64(now.UnixNano()))
		frames = frames[:0]
		end := min(seq+uint64(p.batch)-1, n)
		for s := seq; s <= end; s++ {
			frames = wire.AppendPublish(frames, s, wire.AckPersisted, topic, payload)
		}
		p.mu.Lock()
		p.sent = append(p.sent, sentBatch{last: end, at: now})
		p.mu.Unlock()
		if _, err := p.c.Write(frames); err != nil {
			return err
		}
		seq = end + 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.acked.Load() < n && p.err == nil {
		p.cond.Wait()
	}
	return p.err
}

// newBenchSubscribers connects n subscribers named prefix0, prefix1, ...
// to topic, starting at start.
func newBenchSubscribers(b *testing.B, s *Server, n int, prefix string, start wire.StartKind, topic []byte) []*benchSubscriber {
	subs := make([]*benchSubscriber, n)
	for i := range subs {
		r := dialRaw(b, s)
		r.logon(fmt.Sprint(prefix, i), 0)
		r.subscribe(wire.AppendSubscribe(nil, 1, start, wire.MatchExact, topic))
		subs[i] = &benchSubscriber{c: r.c, buf: r.buf, off: r.off, n: r.n}
	}
	return subs
}

// benchSubscriber counts Deliver frames on one raw connection.
type benchSubscriber struct {
	c        net.Conn
	buf      []byte
	off, n   int // unread bytes: buf[off:n]
	count    uint64
	lat      []time.Duration
	finished time.Time
	err      error
}

func (s *benchSubscriber) run(want uint64, deadline time.Time) {
	s.c.SetReadDeadline(deadline)
	now := time.Now()
	var d wire.Deliver
	for {
		for s.count < want {
			f, k, err := wire.Split(s.buf[s.off:s.n], len(s.buf))
			if err != nil {
				s.err = err
				return
			}
			if k == 0 {
				break
			}
			s.off += k
			switch f.Type {
			case wire.TypeDeliver:
				s.count++
				if s.count%pubSubSample == 0 {
					if err := wire.DecodeDeliver(f.Body, &d); err != nil {
						s.err = err
						return
					}
					sent := int64(binary.LittleEndian.Uint64(d.Record.Payload()))
					s.lat = append(s.lat, time.Duration(now.UnixNano()-sent))
				}
			case wire.TypeHeartbeat, wire.TypePosition:
			default:
				s.err = fmt.Errorf("subscriber: got %s %s", f.Type, describe(f))
				return
			}
		}
		if s.count >= want {
			s.finished = now
			return
		}
		s.n = copy(s.buf, s.buf[s.off:s.n])
		s.off = 0
		m, err := s.c.Read(s.buf[s.n:])
		now = time.Now()
		if err != nil {
			s.err = err
			return
		}
		s.n += m
	}
}
