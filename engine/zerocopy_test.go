package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// zcTestMin is the zero-copy threshold the tests use, low enough that a
// mix of sizes goes both ways.
const zcTestMin = 2048

// zcPayload is the deterministic payload of pubSeq i, size n.
func zcPayload(i uint64, n int) []byte {
	b := make([]byte, n)
	binary.LittleEndian.PutUint64(b, i)
	for k := 8; k < n; k++ {
		b[k] = byte(i*31 + uint64(k))
	}
	return b
}

func zcServer(t *testing.T) *Server {
	return testServer(t, t.TempDir(), func(c *Config) {
		c.ZeroCopyMin = zcTestMin
		c.zcEvenIfCopied = true                           // loopback copies; keep exercising the zero-copy path
		c.Journal = journal.Options{SegmentSize: 1 << 20} // many segments: holds across rotations
	})
}

// zeroCopyExpected reports whether this backend sends zero-copy here.
func zeroCopyExpected(t *testing.T, s *Server) bool {
	if testEngine != "uring" {
		return false
	}
	return s.loops[0].ur.zcMin > 0
}

func (s *Server) zcCounters() (sends, bytes, holds int64) {
	for _, lp := range s.loops {
		sends += lp.zcSends.Load()
		bytes += lp.zcBytes.Load()
		holds += lp.zcHolds.Load()
	}
	return
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestZeroCopyDeliveries publishes a random mix of small and large
// messages; a subscriber replaying from EPOCH and one subscribed live get
// every one intact and in order, the large ones (on io_uring) sent from the
// journal mapping, and once they leave, every segment hold is released.
func TestZeroCopyDeliveries(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	s := zcServer(t)
	defer s.Close()
	sizes := []int{100, zcTestMin - 1, zcTestMin, 20 << 10, 70 << 10, 300 << 10}

	live := dialRaw(t, s)
	live.logon("live", 0)
	live.subscribe(wire.AppendSubscribe(nil, 2, wire.StartNow, wire.MatchPrefix, []byte("zc/")))

	pub := dialRaw(t, s)
	pub.logon("pub", 0)
	const n = 250
	size := make([]int, n+1)
	var buf []byte
	for i := uint64(1); i <= n; i++ {
		size[i] = sizes[rng.IntN(len(sizes))]
		buf = wire.AppendPublish(buf[:0], i, wire.AckPersisted, []byte("zc/a"), zcPayload(i, size[i]))
		pub.send(buf)
	}
	pub.waitAck(wire.AckKindPersisted, n)

	replay := dialRaw(t, s)
	replay.logon("replay", 0)
	replay.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("zc/a")))

	check := func(name string, r *rawClient, sub uint32) {
		t.Helper()
		for i := uint64(1); i <= n; i++ {
			f := r.nextSkipping(10 * time.Second)
			var m wire.Deliver
			if f.Type != wire.TypeDeliver || wire.DecodeDeliver(f.Body, &m) != nil {
				t.Fatalf("%s: message %d: got %s %s", name, i, f.Type, describe(f))
			}
			if err := m.Record.Verify(); err != nil {
				t.Fatalf("%s: message %d: %v", name, i, err)
			}
			if m.SubID != sub || m.Record.PubSeq() != i || !bytes.Equal(m.Record.Payload(), zcPayload(i, size[i])) {
				t.Fatalf("%s: message %d (size %d): sub %d pubSeq %d, payload of %d bytes differs",
					name, i, size[i], m.SubID, m.Record.PubSeq(), len(m.Record.Payload()))
			}
		}
	}
	check("live", live, 2)
	check("replay", replay, 1)

	sends, sent, _ := s.zcCounters()
	t.Logf("zero-copy sends %d, bytes %d (engine %s)", sends, sent, testEngine)
	if zeroCopyExpected(t, s) {
		if sends == 0 || sent == 0 {
			t.Fatalf("io_uring with SENDMSG_ZC: no zero-copy sends (sends %d, bytes %d)", sends, sent)
		}
	} else if sends != 0 {
		t.Fatalf("%s backend made %d zero-copy sends", testEngine, sends)
	}
	st := s.Stats()
	if zeroCopyExpected(t, s) && (st.ZeroCopy == nil || st.ZeroCopy.Sends != uint64(sends) || st.ZeroCopy.MinBytes != zcTestMin) {
		t.Fatalf("stat zero_copy %+v, want %d sends from %d bytes", st.ZeroCopy, sends, zcTestMin)
	}
	wantVia := map[string]string{"uring": "uring", "epoll": "syscall"}[testEngine]
	if st.Journal.SyncVia != wantVia {
		t.Fatalf("stat journal sync_via %q on %s, want %q", st.Journal.SyncVia, testEngine, wantVia)
	}
	live.c.Close()
	replay.c.Close()
	waitUntil(t, 10*time.Second, "every segment hold released", func() bool {
		_, _, holds := s.zcCounters()
		return holds == 0
	})
}

