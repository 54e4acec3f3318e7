package main

import (
	"context"
	"fmt"
	"github.com/tandemhq/tandem/internal/testnet"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// Multi-process replication tests: `tandem serve` instances replicating to
// each other on loopback, killed with SIGKILL under load and restarted.

func replSeed(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TANDEM_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with TANDEM_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x5bd1e995))
}

// loopbackAddr is an address an instance restarts on: below the
// ephemeral range (internal/testnet), so no outgoing connection's local end
// takes it while the instance is down (a restarted A's clients were reset:
// TestReplSyncAckSurvivesSourceKill).
func loopbackAddr(t *testing.T) string { return testnet.FreeAddr(t) }

// replInstance is one instance's fixed identity: name, addresses, data
// directory and peers, so it can be killed and restarted as the same one.
type replInstance struct {
	name, listen, repl, dir string
	args                    []string
	proc                    *serverProc
}

func newReplInstance(t *testing.T, name string, args ...string) *replInstance {
	return &replInstance{name: name, listen: loopbackAddr(t), repl: loopbackAddr(t), dir: t.TempDir(), args: args}
}

func (in *replInstance) start(t *testing.T, secretFile string) {
	t.Helper()
	p := &serverProc{addr: in.listen, exited: make(chan struct{}), stderr: &lockedBuffer{}}
	args := append([]string{"serve", "--engine", testEngine, "--name", in.name, "--listen", in.listen, "--data", in.dir, "--loops", "1",
		"--segment-size", strconv.Itoa(1 << 20), "--repl-listen", in.repl, "--repl-secret-file", secretFile,
		"--repl-heartbeat", "100ms"}, in.args...)
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
	in.proc = p
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", in.listen, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before accepting connections (%v):\n%s", in.name, p.err, p.log())
		case <-time.After(5 * time.Millisecond): // polling a condition with a deadline
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting connections at %s after 15s:\n%s", in.name, in.listen, p.log())
		}
	}
}

func (in *replInstance) connect(t *testing.T, ctx context.Context, name string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithName(name), client.WithDialTimeout(10 * time.Second)}, opts...)
	c, err := client.Connect(ctx, in.listen, opts...)
	if err != nil {
		t.Fatalf("connect %s to %s: %v\n%s", name, in.name, err, in.proc.log())
	}
	if c.Instance() != in.name {
		c.Close()
		t.Fatalf("reached instance %q at %s, want %s", c.Instance(), in.listen, in.name)
	}
	return c
}

func (in *replInstance) stats(t *testing.T, ctx context.Context) *wire.Stats {
	t.Helper()
	c := in.connect(t, ctx, fmt.Sprintf("stat-%d", rand.Uint64()))
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := c.Stats(sctx)
	if err != nil {
		t.Fatalf("stats of %s: %v", in.name, err)
	}
	return st
}

