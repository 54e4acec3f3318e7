package replicate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/uring"
)

// Focused tests of the io_uring link I/O (ringio.go). They are internal
// (the hold and zero-copy counters are not exported), so they build
// Replicators directly on journals, with a minimal Store, or face a fake
// peer that speaks the link protocol itself. TestMain (helpers_test.go)
// runs them once per link I/O and says which in TANDEM_REPL_IO; the tests
// that only make sense on the ring skip the net pass.

// passIO is the link I/O of this pass of TestMain.
func passIO(t testing.TB) string {
	t.Helper()
	mode := os.Getenv("TANDEM_REPL_IO")
	if mode == "" {
		mode = IORing
	}
	if mode == IORing {
		if err := uring.Available(); err != nil {
			t.Skipf("io_uring not available here, the ring link I/O cannot be tested: %v", err)
		}
	}
	return mode
}

// ringOnly skips a test of the ring path itself in the net pass.
func ringOnly(t testing.TB) {
	t.Helper()
	if passIO(t) != IORing {
		t.Skip("a test of the io_uring link I/O: it runs in TestMain's ring pass")
	}
}

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		return slog.Default().With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitUntil polls cond (a state with no event to wait on) until it holds,
// failing the test after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool, diag ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			extra := ""
			for _, f := range diag {
				extra += "\n" + f()
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, extra)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// testJournal is a journal on disk whose syncs wake the replicator set in
// notify.
type testJournal struct {
	*journal.Journal
	notify atomic.Pointer[Replicator]
}