// TestZeroCopySubscriberVanishes: a subscriber that stops reading and then
// disconnects in the middle of large zero-copy deliveries costs nothing
// after it is gone (holds released, no leak), and the server goes on
// serving others and closes cleanly.
func TestZeroCopySubscriberVanishes(t *testing.T) {
	s := zcServer(t)
	defer s.Close()
	pub := dialRaw(t, s)
	pub.logon("pub", 0)
	const n = 200
	var buf []byte
	for i := uint64(1); i <= n; i++ {
		buf = wire.AppendPublish(buf[:0], i, wire.AckPersisted, []byte("big"), zcPayload(i, 64<<10))
		pub.send(buf)
	}
	pub.waitAck(wire.AckKindPersisted, n)
	for k := 0; k < 4; k++ {
		gone := dialRaw(t, s)
		gone.logon(fmt.Sprint("gone-", k), 0)
		gone.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("big")))
		gone.nextSkipping(5 * time.Second) // deliveries are flowing
		gone.c.Close()
	}
	ok := dialRaw(t, s)
	ok.logon("ok", 0)
	ok.subscribe(wire.AppendSubscribe(nil, 3, wire.StartEpoch, wire.MatchExact, []byte("big")))
	for i := uint64(1); i <= n; i++ {
		d := ok.nextDelivery(10 * time.Second)
		if d.pubSeq != i || len(d.payload) != 64<<10 {
			t.Fatalf("delivery %d: pubSeq %d, %d bytes", i, d.pubSeq, len(d.payload))
		}
	}
	ok.c.Close()
	waitUntil(t, 10*time.Second, "every segment hold released", func() bool {
		_, _, holds := s.zcCounters()
		return holds == 0
	})
}

