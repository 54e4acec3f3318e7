package engine

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// TLS against plaintext on the client port (the relay's cost): durable
// publish throughput and ack latency, and end-to-end latency (publish to
// delivery, which waits for the record to be durable).
//
//	go test ./engine -run NONE -bench 'TLSvsPlain' -benchtime 2s
func BenchmarkTLSvsPlainPublishPersisted(b *testing.B) {
	for _, transport := range []string{"plain", "tls"} {
		b.Run("transport="+transport, func(b *testing.B) {
			s, dial := benchTransport(b, transport)
			defer s.Close()
			p := newLoadPublisherOn(b, dial(), "bench-tls", 50000, 128)
			defer p.c.Close()
			b.ResetTimer()
			start := time.Now()
			if err := p.run(uint64(b.N)); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(percentile(p.lat, 0.5).Microseconds()), "p50-ack-µs")
			b.ReportMetric(float64(percentile(p.lat, 0.99).Microseconds()), "p99-ack-µs")
		})
	}
}

func BenchmarkTLSvsPlainEndToEnd(b *testing.B) {
	for _, transport := range []string{"plain", "tls"} {
		b.Run("transport="+transport, func(b *testing.B) {
			s, dial := benchTransport(b, transport)
			defer s.Close()
			pub := &rawClient{t: b, c: dial(), buf: make([]byte, 1<<20)}
			defer pub.c.Close()
			pub.logon("e2e-pub", 0)
			sub := &rawClient{t: b, c: dial(), buf: make([]byte, 1<<20)}
			defer sub.c.Close()
			sub.logon("e2e-sub", 0)
			sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartNow, wire.MatchExact, []byte("e2e")))
			lat := make([]time.Duration, 0, b.N)
			payload := make([]byte, 128)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				pub.send(wire.AppendPublish(nil, uint64(i+1), wire.AckNone, []byte("e2e"), payload))
				sub.nextDelivery(10 * time.Second)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-e2e-µs")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-e2e-µs")
		})
	}
}

// benchTransport starts a server with a plaintext or a TLS client port
// and returns how to connect to it.
func benchTransport(b *testing.B, transport string) (*Server, func() net.Conn) {
	var ts *tlsSetup
	mod := func(c *Config) { c.Journal.SegmentSize = 256 << 20 }
	if transport == "tls" {
		ts = newTLSSetup(b, false)
		mod = func(c *Config) { c.Journal.SegmentSize = 256 << 20; c.TLS = ts.cfg }
	}
	s := testServer(b, b.TempDir(), mod)
	return s, func() net.Conn {
		if ts == nil {
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		c, err := tls.Dial("tcp", s.Addr().String(), ts.clientConfig())
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
}
