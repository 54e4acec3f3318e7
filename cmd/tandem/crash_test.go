package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
)

// The crash test's names: one instance, one publisher, one subscriber.
const (
	crashInstance  = "crash"
	crashPublisher = "crash-pub"
	crashSubName   = "crash-sub"
	crashSegment   = 1 << 20 // the smallest segment: crashes also hit segment rollover

	crashRoundsPerDir = 5 // rounds that share (and keep recovering) one data directory
)

// TestKillDashNineLosesNothingAcknowledged runs `tandem serve` as a separate
// process, kills it with SIGKILL at a random moment while a client publishes
// as fast as it can with persisted acks, restarts it on the same data
// directory and checks that
//
//   - the LastPubSeq reported at logon covers every persisted ack the
//     publisher received (and nothing it never sent);
//   - an Epoch subscription delivers pubSeq 1..LastPubSeq exactly once, in
//     order, with the right topic and payload, at consecutive journal seqs,
//     and the instance stores nothing else;
//   - the journal continues after the torn tail: messages published after
//     the restart are persisted and delivered live after the old ones.
//
// Up to five consecutive rounds share a data directory, so later rounds also
// recover journals that were recovered (and appended to) before. Each round ends with
// SIGTERM or (idle) SIGKILL at random. TANDEM_CRASH_SEED fixes the seed,
// TANDEM_CRASH_ROUNDS the number of rounds (default 5).
func TestKillDashNineLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TANDEM_CRASH_SEED=%q: %v", s, err)
		}
		seed = v
	}
	rounds := 5
	if s := os.Getenv("TANDEM_CRASH_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("TANDEM_CRASH_ROUNDS=%q: want a positive integer", s)
		}
		rounds = v
	}
	t.Logf("seed %d (rerun with TANDEM_CRASH_SEED=%d), %d rounds", seed, seed, rounds)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	var (
		dir    string
		stored uint64 // messages the journal holds at the end of the previous round
	)
	for r := 1; r <= rounds; r++ {
		if (r-1)%crashRoundsPerDir == 0 {
			// A fresh journal now and then keeps the replay each round
			// verifies (everything stored so far) bounded.
			dir, stored = t.TempDir(), 0
		}
		rs := splitmix(seed + uint64(r)*0x9e3779b97f4a7c15)
		rng := rand.New(rand.NewPCG(rs, seed))
		start := time.Now()
		stored = crashRound(t, ctx, dir, r, rs, rng, stored)
		t.Logf("round %d: done in %v, journal holds %d messages", r, time.Since(start).Round(time.Millisecond), stored)
		if t.Failed() {
			t.Fatalf("round %d failed (seed %d, round seed %d)", r, seed, rs)
		}
	}
}

