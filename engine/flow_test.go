package engine

import (
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// A subscriber that stops reading must neither stall publishers nor make the
// server buffer without bound; when it reads again it gets everything, in
// order, from the journal.
func TestSlowConsumerIsServedFromJournal(t *testing.T) {
	const highWater = 64 << 10
	s := testServer(t, t.TempDir(), func(c *Config) { c.WriteHighWater = highWater })
	defer s.Close()

	sub := dialRaw(t, s)
	sub.logon("slow", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))

	pub := dialRaw(t, s)
	pub.logon("fast", 0)
	const n = 100000
	for from := uint64(1); from <= n; from += 10000 {
		pub.publishN("t", "payload-of-some-length-", from, 10000, wire.AckPersisted)
		pub.waitAck(wire.AckKindPersisted, from+9999) // acks keep coming while the subscriber sleeps
	}
	// epoll: one buffer; io_uring: the buffer in flight plus the next one.
	bound := highWater + 1024
	if testEngine == "uring" {
		bound = 2 * (highWater + 1024)
	}
	if max := maxPendingSeen(s); max > int64(bound) {
		t.Fatalf("server buffered %d bytes for one connection; bound is %d", max, bound)
	}
	for i := uint64(1); i <= n; i++ {
		if d := sub.nextDelivery(10 * time.Second); d.pubSeq != i {
			t.Fatalf("slow consumer: want %d, got %+v", i, d)
		}
	}
}

func maxPendingSeen(s *Server) int64 {
	var m int64
	for _, lp := range s.loops {
		m = max(m, lp.maxPending.Load())
	}
	return m
}

// Subscribing from EPOCH while a publisher is running switches from replay
// to live delivery with no gap and no duplicate.
func TestReplayToLiveSwitchover(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	pub := dialRaw(t, s)
	pub.logon("p", 0)
	const n = 60000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for from := uint64(1); from <= n; from += 1000 {
			pub.publishN("t", "x", from, 1000, wire.AckNone)
		}
	}()
	// Subscribe once part of the stream is stored.
	deadline := time.Now().Add(10 * time.Second)
	for s.Journal().SyncedSeq() < n/4 {
		if time.Now().After(deadline) {
			t.Fatal("publisher made no progress")
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	sub := dialRaw(t, s)
	sub.logon("s", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))
	for i := uint64(1); i <= n; i++ {
		if d := sub.nextDelivery(10 * time.Second); d.pubSeq != i {
			t.Fatalf("want %d, got %+v", i, d)
		}
	}
	wg.Wait()
}

// Close syncs what was appended and sends the acks it earned before closing.
func TestGracefulShutdownAcksEverythingAppended(t *testing.T) {
	dir := t.TempDir()
	s := testServer(t, dir)
	pub := dialRaw(t, s)
	pub.logon("p", 0)
	pub.publishN("t", "x", 1, 2000, wire.AckPersisted)
	pub.waitAck(wire.AckKindPersisted, 1) // at least one persisted ack: the server is processing
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Whatever the publisher was told is persisted is in the journal after restart.
	var acked uint64
	for {
		f, err := pub.next(5 * time.Second)
		if err != nil {
			break
		}
		if f.Type == wire.TypeAck {
			var a wire.Ack
			wire.DecodeAck(f.Body, &a)
			if a.Kind == wire.AckKindPersisted && a.Code == 0 {
				acked = a.Seq
			}
		}
	}
	s = testServer(t, dir)
	defer s.Close()
	c := dialRaw(t, s)
	if r := c.logon("p", 0); r.LastPubSeq < acked {
		t.Fatalf("acked %d but journal holds up to %d", acked, r.LastPubSeq)
	}
}
