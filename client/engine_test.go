package client

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/tandemhq/tandem/engine"
)

// Tests against the real server (package engine).

func startEngine(t testing.TB) string {
	t.Helper()
	s, err := engine.New(engine.Config{Engine: testEngine, Name: "eng-1", Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr().String()
}

func TestEnginePublishSubscribe(t *testing.T) {
	addr := startEngine(t)
	var log ackLog
	pub := connect(t, addr, WithName("ep"), WithAckHandler(log.handle), WithHeartbeat(200*time.Millisecond))
	sc := connect(t, addr, WithName("es"))
	live, err := sc.Subscribe(ctxT(t), "e.", Prefix())
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	ctx := ctxT(t)
	for i := 1; i <= n; i++ {
		if _, err := pub.Publish(ctx, "e.x", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if pub.PersistedSeq() != n || log.len() != n {
		t.Fatalf("persisted %d, %d ack callbacks", pub.PersistedSeq(), log.len())
	}
	var mid *Message
	for i := 1; i <= n; i++ {
		m := recv(t, live)
		if string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("live message %d: %q", i, m.Payload)
		}
		if i == n/2 {
			mid = m
		}
	}
	resumed, err := sc.Subscribe(ctxT(t), "e.x", From(Bookmark(mid.Bookmark)))
	if err != nil {
		t.Fatal(err)
	}
	for i := n/2 + 1; i <= n; i++ {
		if m := recv(t, resumed); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("resumed message %d: %q", i, m.Payload)
		}
	}
	st, err := sc.Stats(ctx)
	if err != nil || st.Stored != n || st.Instance != "eng-1" {
		t.Fatalf("stats %+v %v", st, err)
	}
	if _, err := Connect(ctx, addr, WithName("ep")); err == nil {
		t.Fatal("second logon with a connected name accepted")
	}
}

// BenchmarkEnginePublish publishes 128-byte messages with persisted acks to
// a real server (group-committed journal in a temp dir).
func BenchmarkEnginePublish(b *testing.B) {
	addr := startEngine(b)
	c, err := Connect(context.Background(), addr, WithName("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	payload := make([]byte, 128)
	b.ReportAllocs()
	b.SetBytes(128)
	start := time.Now()
	for b.Loop() {
		if _, err := c.Publish(ctx, "bench.topic", payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