// crashRound runs one kill / restart / verify / extend round and returns how
// many messages the journal holds at its end.
func crashRound(t *testing.T, ctx context.Context, dir string, round int, roundSeed uint64, rng *rand.Rand, stored uint64) uint64 {
	killAfter := 20*time.Millisecond + time.Duration(rng.Int64N(int64(280*time.Millisecond)))
	extra := uint64(500 + rng.IntN(2500))
	gracefulEnd := rng.IntN(2) == 0
	t.Logf("round %d: seed %d, kill %v after the first persisted ack, then %d more messages, end with %s",
		round, roundSeed, killAfter, extra, map[bool]string{true: "SIGTERM", false: "SIGKILL"}[gracefulEnd])

	// Phase 1: publish flat out and kill -9 the server mid-stream.
	srv := startCrashServer(t, dir)
	var (
		ackOK     atomic.Uint64 // highest pubSeq the ack handler reported persisted
		ackOrder  atomic.Value  // string: first out-of-order ack report, if any
		firstAck  = make(chan struct{})
		firstOnce sync.Once
	)
	pub := crashConnect(t, ctx, srv, crashPublisher,
		client.WithAckHandler(func(seq uint64, err error) {
			if err != nil {
				return // the connection's end: not acknowledged
			}
			if prev := ackOK.Load(); seq != prev+1 {
				ackOrder.CompareAndSwap(nil, fmt.Sprintf("ack for %d after %d", seq, prev))
			}
			ackOK.Store(seq)
			firstOnce.Do(func() { close(firstAck) })
		}))
	base := pub.LastPublished()
	if base != stored {
		t.Errorf("round %d: logon reports LastPubSeq %d, the journal held %d when the previous round ended", round, base, stored)
	}
	ackOK.Store(base)

	var published atomic.Uint64 // highest pubSeq Publish accepted
	published.Store(base)
	pubDone := make(chan error, 1)
	go func() {
		var buf []byte
		for seq := base + 1; ; seq++ {
			buf = crashPayload(buf[:0], seq)
			got, err := pub.Publish(ctx, crashTopic(seq), buf)
			if err != nil {
				pubDone <- err
				return
			}
			if got != seq {
				pubDone <- fmt.Errorf("Publish returned pubSeq %d, want %d", got, seq)
				return
			}
			published.Store(seq)
		}
	}()
	select {
	case <-firstAck:
	case err := <-pubDone:
		srv.kill(t)
		t.Fatalf("round %d: publisher stopped before the first ack: %v\nserver log:\n%s", round, err, srv.log())
	case <-time.After(10 * time.Second):
		srv.kill(t)
		t.Fatalf("round %d: no persisted ack within 10s\nserver log:\n%s", round, srv.log())
	}
	killTimer := time.NewTimer(killAfter) // the random kill point, not synchronisation
	select {
	case <-killTimer.C:
	case err := <-pubDone:
		srv.kill(t)
		t.Fatalf("round %d: publisher stopped before the kill: %v\nserver log:\n%s", round, err, srv.log())
	}
	atKill := published.Load()
	srv.kill(t)

	// The client notices the dead socket, fails what is unacknowledged and
	// the publisher's Publish returns.
	select {
	case <-pub.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("round %d: client did not notice the server's death within 10s", round)
	}
	var pubErr error
	select {
	case pubErr = <-pubDone:
	case <-time.After(10 * time.Second):
		t.Fatalf("round %d: Publish still blocked 10s after the connection ended", round)
	}
	switch {
	case errors.Is(pubErr, client.ErrDisconnected):
	default:
		t.Errorf("round %d: publisher ended with %v, want an error matching ErrDisconnected", round, pubErr)
	}
	if err := pub.Err(); !errors.Is(err, client.ErrDisconnected) {
		t.Errorf("round %d: client ended with %v, want an error matching ErrDisconnected", round, err)
	}
	acked := pub.PersistedSeq()
	sent := published.Load()
	pub.Close()
	if s, ok := ackOrder.Load().(string); ok {
		t.Errorf("round %d: ack handler out of order: %s", round, s)
	}
	if ackOK.Load() != acked {
		t.Errorf("round %d: ack handler saw persisted acks up to %d, PersistedSeq says %d", round, ackOK.Load(), acked)
	}
	if acked > sent {
		t.Errorf("round %d: persisted ack %d beyond the last message published (%d)", round, acked, sent)
	}

	// Phase 2: restart on the same directory; everything acknowledged is there.
	srv = startCrashServer(t, dir)
	pub = crashConnect(t, ctx, srv, crashPublisher)
	defer pub.Close()
	last := pub.LastPublished()
	t.Logf("round %d: published %d..%d (%d at the kill), persisted-acked up to %d, recovered up to %d (%d unacked survived)",
		round, base+1, sent, atKill, acked, last, last-acked)
	if last < acked {
		t.Fatalf("round %d: LOST ACKNOWLEDGED MESSAGES: persisted ack up to pubSeq %d, restarted instance holds up to %d\nserver log:\n%s",
			round, acked, last, srv.log())
	}
	if last > sent {
		t.Fatalf("round %d: restarted instance claims pubSeq %d, only %d were published\nserver log:\n%s", round, last, sent, srv.log())
	}
	if acked == base {
		t.Logf("round %d: no ack at all before the kill (weak round)", round)
	}
	for _, l := range strings.Split(srv.log(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Logf("round %d: restart: %s", round, l)
		}
	}

	sub := crashConnect(t, ctx, srv, crashSubName)
	defer sub.Close()
	chk := &crashChecker{publisher: record.ID(crashPublisher), next: 1, progress: make(chan struct{}, 1)}
	s, err := sub.Subscribe(ctx, "crash.", client.Prefix(), client.From(client.Epoch), client.WithHandler(chk.handle))
	if err != nil {
		t.Fatalf("round %d: subscribe: %v", round, err)
	}
	chk.wait(t, s, last, 15*time.Second)
	firstSeq, lastSeq := chk.seqs()
	crashCheckStats(t, ctx, sub, round, "after recovery", last, firstSeq, lastSeq)

	// Phase 3: the journal continues after the torn tail.
	var buf []byte
	for seq := last + 1; seq <= last+extra; seq++ {
		buf = crashPayload(buf[:0], seq)
		got, err := pub.Publish(ctx, crashTopic(seq), buf)
		if err != nil || got != seq {
			t.Fatalf("round %d: publish %d after restart: got %d, %v", round, seq, got, err)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	err = pub.WaitPersisted(wctx, last+extra)
	wcancel()
	if err != nil {
		t.Fatalf("round %d: messages %d..%d published after the restart not persisted: %v\nserver log:\n%s",
			round, last+1, last+extra, err, srv.log())
	}
	chk.wait(t, s, last+extra, 15*time.Second)
	firstSeq, lastSeq = chk.seqs()
	crashCheckStats(t, ctx, sub, round, "after more publishes", last+extra, firstSeq, lastSeq)

	sub.Close()
	pub.Close()
	if gracefulEnd {
		srv.terminate(t)
	} else {
		srv.kill(t)
	}
	return last + extra
}

// crashCheckStats checks that the instance stores exactly the n messages
// delivered, at journal seqs firstSeq..lastSeq.
func crashCheckStats(t *testing.T, ctx context.Context, c *client.Client, round int, when string, n, firstSeq, lastSeq uint64) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := c.Stats(sctx)
	cancel()
	if err != nil {
		t.Fatalf("round %d: stats %s: %v", round, when, err)
	}
	if st.Instance != crashInstance {
		t.Fatalf("round %d: connected to instance %q, want %q (port taken by another server?)", round, st.Instance, crashInstance)
	}
	if st.Stored != n || st.Journal.FirstSeq != firstSeq || st.Journal.LastSeq != lastSeq || st.Journal.SyncedSeq != lastSeq {
		t.Fatalf("round %d: %s: instance stores %d messages, journal seqs %d..%d (synced %d); the subscription read %d at seqs %d..%d",
			round, when, st.Stored, st.Journal.FirstSeq, st.Journal.LastSeq, st.Journal.SyncedSeq, n, firstSeq, lastSeq)
	}
}

// crashChecker verifies an Epoch subscription to everything the one
// publisher stored: pubSeq 1, 2, 3, ... with their topics and payloads, at
// consecutive journal seqs. handle runs on the client's reader goroutine.
type crashChecker struct {
	publisher uint64
	progress  chan struct{} // signalled after every message

	mu       sync.Mutex
	next     uint64 // pubSeq expected next
	firstSeq uint64 // journal seq of pubSeq 1
	lastSeq  uint64 // journal seq of the last message
	err      error  // the first mismatch
	want     []byte
}

func (c *crashChecker) handle(m *client.Message) {
	c.mu.Lock()
	if c.err == nil {
		seq := c.next
		c.want = crashPayload(c.want[:0], seq)
		b := m.Bookmark
		switch {
		case b.Publisher != c.publisher:
			c.err = fmt.Errorf("message after pubSeq %d (journal seq %d) has publisher %x, want %x", seq-1, b.Seq, b.Publisher, c.publisher)
		case b.PubSeq != seq:
			c.err = fmt.Errorf("want pubSeq %d next, got pubSeq %d at journal seq %d (previous at %d)", seq, b.PubSeq, b.Seq, c.lastSeq)
		case c.lastSeq != 0 && b.Seq != c.lastSeq+1:
			c.err = fmt.Errorf("pubSeq %d at journal seq %d, after journal seq %d", seq, b.Seq, c.lastSeq)
		case string(m.Topic) != crashTopic(seq):
			c.err = fmt.Errorf("pubSeq %d has topic %q, want %q", seq, m.Topic, crashTopic(seq))
		case !bytes.Equal(m.Payload, c.want):
			c.err = fmt.Errorf("pubSeq %d has a %d-byte payload %.40q..., want %d bytes %.40q...", seq, len(m.Payload), m.Payload, len(c.want), c.want)
		case m.Time.IsZero() || m.Time.After(time.Now().Add(time.Minute)):
			c.err = fmt.Errorf("pubSeq %d has timestamp %v", seq, m.Time)
		}
		if c.firstSeq == 0 {
			c.firstSeq = b.Seq
		}
		c.lastSeq = b.Seq
		c.next++
	}
	c.mu.Unlock()
	select {
	case c.progress <- struct{}{}:
	default:
	}
}

func (c *crashChecker) seqs() (first, last uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.firstSeq, c.lastSeq
}

// wait returns once pubSeq 1..n have been delivered and checked.
func (c *crashChecker) wait(t *testing.T, s *client.Subscription, n uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		got, err := c.next-1, c.err
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("epoch subscription: %v", err)
		}
		if got >= n {
			return
		}
		select {
		case <-c.progress:
		case <-s.Done():
			t.Fatalf("subscription ended after %d of %d messages: %v", got, n, s.Err())
		case <-deadline.C:
			t.Fatalf("epoch subscription delivered %d of %d messages in %v", got, n, timeout)
		}
	}
}