// TestZeroCopyGatherList checks the gather list against the bytes it must
// describe: the send buffer interleaved with its parts, resumed at every
// offset, and cut at maxIovecs.
func TestZeroCopyGatherList(t *testing.T) {
	c := &conn{}
	var want []byte
	for i := 0; i < 3; i++ {
		c.sbuf = append(c.sbuf, bytes.Repeat([]byte{byte('a' + i)}, 3+i)...)
		want = append(want, bytes.Repeat([]byte{byte('a' + i)}, 3+i)...)
		part := bytes.Repeat([]byte{byte('0' + i)}, 5+i)
		c.sz.parts = append(c.sz.parts, zcPart{at: len(c.sbuf), data: part})
		c.sz.bytes += len(part)
		want = append(want, part...)
	}
	c.sbuf = append(c.sbuf, "tail"...)
	want = append(want, "tail"...)
	if c.stotal() != len(want) {
		t.Fatalf("stotal %d, want %d", c.stotal(), len(want))
	}
	for skip := 0; skip <= len(want); skip++ {
		var got []byte
		for _, iov := range c.iovecs(skip) {
			got = append(got, unsafeBytes(iov)...)
		}
		if !bytes.Equal(got, want[skip:]) {
			t.Fatalf("skip %d: %q, want %q", skip, got, want[skip:])
		}
	}
	// Longer than maxIovecs: cut there, and the rest follows from the
	// offset the first part ends at.
	c = &conn{}
	want = want[:0]
	for i := 0; i < maxIovecs; i++ {
		c.sbuf = append(c.sbuf, 'h')
		want = append(want, 'h')
		c.sz.parts = append(c.sz.parts, zcPart{at: len(c.sbuf), data: []byte{byte(i)}})
		c.sz.bytes++
		want = append(want, byte(i))
	}
	var got []byte
	for len(got) < len(want) {
		iovs := c.iovecs(len(got))
		if len(iovs) > maxIovecs || len(iovs) == 0 {
			t.Fatalf("%d iovecs", len(iovs))
		}
		for _, iov := range iovs {
			got = append(got, unsafeBytes(iov)...)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("gather list in pieces differs")
	}
}

// TestZeroCopyDeliveryDoesNotAllocate: taking records for zero-copy
// delivery, building the gather list and releasing the holds allocate
// nothing in the steady state.
func TestZeroCopyDeliveryDoesNotAllocate(t *testing.T) {
	s, c := detachedConn(t)
	c.rbuf = make([]byte, 1<<20)
	frames := feedPublishes(nil, 1, 64, make([]byte, 8<<10))
	c.rn = copy(c.rbuf, frames)
	c.process()
	resetOutput(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.j.WaitSynced(ctx, 64); err != nil {
		t.Fatal(err)
	}
	cur, err := s.j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	run := func() {
		cur.Seek(1)
		for {
			v, ok := cur.Next()
			if !ok {
				break
			}
			c.addZeroCopy(1, v.Bytes(), cur)
		}
		c.sbuf, c.wbuf = c.wbuf, c.sbuf[:0]
		c.sz, c.wz = c.wz, c.sz
		if n, m := len(c.iovecs(0)), len(c.iovecs(100)); n != 2*64 || m != 2*64-1 { // skipping 100 bytes drops the first header
			t.Fatalf("gather lists of %d and %d entries for 64 deliveries", n, m)
		}
		c.lp.zcHolds.Add(-int64(c.sz.release()))
		c.sbuf = c.sbuf[:0]
	}
	run()
	if a := testing.AllocsPerRun(100, run); a != 0 {
		t.Fatalf("zero-copy delivery path: %.2f allocations per 64 deliveries, want 0", a)
	}
	if h := c.lp.zcHolds.Load(); h != 0 {
		t.Fatalf("%d holds left", h)
	}
}

func unsafeBytes(iov unix.Iovec) []byte { return unsafe.Slice(iov.Base, iov.Len) }

// TestZeroCopyFallsBackWhenTheKernelCopies: over loopback the kernel
// copies zero-copy sends anyway and says so in the notification; the
// connection then goes back to copying (by default), and deliveries stay
// intact across the switch.
func TestZeroCopyFallsBackWhenTheKernelCopies(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.ZeroCopyMin = zcTestMin })
	defer s.Close()
	pub := dialRaw(t, s)
	pub.logon("pub", 0)
	const n = 100
	var buf []byte
	for i := uint64(1); i <= n; i++ {
		buf = wire.AppendPublish(buf[:0], i, wire.AckPersisted, []byte("big"), zcPayload(i, 64<<10))
		pub.send(buf)
	}
	pub.waitAck(wire.AckKindPersisted, n)
	sub := dialRaw(t, s)
	sub.logon("sub", 0)
	sub.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("big")))
	for i := uint64(1); i <= n; i++ {
		d := sub.nextDelivery(10 * time.Second)
		if d.pubSeq != i || d.payload != string(zcPayload(i, 64<<10)) {
			t.Fatalf("delivery %d: pubSeq %d, %d bytes", i, d.pubSeq, len(d.payload))
		}
	}
	var copied int64
	for _, lp := range s.loops {
		copied += lp.zcCopiedConns.Load()
	}
	sends, _, _ := s.zcCounters()
	t.Logf("zero-copy sends %d, connections switched to copying %d", sends, copied)
	if zeroCopyExpected(t, s) {
		if sends == 0 || copied != 1 {
			t.Fatalf("want the subscriber's connection to try zero-copy and switch to copying: sends %d, switched %d", sends, copied)
		}
	}
}