func replWait(t *testing.T, d time.Duration, what string, cond func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s%s", d, what, diag())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

type replKey struct{ publisher, pubSeq uint64 }

// readAll returns how many times each (publisher, pubSeq) is stored on in,
// read with an Epoch subscription to every topic (the instance must be
// quiet: it reads as many messages as stat says are stored).
func (in *replInstance) readAll(t *testing.T, ctx context.Context) map[replKey]int {
	t.Helper()
	want := in.stats(t, ctx).Stored
	c := in.connect(t, ctx, fmt.Sprintf("reader-%d", rand.Uint64()))
	defer c.Close()
	var mu sync.Mutex
	got := map[replKey]int{}
	var n atomic.Uint64
	progress := make(chan struct{}, 1)
	_, err := c.Subscribe(ctx, "r.", client.Prefix(), client.From(client.Epoch), client.WithHandler(func(m *client.Message) {
		mu.Lock()
		got[replKey{m.Bookmark.Publisher, m.Bookmark.PubSeq}]++
		mu.Unlock()
		n.Add(1)
		select {
		case progress <- struct{}{}:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for n.Load() < want {
		select {
		case <-progress:
		case <-deadline.C:
			t.Fatalf("%s: read %d of %d stored messages", in.name, n.Load(), want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// loadPublisher publishes r.<i%4> messages with persisted acks at a steady
// rate until stopped or its connection dies; acked is its persisted ack.
type loadPublisher struct {
	c    *client.Client
	name string
	done chan error
	stop chan struct{}
}

func startLoad(t *testing.T, ctx context.Context, in *replInstance, name string) *loadPublisher {
	lp := &loadPublisher{name: name, done: make(chan error, 1), stop: make(chan struct{})}
	lp.c = in.connect(t, ctx, name)
	t.Cleanup(func() { lp.c.Close() })
	go func() {
		tick := time.NewTicker(2 * time.Millisecond) // pacing: about 10k msgs/s
		defer tick.Stop()
		for s := lp.c.LastPublished() + 1; ; s++ {
			if s%20 == 0 {
				select {
				case <-lp.stop:
					lp.done <- lp.c.Flush(ctx)
					return
				case <-tick.C:
				}
			}
			if _, err := lp.c.Publish(ctx, "r."+strconv.FormatUint(s%4, 10), []byte(name+"/"+strconv.FormatUint(s, 10))); err != nil {
				lp.done <- err
				return
			}
		}
	}()
	return lp
}

func (lp *loadPublisher) finish(t *testing.T) {
	t.Helper()
	close(lp.stop)
	if err := <-lp.done; err != nil {
		t.Fatalf("%s: %v", lp.name, err)
	}
}

func writeSecret(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("multi-process-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// tryStats is stats without failing the test: the error, for a condition
// polled right after a restart. (A restarted io_uring instance sometimes
// resets the first client connections it accepts: a known issue, see the
// closing note of the state-machine round; the polling tolerates it, the
// test's assertions do not.)
func (in *replInstance) tryStats(ctx context.Context) (*wire.Stats, error) {
	c, err := client.Connect(ctx, in.listen, client.WithName(fmt.Sprintf("stat-%d", rand.Uint64())), client.WithDialTimeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Stats(sctx)
}

func destState(st *wire.Stats, peer string) wire.DestinationStats {
	for _, d := range st.Replication {
		if d.Name == peer {
			return d
		}
	}
	return wire.DestinationStats{}
}

// checkConverged waits until both instances are quiet and hold the same
// messages, then checks each holds every publisher's 1..last exactly once
// (last >= the highest persisted ack it ever received).
func checkConverged(t *testing.T, ctx context.Context, a, b *replInstance, acked map[string]uint64) {
	t.Helper()
	var sa, sb *wire.Stats
	replWait(t, 20*time.Second, "the pair to converge", func() bool {
		sa, sb = a.stats(t, ctx), b.stats(t, ctx)
		da, db := destState(sa, b.name), destState(sb, a.name)
		return sa.Stored == sb.Stored && da.Connected && db.Connected &&
			da.AckedThrough == sa.Journal.LastSeq && db.AckedThrough == sb.Journal.LastSeq &&
			sa.Journal.SyncedSeq == sa.Journal.LastSeq && sb.Journal.SyncedSeq == sb.Journal.LastSeq
	}, func() string {
		return fmt.Sprintf("\n%s: stored %d %+v\n%s: stored %d %+v", a.name, sa.Stored, sa.Replication, b.name, sb.Stored, sb.Replication)
	})
	ma, mb := a.readAll(t, ctx), b.readAll(t, ctx)
	for _, side := range []struct {
		in *replInstance
		m  map[replKey]int
	}{{a, ma}, {b, mb}} {
		last := map[uint64]uint64{}
		for k, n := range side.m {
			if n != 1 {
				t.Fatalf("%s stores %x/%d %d times", side.in.name, k.publisher, k.pubSeq, n)
			}
			last[k.publisher] = max(last[k.publisher], k.pubSeq)
		}
		for name, ack := range acked {
			id := record.ID(name)
			if last[id] < ack {
				t.Fatalf("%s holds %s's messages up to %d, but %d was acknowledged as persisted", side.in.name, name, last[id], ack)
			}
			for s := uint64(1); s <= last[id]; s++ {
				if side.m[replKey{id, s}] != 1 {
					t.Fatalf("%s lacks %s's pubSeq %d (holds up to %d)", side.in.name, name, s, last[id])
				}
			}
		}
		if len(side.m) != len(ma) {
			t.Fatalf("%s holds %d messages, %s %d", side.in.name, len(side.m), a.name, len(ma))
		}
	}
	for k := range ma {
		if mb[k] != 1 {
			t.Fatalf("%x/%d on %s, not on %s", k.publisher, k.pubSeq, a.name, b.name)
		}
	}
	t.Logf("converged: %d messages on both", len(ma))
}

// TestReplSyncAckSurvivesSourceKill: a publisher's persisted ack in sync
// mode means the message is on both instances' disks. The source is
// killed with SIGKILL from the ack handler, the moment a persisted ack
// arrives; the destination (still running) must hold every acknowledged
// message. The source then restarts on its journal and the pair converges.
func TestReplSyncAckSurvivesSourceKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	rng := replSeed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	secret := writeSecret(t)
	b := newReplInstance(t, "B", "--peer", "A")
	// A long downgrade age: the destination must stay sync, so every ack waits for it.
	a := newReplInstance(t, "A", "--peer", "B="+b.repl+",sync", "--repl-downgrade-after", "1m")
	b.start(t, secret)
	a.start(t, secret)
	acked := map[string]uint64{}
	for round := 1; round <= 8; round++ {
		var lastErr error
		replWait(t, 10*time.Second, "A's destination B sync", func() bool {
			st, err := a.tryStats(ctx)
			if err != nil {
				lastErr = err
				return false
			}
			return destState(st, "B").State == "sync"
		}, func() string { return fmt.Sprintf(" (last stat error: %v)\n%s", lastErr, a.proc.log()) })
		threshold := uint64(200 + rng.IntN(3000))
		name := fmt.Sprintf("src-pub-%d", round)
		var killedAt atomic.Uint64
		proc := a.proc
		var pub *client.Client
		pub = a.connect(t, ctx, name, client.WithAckHandler(func(seq uint64, err error) {
			if err == nil && seq >= threshold && killedAt.Load() == 0 {
				killedAt.Store(seq)
				proc.cmd.Process.Kill() // right after the ack, before anything else
			}
		}))
		lp := &loadPublisher{c: pub, name: name, done: make(chan error, 1), stop: make(chan struct{})}
		go func() {
			for s := uint64(1); ; s++ {
				if _, err := pub.Publish(ctx, "r."+strconv.FormatUint(s%4, 10), []byte(name)); err != nil {
					lp.done <- err
					return
				}
			}
		}()
		select {
		case <-lp.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: publisher still running 20s later; killed at %d", round, killedAt.Load())
		}
		<-proc.exited
		pub.Close()
		k := killedAt.Load()
		if k == 0 {
			t.Fatalf("round %d: publisher ended before ack %d:\n%s", round, threshold, proc.log())
		}
		// B is untouched: read it now.
		m := b.readAll(t, ctx)
		id := record.ID(name)
		for s := uint64(1); s <= k; s++ {
			if m[replKey{id, s}] != 1 {
				t.Fatalf("round %d: A acknowledged %s's pubSeq %d as persisted (sync) and was killed; B holds it %d times",
					round, name, s, m[replKey{id, s}])
			}
		}
		t.Logf("round %d: killed A at ack %d; B holds all of them", round, k)
		acked[name] = k
		a.start(t, secret)
	}
	checkConverged(t, ctx, a, b, acked)
}

// TestReplKillDestinationAndSource: a hot-hot sync pair (each dials the
// other) with a publisher on each side under steady load. B is killed
// with SIGKILL: A's publisher keeps getting persisted acks; B restarts,
// its publisher reconnects and continues after what B recovered (which
// covers everything acknowledged). Then the same for A. At the end both
// hold the same messages, each exactly once, nothing acknowledged lost.
func TestReplKillDestinationAndSource(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	rng := replSeed(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	secret := writeSecret(t)
	a := newReplInstance(t, "A")
	b := newReplInstance(t, "B")
	timing := []string{"--repl-downgrade-after", "500ms", "--repl-upgrade-below", "100ms"}
	a.args = append([]string{"--peer", "B=" + b.repl + ",sync"}, timing...)
	b.args = append([]string{"--peer", "A=" + a.repl + ",sync"}, timing...)
	a.start(t, secret)
	b.start(t, secret)
	for _, p := range []struct{ from, to *replInstance }{{a, b}, {b, a}} {
		replWait(t, 10*time.Second, p.from.name+"'s destination sync", func() bool {
			return destState(p.from.stats(t, ctx), p.to.name).State == "sync"
		}, func() string { return "\n" + p.from.proc.log() })
	}
	pubs := map[string]*loadPublisher{"pa": startLoad(t, ctx, a, "pa"), "pb": startLoad(t, ctx, b, "pb")}
	acked := map[string]uint64{}
	for _, victim := range []struct {
		in, other     *replInstance
		pub, otherPub string
	}{{b, a, "pb", "pa"}, {a, b, "pa", "pb"}, {b, a, "pb", "pa"}, {a, b, "pa", "pb"}} {
		// Let the load run a little, then kill.
		target := pubs[victim.pub].c.PersistedSeq() + uint64(300+rng.IntN(2000))
		replWait(t, 10*time.Second, "acks before the kill", func() bool { return pubs[victim.pub].c.PersistedSeq() >= target },
			func() string { return "\n" + victim.in.proc.log() })
		victim.in.proc.kill(t)
		<-pubs[victim.pub].done // the connection died
		acked[victim.pub] = max(acked[victim.pub], pubs[victim.pub].c.PersistedSeq())
		// The survivor's publisher keeps getting persisted acks: its sync
		// destination is down, hence downgraded.
		other := pubs[victim.otherPub].c
		p0 := other.PersistedSeq()
		replWait(t, 10*time.Second, victim.otherPub+"'s acks with its peer dead", func() bool { return other.PersistedSeq() >= p0+500 },
			func() string { return fmt.Sprintf("\n%+v", victim.other.stats(t, ctx).Replication) })
		if d := destState(victim.other.stats(t, ctx), victim.in.name); d.State != "downgraded" || d.Connected {
			t.Fatalf("%s's destination %s while it is dead: %+v", victim.other.name, victim.in.name, d)
		}
		victim.in.start(t, secret)
		np := startLoad(t, ctx, victim.in, victim.pub)
		if last := np.c.LastPublished(); last < acked[victim.pub] {
			t.Fatalf("LOST ACKNOWLEDGED MESSAGES: %s restarted holding %s up to %d, %d was acknowledged",
				victim.in.name, victim.pub, last, acked[victim.pub])
		}
		t.Logf("%s killed: %s acked up to %d, %s recovered up to %d", victim.in.name, victim.pub, acked[victim.pub], victim.in.name, np.c.LastPublished())
		pubs[victim.pub] = np
	}
	for name, lp := range pubs {
		lp.finish(t)
		acked[name] = max(acked[name], lp.c.PersistedSeq())
	}
	checkConverged(t, ctx, a, b, acked)
}