// crashTopic and crashPayload derive a message from its pubSeq. Payloads
// are 0..199 bytes of filler after "m-<seq>-", and one in 64 is 3000..4999
// bytes, so records straddle pages and batches of varying sizes.
func crashTopic(seq uint64) string {
	return [...]string{"crash.a", "crash.b", "crash.c"}[seq%3]
}

func crashPayload(dst []byte, seq uint64) []byte {
	dst = append(dst, "m-"...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '-')
	h := splitmix(seq)
	n := int(h % 200)
	if (h>>32)%64 == 0 {
		n = 3000 + int((h>>40)%2000)
	}
	for i := 0; i < n; i++ {
		dst = append(dst, byte('a'+(seq+uint64(i))%26))
	}
	return dst
}

func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// crashConnect logs on to srv as name and checks it reached our instance.
func crashConnect(t *testing.T, ctx context.Context, srv *serverProc, name string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithName(name), client.WithDialTimeout(10 * time.Second)}, opts...)
	c, err := client.Connect(ctx, srv.addr, opts...)
	if err != nil {
		t.Fatalf("connect %s to %s: %v\nserver log:\n%s", name, srv.addr, err, srv.log())
	}
	if c.Instance() != crashInstance {
		c.Close()
		t.Fatalf("connected to instance %q at %s, want %q (port taken by another server?)", c.Instance(), srv.addr, crashInstance)
	}
	return c
}

