package engine

import (
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// loadPublisher drives one connection as fast as the window allows: frames
// go out in batches, persisted acks come back cumulative, and the latency of
// each batch (write to persisted ack) is sampled.
type loadPublisher struct {
	c       net.Conn
	window  uint64
	batch   int
	payload []byte
	acked   atomic.Uint64
	mu      sync.Mutex
	cond    *sync.Cond
	sent    []sentBatch // batches waiting for their ack
	lat     []time.Duration
	err     error
}

type sentBatch struct {
	last uint64
	at   time.Time
}

func newLoadPublisher(tb testing.TB, addr, name string, window uint64, size int) *loadPublisher {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	return newLoadPublisherOn(tb, c, name, window, size)
}

// newLoadPublisherOn logs on over c (plain TCP or TLS).
func newLoadPublisherOn(tb testing.TB, c net.Conn, name string, window uint64, size int) *loadPublisher {
	c.Write(wire.AppendLogon(nil, &wire.Logon{MinVersion: 1, MaxVersion: 1, Name: []byte(name)}))
	p := &loadPublisher{c: c, window: window, batch: 256, payload: make([]byte, size)}
	p.cond = sync.NewCond(&p.mu)
	buf := make([]byte, 1<<20)
	n, off := 0, 0
	for { // logon reply
		m, err := c.Read(buf[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += m
		if f, k, _ := wire.Split(buf[:n], len(buf)); k > 0 {
			if f.Type != wire.TypeLogonReply {
				tb.Fatalf("logon: %s", f.Type)
			}
			off = k
			break
		}
	}
	go p.readAcks(buf, off, n)
	return p
}

func (p *loadPublisher) readAcks(buf []byte, off, n int) {
	for {
		for {
			f, k, err := wire.Split(buf[off:n], len(buf))
			if err != nil || k == 0 {
				break
			}
			off += k
			if f.Type == wire.TypeAck {
				var a wire.Ack
				wire.DecodeAck(f.Body, &a)
				if a.Kind == wire.AckKindPersisted && a.Code == 0 {
					now := time.Now()
					p.mu.Lock()
					p.acked.Store(a.Seq)
					i := 0
					for ; i < len(p.sent) && p.sent[i].last <= a.Seq; i++ {
						p.lat = append(p.lat, now.Sub(p.sent[i].at))
					}
					p.sent = p.sent[i:]
					p.cond.Broadcast()
					p.mu.Unlock()
				}
			}
		}
		n = copy(buf, buf[off:n])
		off = 0
		m, err := p.c.Read(buf[n:])
		if err != nil {
			p.mu.Lock()
			p.err = err
			p.cond.Broadcast()
			p.mu.Unlock()
			return
		}
		n += m
	}
}

// run publishes n messages and waits for every persisted ack.
func (p *loadPublisher) run(n uint64) error {
	frames := make([]byte, 0, p.batch*(len(p.payload)+64))
	topic := []byte("bench")
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
		frames = frames[:0]
		end := min(seq+uint64(p.batch)-1, n)
		for s := seq; s <= end; s++ {
			frames = wire.AppendPublish(frames, s, wire.AckPersisted, topic, p.payload)
		}
		p.mu.Lock()
		p.sent = append(p.sent, sentBatch{last: end, at: time.Now()})
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

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

// BenchmarkPublishPersisted: publishers over loopback, 128-byte payloads,
// every ack after fdatasync; reports msgs/s and publish-to-persisted-ack
// latency per batch.
func BenchmarkPublishPersisted(b *testing.B) {
	for _, pubs := range []int{1, 4} {
		b.Run(fmt.Sprintf("publishers=%d", pubs), func(b *testing.B) {
			s := testServer(b, b.TempDir(), func(c *Config) { c.Journal.SegmentSize = 256 << 20 })
			defer s.Close()
			per := uint64(b.N/pubs + 1)
			ps := make([]*loadPublisher, pubs)
			for i := range ps {
				ps[i] = newLoadPublisher(b, s.Addr().String(), fmt.Sprint("bench-", i), 50000, 128)
				defer ps[i].c.Close()
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for _, p := range ps {
				wg.Add(1)
				go func() { defer wg.Done(); p.run(per) }()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			var lat []time.Duration
			for _, p := range ps {
				if p.err != nil {
					b.Fatal(p.err)
				}
				lat = append(lat, p.lat...)
			}
			b.ReportMetric(float64(per*uint64(pubs))/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-ack-µs")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-ack-µs")
		})
	}
}
