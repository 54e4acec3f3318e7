package engine

import (
	"context"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// detachedConn builds a server without sockets and a connection whose
// frames the test feeds by hand, so the publish and delivery paths can be
// measured without the network. fd -1 is never used for I/O on these paths.
func detachedConn(t testing.TB) (*Server, *conn) {
	t.Helper()
	s, err := New(Config{Name: "alloc", DataDir: t.TempDir(), Loops: 1, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.j.Close() })
	lp := &loop{srv: s, conns: map[int32]*conn{}}
	s.loops = []*loop{lp}
	c := newConn(lp, -1, "detached")
	ci := &clientInfo{name: "alloc-pub", pub: s.idx.publisherLocked(record.ID("alloc-pub"))}
	c.client, c.pub = ci, ci.pub
	c.wbuf = make([]byte, 0, 4<<20)
	return s, c
}

// feedPublishes encodes n publishes starting at seq into buf.
func feedPublishes(buf []byte, seq uint64, n int, payload []byte) []byte {
	buf = buf[:0]
	for i := 0; i < n; i++ {
		buf = wire.AppendPublish(buf, seq+uint64(i), wire.AckPersisted, []byte("orders.eu"), payload)
	}
	return buf
}

// resetOutput drops what the connection produced, as a flush would.
func resetOutput(c *conn) {
	c.wbuf, c.woff = c.wbuf[:0], 0
	c.dirty = false
	c.lp.dirty = c.lp.dirty[:0]
	for c.acks.len() > 0 {
		c.acks.pop()
	}
}

func TestPublishPathDoesNotAllocate(t *testing.T) {
	s, c := detachedConn(t)
	payload := make([]byte, 128)
	frames := make([]byte, 0, 64*(wire.PublishOverhead+len(payload)+16))
	seq := uint64(1)
	run := func() {
		frames = feedPublishes(frames, seq, 64, payload)
		seq += 64
		c.rn = copy(c.rbuf, frames)
		c.process()
		resetOutput(c)
	}
	for i := 0; i < 50; i++ { // warm up: maps, queues and topic counters grow once
		run()
	}
	if a := testing.AllocsPerRun(200, run); a != 0 {
		t.Fatalf("publish path: %.2f allocations per 64-frame batch, want 0", a)
	}
	if err := s.j.WaitSynced(context.Background(), seq-1); err != nil {
		t.Fatal(err)
	}
}

func TestDeliveryPathDoesNotAllocate(t *testing.T) {
	s, c := detachedConn(t)
	payload := make([]byte, 128)
	frames := feedPublishes(nil, 1, 256, payload)
	c.rn = copy(c.rbuf, frames)
	c.process()
	resetOutput(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.j.WaitSynced(ctx, 256); err != nil {
		t.Fatal(err)
	}
	cur, err := s.j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	mt, _ := newMatcher(wire.MatchPrefix, []byte("orders."))
	c.subs = []*subscription{{id: 1, m: mt, cur: cur}}
	run := func() {
		if err := cur.Seek(1); err != nil {
			t.Fatal(err)
		}
		c.pump()
		if c.pending() == 0 {
			t.Fatal("nothing delivered")
		}
		resetOutput(c)
	}
	run()
	if a := testing.AllocsPerRun(200, run); a != 0 {
		t.Fatalf("delivery path: %.2f allocations per 256 deliveries, want 0", a)
	}
	cur.Close()
}

// BenchmarkPublishPath measures parse + de-dup + journal append per message
// (no network, no sync wait).
func BenchmarkPublishPath(b *testing.B) {
	s, c := detachedConn(b)
	payload := make([]byte, 128)
	frames := make([]byte, 0, 256*(wire.PublishOverhead+len(payload)+16))
	seq := uint64(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	for done := 0; done < b.N; done += 256 {
		frames = feedPublishes(frames, seq, 256, payload)
		seq += 256
		c.rn = copy(c.rbuf, frames)
		c.process()
		resetOutput(c)
	}
	b.StopTimer()
	s.j.WaitSynced(context.Background(), seq-1)
}