// serverProc is a `tandem serve` subprocess.
type serverProc struct {
	cmd    *exec.Cmd
	addr   string
	exited chan struct{} // closed when Wait returned
	err    error         // Wait's result, set before exited is closed
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (p *serverProc) log() string {
	s := p.stderr.String()
	if len(s) > 8000 {
		s = "...\n" + s[len(s)-8000:]
	}
	return s
}

// startCrashServer starts `tandem serve` on dir at a free port and returns
// once it accepts connections. A port taken meanwhile is retried with
// another.
func startCrashServer(t *testing.T, dir string) *serverProc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p, err := tryStartCrashServer(t, dir)
		if err == nil {
			return p
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("start server (attempt %d): %v", attempt, err)
		}
		t.Logf("start server (attempt %d): %v; retrying on another port", attempt, err)
	}
}

func tryStartCrashServer(t *testing.T, dir string) (*serverProc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return spawnServe(t, addr, "serve", "--engine", testEngine, "--listen", addr, "--data", dir, "--name", crashInstance,
		"--segment-size", strconv.Itoa(crashSegment))
}

// spawnServe starts `tandem args...` and waits until it accepts connections
// at addr (polling that condition, with a deadline). The process is killed
// at the end of the test.
func spawnServe(t *testing.T, addr string, args ...string) (*serverProc, error) {
	p := &serverProc{addr: addr, exited: make(chan struct{}), stderr: &lockedBuffer{}}
	p.cmd = exec.Command(tandemBin, args...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(t) })
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("tandem %v exited before accepting connections (%v):\n%s", args, p.err, p.log())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill(t)
			return nil, fmt.Errorf("tandem %v not accepting connections at %s after 15s:\n%s", args, addr, p.log())
		}
	}
}

// kill sends SIGKILL (if still running) and waits for the process to end.
func (p *serverProc) kill(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("kill server: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("server did not die within 10s of SIGKILL")
	}
}

// terminate sends SIGTERM and expects a clean exit.
func (p *serverProc) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("server exited with %v after SIGTERM\n%s", p.err, p.log())
		}
	case <-time.After(15 * time.Second):
		p.kill(t)
		t.Fatalf("server did not exit within 15s of SIGTERM\n%s", p.log())
	}
}