func openTestJournal(t testing.TB, segment int64) *testJournal {
	t.Helper()
	tj := &testJournal{}
	j, err := journal.Open(journal.Options{Dir: t.TempDir(), SegmentSize: segment, Logger: testLog(t),
		OnSync: func(uint64) {
			if r := tj.notify.Load(); r != nil {
				r.Notify()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	tj.Journal = j
	t.Cleanup(func() { j.Close() })
	return tj
}

// Deterministic records: record i (publisher "p", pubSeq i, origin self)
// has topic "t.<i%7>" and a payload of detSize(i) bytes derived from i.
func detSize(i uint64) int {
	return []int{100, 4000, 70_000, 300, 20_000, 9, 1500}[i%7]
}

func detPayload(i uint64) []byte {
	p := make([]byte, detSize(i))
	for k := range p {
		p[k] = byte(i*31 + uint64(k)*7)
	}
	return p
}

func appendDet(t testing.TB, j *testJournal, origin string, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		h := record.Header{Origin: record.ID(origin), Publisher: record.ID("p"), PubSeq: i}
		if _, err := j.Append(&h, []byte(fmt.Sprintf("t.%d", i%7)), detPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := j.WaitSynced(ctx, j.LastSeq()); err != nil {
		t.Fatal(err)
	}
}

// checkDet checks that v is deterministic record i, as shipped (or stored
// by a peer: seq, via and flags are restamped there, so not compared).
func checkDet(v record.View, i uint64, origin string) error {
	if err := v.Verify(); err != nil {
		return fmt.Errorf("record %d: %w", i, err)
	}
	if v.PubSeq() != i || v.Publisher() != record.ID("p") || v.Origin() != record.ID(origin) ||
		string(v.Topic()) != fmt.Sprintf("t.%d", i%7) || !bytes.Equal(v.Payload(), detPayload(i)) {
		return fmt.Errorf("record %d: got pubSeq %d topic %q, %d payload bytes: not the record appended", i, v.PubSeq(), v.Topic(), len(v.Payload()))
	}
	return nil
}

// journalStore stores what a peer ships straight into a journal (no
// de-duplication: the tests never ship a record twice... except after a
// reconnect, which these tests do not provoke).
type journalStore struct{ j *testJournal }

func (s journalStore) StoreReplicated(recs []record.View, via uint64) (uint64, error) {
	s.j.Lock()
	defer s.j.Unlock()
	var last uint64
	for _, v := range recs {
		seq, err := s.j.AppendRecordLocked(v.Bytes(), via)
		if err != nil {
			return 0, err
		}
		last = seq
	}
	return last, nil
}

// startReplicator makes and starts a Replicator on j with the pass's link
// I/O and zero copy forced on for every batch (ZeroCopyMin 1, kept on
// where the kernel copies, as on loopback), closed at cleanup.
func startReplicator(t testing.TB, cfg Config, j *testJournal) *Replicator {
	t.Helper()
	cfg.IO = passIO(t)
	if cfg.Secret == nil {
		cfg.Secret = []byte("s3cret")
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 100 * time.Millisecond
	}
	if cfg.ZeroCopyMin == 0 {
		cfg.ZeroCopyMin = 1
	}
	r, err := New(cfg, j.Journal, journalStore{j}, nil, testLog(t).With("i", cfg.Self))
	if err != nil {
		t.Fatal(err)
	}
	r.keepZC = true
	j.notify.Store(r)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (r *Replicator) ioDiag() string {
	s := &r.io
	return fmt.Sprintf("%s io=%s zc=%v: zc sends %d, copy sends %d, zc copied %d, zc off %d, holds %d, multi-segment %d, leaked %d, ring links %d, fell back %d, iovecs %d for %d records",
		r.cfg.Self, r.ioMode, r.zcOK, s.zcSends.Load(), s.copySends.Load(), s.zcCopied.Load(), s.zcOff.Load(), s.holds.Load(),
		s.multiSeg.Load(), s.leaked.Load(), s.ringLinks.Load(), s.fellBack.Load(), s.iovecsSent.Load(), s.recsSent.Load())
}

// TestBatchHeaderMatchesFinishBatch: the header a ring link sends before
// records gathered from the mapping is the one a net link builds in place.
func TestBatchHeaderMatchesFinishBatch(t *testing.T) {
	recs := record.Append(nil, &record.Header{Seq: 7, Origin: 1, Publisher: 2, PubSeq: 3}, []byte("t"), []byte("payload"))
	recs = record.Append(recs, &record.Header{Seq: 9, Origin: 1, Publisher: 2, PubSeq: 4}, []byte("t"), []byte("more"))
	for _, body := range [][]byte{nil, recs} {
		in, start := startBatch(nil)
		in = finishBatch(append(in, body...), start, 5, 9, 0xc0ffee)
		var hdr [batchHeaderSize]byte
		putBatchHeader(&hdr, 5, 9, 0xc0ffee, len(body))
		if got := append(hdr[:], body...); !bytes.Equal(got, in) {
			t.Fatalf("gathered batch\n%x\nin-place batch\n%x", got, in)
		}
	}
}

// TestLinkAcrossSegments: A ships records of 9 B to 70 KB from 1 MiB
// journal segments (so most batches span two or three segments) to B, some
// caught up, some live, over a connection A dialed and over one B dialed
// (an accepted socket: the listener must not be MPTCP for zero copy).
// Every record arrives intact, in order; on the ring, batches went out
// zero-copy from the mapping, adjacent records merged into one iovec, and
// every hold is released once the link is idle.
func TestLinkAcrossSegments(t *testing.T) {
	for _, dialer := range []string{"A", "B"} {
		t.Run("dialed-by-"+dialer, func(t *testing.T) { testLinkAcrossSegments(t, dialer) })
	}
}

func testLinkAcrossSegments(t *testing.T, dialer string) {
	ja := openTestJournal(t, 1<<20)
	jb := openTestJournal(t, 4<<20)
	const caughtUp, live = 400, 200
	appendDet(t, ja, "A", 1, caughtUp)
	var a, b *Replicator
	if dialer == "A" {
		b = startReplicator(t, Config{Self: "B", Listen: "127.0.0.1:0", Destinations: []Destination{{Name: "A", ReceiveOnly: true}}}, jb)
		a = startReplicator(t, Config{Self: "A", Destinations: []Destination{{Name: "B", Addr: b.Addr().String(), Mode: Async}}}, ja)
	} else {
		a = startReplicator(t, Config{Self: "A", Listen: "127.0.0.1:0", Destinations: []Destination{{Name: "B", Mode: Async}}}, ja)
		b = startReplicator(t, Config{Self: "B", Destinations: []Destination{{Name: "A", Addr: a.Addr().String(), Mode: Async}}}, jb)
	}
	waitUntil(t, 10*time.Second, "B to get the backlog", func() bool { return jb.SyncedSeq() >= caughtUp },
		a.ioDiag, b.ioDiag)
	appendDet(t, ja, "A", caughtUp+1, caughtUp+live)
	total := uint64(caughtUp + live)
	waitUntil(t, 10*time.Second, "B to get every record", func() bool { return jb.SyncedSeq() >= total },
		a.ioDiag, b.ioDiag)
	waitUntil(t, 10*time.Second, "A's acked position", func() bool { return a.byName["B"].acked.Load() == total })

	cur, err := jb.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	for i := uint64(1); i <= total; i++ {
		v, ok := cur.Next()
		if !ok {
			t.Fatalf("B's journal ends at %d of %d", i-1, total)
		}
		if err := checkDet(v, i, "A"); err != nil {
			t.Fatal(err)
		}
		if v.Via() != record.ID("A") {
			t.Fatalf("record %d: via %x, want A", i, v.Via())
		}
	}
	if segs := ja.Stats(); segs.Segments < 5 {
		t.Fatalf("A's journal has %d segments; the test wants records spread over several", segs.Segments)
	}
	if a.ioMode != IORing {
		return
	}
	st := &a.io
	t.Log(a.ioDiag())
	if st.ringLinks.Load() == 0 || st.fellBack.Load() != 0 {
		t.Fatalf("A's link did not go to io_uring: %s", a.ioDiag())
	}
	if st.multiSeg.Load() == 0 {
		t.Errorf("no batch spanned two segments: %s", a.ioDiag())
	}
	if st.iovecsSent.Load() >= st.recsSent.Load() {
		t.Errorf("adjacent records were not merged into one iovec: %s", a.ioDiag())
	}
	if a.zcOK && (st.zcSends.Load() == 0 || st.zcOff.Load() != 0) {
		t.Errorf("the kernel has SENDMSG_ZC, yet batches were not sent zero-copy: %s", a.ioDiag())
	}
	waitUntil(t, 5*time.Second, "A's journal holds released after the notifications",
		func() bool { return st.holds.Load() == 0 }, a.ioDiag)
}

// fakePeer is the acceptor side of a link, played by the test: it answers
// the handshake as instance name, says it holds nothing (Resume 0), then
// reads only when told to.
type fakePeer struct {
	t  testing.TB
	ln net.Listener
	c  net.Conn
	fr *frameReader
}

func newFakePeer(t testing.TB) *fakePeer {
	t.Helper()
	// A small receive buffer, so a sender fills the connection quickly.
	lc := net.ListenConfig{}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePeer{t: t, ln: ln}
	t.Cleanup(func() {
		ln.Close()
		if p.c != nil {
			p.c.Close()
		}
	})
	return p
}

func (p *fakePeer) accept(name string, secret []byte) {
	p.t.Helper()
	c, err := p.ln.Accept()
	if err != nil {
		p.t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(32 << 10)
	p.c = c
	c.SetDeadline(time.Now().Add(10 * time.Second))
	p.fr = newFrameReader(c, 64<<10)
	f, err := p.fr.next()
	if err != nil {
		p.t.Fatal(err)
	}
	var theirs hello
	if err := decodeHello(f.Body, &theirs); err != nil {
		p.t.Fatal(err)
	}
	mine := hello{Version: protoVersion, From: name, To: theirs.From, Nonce: newNonce(), MaxFrame: DefaultMaxFrame}
	mine.Proof = handshakeMAC(secret, labelAcceptor, &theirs, &mine)
	if _, err := c.Write(appendHello(nil, &mine)); err != nil {
		p.t.Fatal(err)
	}
	if f, err = p.fr.next(); err != nil || f.Type != typeProof {
		p.t.Fatalf("proof: %v %v", f.Type, err)
	}
	if _, err := c.Write(appendResume(nil, position{})); err != nil {
		p.t.Fatal(err)
	}
	c.SetDeadline(time.Time{})
}

// readRecords reads frames until it has records 1..total, checking each
// batch's continuity and every record, and acknowledging every batch.
func (p *fakePeer) readRecords(origin string, total uint64) {
	p.t.Helper()
	p.c.SetDeadline(time.Now().Add(20 * time.Second))
	defer p.c.SetDeadline(time.Time{})
	next, received := uint64(1), uint64(0)
	for next <= total {
		f, err := p.fr.next()
		if err != nil {
			p.t.Fatalf("reading batches (at record %d of %d): %v", next, total, err)
		}
		if f.Type != typeBatch {
			continue // resume, heartbeats
		}
		from, through, _, recs, err := decodeBatch(f.Body)
		if err != nil {
			p.t.Fatal(err)
		}
		if from != received+1 {
			p.t.Fatalf("batch [%d, %d] after %d", from, through, received)
		}
		for off := 0; off < len(recs); {
			v, n, err := record.Parse(recs[off:])
			if err != nil {
				p.t.Fatalf("batch [%d, %d] offset %d: %v", from, through, off, err)
			}
			if err := checkDet(v, next, origin); err != nil {
				p.t.Fatal(err)
			}
			next++
			off += n
		}
		received = through
		if _, err := p.c.Write(appendU64Frame(nil, typeBatchAck, through)); err != nil {
			p.t.Fatal(err)
		}
	}
}

// stalledSender starts A on a journal of about 40 MB in 4 MiB segments,
// replicating to a fake peer P that stops reading after the handshake, and
// returns once A's sender is stuck with batches in flight.
func stalledSender(t *testing.T) (*Replicator, *testJournal, *fakePeer, uint64) {
	t.Helper()
	ja := openTestJournal(t, 4<<20)
	const total = 2000
	appendDet(t, ja, "A", 1, total)
	p := newFakePeer(t)
	a := startReplicator(t, Config{Self: "A", Heartbeat: time.Second,
		Destinations: []Destination{{Name: "P", Addr: p.ln.Addr().String(), Mode: Async}}}, ja)
	p.accept("P", []byte("s3cret"))
	d := a.byName["P"]
	// The window is 64 MiB: with P not reading, the sender ends up blocked
	// in a send, with everything before it in socket buffers.
	var last uint64
	var still time.Time
	waitUntil(t, 10*time.Second, "A's sender to block on the stalled peer", func() bool {
		if s := d.sent.Load(); s != last || s == 0 {
			last, still = s, time.Now()
			return false
		}
		return time.Since(still) > 100*time.Millisecond
	}, a.ioDiag)
	if last >= total {
		t.Fatalf("A sent all %d records to a peer that does not read", total)
	}
	if a.ioMode == IORing && a.io.holds.Load() == 0 {
		t.Fatalf("batches in flight hold no journal segment: %s", a.ioDiag())
	}
	return a, ja, p, total
}

// TestJournalCloseDuringZeroCopySend: the journal closes while batches sent
// zero-copy from its mapping are still queued in the kernel. The holds keep
// the segments mapped: the peer then reads every record intact (a send
// from an unmapped page would fault or ship garbage), and the holds are
// released once the notifications come.
func TestJournalCloseDuringZeroCopySend(t *testing.T) {
	a, ja, p, _ := stalledSender(t)
	if err := ja.Close(); err != nil {
		t.Fatal(err)
	}
	p.readRecords("A", a.byName["P"].sent.Load())
	if a.ioMode == IORing {
		t.Log(a.ioDiag())
		if a.zcOK && a.io.zcSends.Load() == 0 {
			t.Fatalf("no batch went out zero-copy: %s", a.ioDiag())
		}
		waitUntil(t, 5*time.Second, "holds released after the notifications", func() bool { return a.io.holds.Load() == 0 }, a.ioDiag)
	}

}

// openFds counts the process's open file descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// TestCloseDuringStalledSend: closing the replicator while its sender is
// blocked in a send to a peer that stopped reading returns promptly,
// releases every hold (the connection is aborted so the kernel lets go of
// the pages) and leaves no goroutine and no file (socket, ring, eventfd)
// behind.
func TestCloseDuringStalledSend(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	fds := openFds(t)
	a, ja, p, _ := stalledSender(t)
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		a.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Close blocked for 5 s behind a stalled send: %s", a.ioDiag())
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if a.ioMode == IORing {
		t.Log(a.ioDiag())
		if n := a.io.holds.Load(); n != 0 {
			t.Fatalf("%d holds left after Close: %s", n, a.ioDiag())
		}
		if a.io.leaked.Load() != 0 {
			t.Fatalf("batches leaked: %s", a.ioDiag())
		}
	}
	// The peer sees the connection end.
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := p.fr.next(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the peer's connection is still open after Close")
			}
			break
		}
	}
	p.c.Close()
	p.ln.Close()
	ja.Close()
	goleak.VerifyNone(t, leaks)
	waitUntil(t, 5*time.Second, "every file closed", func() bool { return openFds(t) <= fds },
		func() string { return fmt.Sprintf("%d open files, %d before the test", openFds(t), fds) })
}

// TestRingReaderDeadline: a ring link's read deadline ends a recv that
// gets nothing, on time, and leaves the ring usable.
func TestRingReaderDeadline(t *testing.T) {
	ringOnly(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	r := &Replicator{log: testLog(t)}
	rio, err := newRingIO(r, s, make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		rio.shutdown()
		rio.abandon()
		s.Close()
	}()
	rio.start()
	rio.rd.deadline = time.Now().Add(100 * time.Millisecond)
	t0 := time.Now()
	buf := make([]byte, 16)
	if n, err := rio.rd.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want a deadline error", n, err)
	}
	if el := time.Since(t0); el < 90*time.Millisecond || el > time.Second {
		t.Fatalf("the 100ms deadline fired after %v", el)
	}
	rio.rd.deadline = time.Now().Add(5 * time.Second)
	c.Write([]byte("hello"))
	if n, err := rio.rd.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read after a timeout = %q, %v", buf[:n], err)
	}
}

// BenchmarkRingBatchSend measures where zero copy pays: one link's writer
// sends batches of a given size over loopback TCP to a reader that
// discards them, from a read-only shared file mapping (as the journal's),
// three ways:
//
//   - net: records (1 KiB each) copied into a buffer, written on the
//     net.Conn (what IONet does);
//
//   - sendmsg: the ring writer gathers the batch from the mapping with a
//     copying IORING_OP_SENDMSG;
//
//   - zc: the same with IORING_OP_SENDMSG_ZC (kept on although loopback
//     copies: the notification then says so, see zc-copied/op).
//
//     go test -run NONE -bench RingBatchSend -count 3 ./replicate/
func BenchmarkRingBatchSend(b *testing.B) {
	if err := uring.Available(); err != nil {
		b.Skipf("io_uring not available: %v", err)
	}
	const region = 16 << 20
	f, err := os.CreateTemp(b.TempDir(), "mapping")
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, region)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, region, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(m)
	f.Close()
	for _, size := range []int{4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		for _, how := range []string{"net", "sendmsg", "zc"} {
			b.Run(fmt.Sprintf("batch=%dK/send=%s", size>>10, how), func(b *testing.B) {
				benchBatchSend(b, m, size, how)
			})
		}
	}
}

func benchBatchSend(b *testing.B, m []byte, size int, how string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String()) // a dialed socket: it takes zero-copy sends
	if err != nil {
		b.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	want := int64(b.N) * int64(batchHeaderSize+size)
	got := make(chan int64, 1)
	go func() {
		buf := make([]byte, 1<<20)
		var n int64
		for n < want {
			k, err := s.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		got <- n
		s.Close()
	}()
	r := &Replicator{log: testLog(b), cfg: Config{ZeroCopyMin: 1}, zcOK: how == "zc", keepZC: true}
	var rio *ringIO
	if how != "net" {
		if rio, err = newRingIO(r, c, make(chan struct{})); err != nil {
			b.Fatal(err)
		}
		rio.start()
	}
	const rec = 1 << 10
	buf := make([]byte, 0, size+batchHeaderSize)
	off := 0
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if off+size > len(m) {
			off = 0
		}
		chunk := m[off : off+size]
		off += size
		if rio == nil {
			var start int
			buf, start = startBatch(buf[:0])
			for k := 0; k < size; k += rec {
				buf = append(buf, chunk[k:min(k+rec, size)]...)
			}
			buf = finishBatch(buf, start, 1, 1, 0)
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			continue
		}
		ob := rio.getBatch()
		var iov unix.Iovec
		iov.Base = &chunk[0]
		iov.SetLen(size)
		ob.iovs = append(ob.iovs, iov)
		ob.recBytes, ob.recs = size, size/rec
		putBatchHeader(&ob.hdr, 1, 1, 0, size)
		if err := rio.wr.sendBatch(ob, time.Now().Add(10*time.Second), nil); err != nil {
			b.Fatal(err)
		}
	}
	if n := <-got; n != want {
		b.Fatalf("reader got %d bytes of %d", n, want)
	}
	b.StopTimer()
	if rio != nil {
		rio.wr.waitNotifs(5 * time.Second)
		b.ReportMetric(float64(r.io.zcCopied.Load())/float64(b.N), "zc-copied/op")
		rio.shutdown()
		rio.wr.drain()
		rio.abandon()
	} else {
		c.Close()
	}
}

// TestZeroCopyBatchKeptUntilLastNotification: the writer's bookkeeping for a
// batch sent in two zero-copy parts (a short send resubmitted): its hold is
// released, and the batch reused, only at the notification of the last
// part, never at a result, and not while the batch is still being sent.
func TestZeroCopyBatchKeptUntilLastNotification(t *testing.T) {
	j := openTestJournal(t, 1<<20)
	appendDet(t, j, "A", 1, 2)
	cur, err := j.NewCursor(1)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	r := &Replicator{log: testLog(t)}
	rio := &ringIO{r: r}
	w := &ringWriter{rio: rio, awaiting: map[uint64]*outBatch{}, zc: true, keepZC: true}
	b := rio.getBatch()
	for range 2 {
		v, ok := cur.Next()
		if !ok {
			t.Fatal("journal empty")
		}
		b.add(cur, v.Bytes(), &r.io)
	}
	if r.io.holds.Load() != 1 || len(b.iovs) != 2 {
		t.Fatalf("two adjacent records of one segment: %d holds, %d iovecs; want 1 hold, header + 1 run", r.io.holds.Load(), len(b.iovs))
	}
	// sendv's state after two parts whose results said a notification
	// follows (CQEFMore), the first notification arriving mid-send.
	b.sending = true
	b.notifs = 2
	w.awaiting[20], w.awaiting[21] = b, b
	w.onCQE(uring.CQE{UserData: 20, Flags: uring.CQEFNotif})
	w.onCQE(uring.CQE{UserData: 99, Res: 0}) // a cancel's result: nothing to do
	if r.io.holds.Load() != 1 {
		t.Fatal("hold released at the first of two notifications")
	}
	b.sending = false // sendBatch returns; a notification is still due
	w.onCQE(uring.CQE{UserData: 21, Flags: uring.CQEFNotif})
	if r.io.holds.Load() != 0 || len(rio.free) != 1 || len(w.awaiting) != 0 {
		t.Fatalf("after the last notification: %d holds, %d free batches, %d awaiting", r.io.holds.Load(), len(rio.free), len(w.awaiting))
	}
	// Copied notifications count (loopback), and turn zero copy off only
	// when not kept on.
	w.keepZC = false
	for i := range zcCopiedLimit {
		w.onCQE(uring.CQE{UserData: uint64(100 + i), Flags: uring.CQEFNotif, Res: int32(-0x80000000)})
	}
	if w.zc {
		t.Fatalf("zero copy still on after %d copied notifications", zcCopiedLimit)
	}
}
