package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

func smallSegments(c *Config) { c.Journal.SegmentSize = 64 << 10 }

// openNoStart runs New (journal recovery and rebuild) without serving.
func openNoStart(t *testing.T, dir string, mod ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Name: "test", Listen: "127.0.0.1:0", DataDir: dir, Loops: 1, Engine: testEngine,
		Journal: journal.Options{SegmentSize: 4 << 20},
		Logger:  discardLogger(),
	}
	for _, f := range mod {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// fillMixed stores a mix the index must get right: client publishes (this
// instance's origin), replicated records of two other origins from several
// publishers with pubSeqs out of order and with gaps, a few duplicates,
// several topics, over many segments. It returns the records stored.
func fillMixed(t *testing.T, s *Server, rng *rand.Rand) uint64 {
	t.Helper()
	c := dialRaw(t, s)
	c.logon("local-pub", 0)
	c.publishN("local/a", "x", 1, 1500, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 1500)
	c.c.Close()

	originSeq := map[string]uint64{}
	pubNext := map[string]uint64{}
	var batch []record.View
	for i := 0; i < 6000; i++ {
		origin := []string{"B", "C"}[rng.IntN(2)]
		pub := fmt.Sprintf("pub%d", rng.IntN(5))
		ps := pubNext[pub] + 1
		switch r := rng.IntN(20); {
		case r == 0 && ps > 3:
			ps -= uint64(1 + rng.IntN(3)) // a late copy or a gap fill
		case r == 1:
			ps += uint64(1 + rng.IntN(4)) // leaves a gap
		}
		if ps > pubNext[pub] {
			pubNext[pub] = ps
		}
		originSeq[origin]++
		h := record.Header{Seq: originSeq[origin], Time: int64(i), Origin: record.ID(origin), Publisher: record.ID(pub),
			PubSeq: ps, OriginSeq: originSeq[origin]}
		topic := fmt.Sprintf("rep/%d", rng.IntN(4))
		b := record.Append(nil, &h, []byte(topic), fmt.Appendf(nil, "%s-%d-%s", pub, ps, strings.Repeat("p", rng.IntN(100))))
		v, _, err := record.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, v)
		if len(batch) == 50 {
			if _, err := s.StoreReplicated(batch, record.ID(origin)); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := s.StoreReplicated(batch, record.ID("B")); err != nil {
		t.Fatal(err)
	}
	return s.j.LastSeq()
}

// A restart from a checkpoint rebuilds exactly the index a replay of every
// record does (publisher ranges, digest windows, ooo/last locals, origin
// samples, topic counts, stored), replaying only the records after the
// checkpoint's state.
func TestRebuildFromCheckpointMatchesFullReplay(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	dir := t.TempDir()
	// One epoch for every start: the two rebuilds are compared field by
	// field (TestRestartIsANewOriginEpoch covers epochs).
	smallSegments := func(c *Config) { smallSegments(c); c.Epoch = 99 }
	s := testServer(t, dir, smallSegments)
	last := fillMixed(t, s, rng)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	a := openNoStart(t, dir, smallSegments)
	segs := a.j.Stats().Segments
	if got := a.j.Stats().CheckpointedSegments; got != segs-1 {
		t.Fatalf("journal trusted %d of %d sealed segments", got, segs-1)
	}
	// Close wrote the last rotation's checkpoint with the state as of
	// then, so at most the records after that are replayed.
	if uint64(a.replayed) >= last/4 {
		t.Fatalf("rebuild replayed %d of %d records: want only the tail after the checkpoint", a.replayed, last)
	}
	// A few more records, without a rotation (so no newer state): the next
	// start replays exactly those on top of the state.
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, a)
	c.logon("late-pub", 0)
	c.publishN("late", "y", 1, 20, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 20)
	rotated := a.j.Stats().Rotations > 0
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openNoStart(t, dir, smallSegments)
	if !rotated && a.replayed < 20 {
		t.Fatalf("rebuild replayed %d records, want at least the 20 after the last checkpoint", a.replayed)
	}
	last = a.j.LastSeq()
	stateA := a.idx.appendState(nil)
	idxA := a.idx
	a.Close()

	b := openNoStart(t, dir, smallSegments, func(c *Config) { c.Journal.VerifyAll = true })
	if uint64(b.replayed) != last {
		t.Fatalf("VerifyAll rebuild replayed %d records, want all %d", b.replayed, last)
	}
	idxB := b.idx
	stateB := b.idx.appendState(nil)
	b.Close()

	if len(idxB.publishers) < 7 || len(idxB.origins) != 2 || len(idxB.topics) != 6 {
		t.Fatalf("test data too simple: %d publishers, %d origins, %d topics", len(idxB.publishers), len(idxB.origins), len(idxB.topics))
	}
	if !reflect.DeepEqual(idxA, idxB) {
		for id, p := range idxB.publishers {
			if !reflect.DeepEqual(p, idxA.publishers[id]) {
				t.Errorf("publisher %016x:\ncheckpoint %+v\nfull       %+v", id, idxA.publishers[id], p)
			}
		}
		for id, o := range idxB.origins {
			if !reflect.DeepEqual(o, idxA.origins[id]) {
				t.Errorf("origin %016x differs", id)
			}
		}
		t.Fatalf("index from the checkpoint differs from a full replay (stored %d vs %d, selfLast %d vs %d)",
			idxA.stored.Load(), idxB.stored.Load(), idxA.selfLast, idxB.selfLast)
	}
	if !bytes.Equal(stateA, stateB) {
		t.Fatal("equal indexes encode differently")
	}
}

// The state round-trips, and a corrupt, foreign or other-version state is
// refused with an error (rebuild then replays everything).
func TestIndexStateDecode(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	dir := t.TempDir()
	s := testServer(t, dir, smallSegments)
	fillMixed(t, s, rng)
	s.j.Lock()
	st := s.idx.appendState(nil)
	idx := s.idx
	for _, p := range idx.publishers {
		p.conflictLogged = false // a log-once flag of this process, not state
	}
	s.j.Unlock()
	defer s.Close()
	x, err := decodeIndexState(st, idx.instance, idx.self)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x.publishers, idx.publishers) || !reflect.DeepEqual(x.origins, idx.origins) ||
		!reflect.DeepEqual(x.topics, idx.topics) || x.selfLast != idx.selfLast || x.selfFirst != idx.selfFirst || x.selfCount != idx.selfCount || x.stored.Load() != idx.stored.Load() {
		t.Fatal("decoded state differs")
	}
	if _, err := decodeIndexState(st, idx.instance+1, idx.self); !errors.Is(err, errIndexState) {
		t.Fatalf("other instance: %v", err)
	}
	bad := append([]byte(nil), st...)
	bad[0]++
	if _, err := decodeIndexState(bad, idx.instance, idx.self); !errors.Is(err, errIndexState) {
		t.Fatalf("other version: %v", err)
	}
	for _, n := range []int{0, 3, 20, len(st) / 2, len(st) - 1} {
		if _, err := decodeIndexState(st[:n], idx.instance, idx.self); !errors.Is(err, errIndexState) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := decodeIndexState(append(st, 0), idx.instance, idx.self); !errors.Is(err, errIndexState) {
		t.Fatalf("trailing byte: %v", err)
	}
}

// Renamed instance: the checkpointed state (of another origin id) is not
// used; rebuild replays everything and de-duplication still works.
func TestRebuildIgnoresStateOfOtherInstance(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	dir := t.TempDir()
	s := testServer(t, dir, smallSegments)
	last := fillMixed(t, s, rng)
	s.Close()
	b := openNoStart(t, dir, smallSegments, func(c *Config) { c.Name = "renamed" })
	defer b.Close()
	if uint64(b.replayed) != last {
		t.Fatalf("replayed %d of %d records", b.replayed, last)
	}
}

// The digest is stable across processes (it is stored in checkpoints): it
// depends only on topic and payload, separates the two, and is never 0.
func TestMessageDigestStable(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
	seen := map[uint64]string{}
	for i := 0; i < 20000; i++ {
		topic := make([]byte, rng.IntN(40))
		payload := make([]byte, rng.IntN(300))
		for k := range topic {
			topic[k] = byte(rng.Uint32())
		}
		for k := range payload {
			payload[k] = byte(rng.Uint32())
		}
		d := messageDigest(topic, payload)
		if d == 0 || d != messageDigest(append([]byte(nil), topic...), append([]byte(nil), payload...)) {
			t.Fatalf("digest %x not stable", d)
		}
		key := string(topic) + "\x00" + string(payload)
		if prev, ok := seen[d]; ok && prev != key {
			t.Fatalf("collision between %q and %q", prev, key)
		}
		seen[d] = key
	}
	if messageDigest([]byte("ab"), []byte("c")) == messageDigest([]byte("a"), []byte("bc")) {
		t.Fatal("topic/payload boundary not part of the digest")
	}
	// A one-byte change anywhere in a 128-byte payload changes it.
	p := bytes.Repeat([]byte{7}, 128)
	base := messageDigest([]byte("t"), p)
	for i := range p {
		q := append([]byte(nil), p...)
		q[i] ^= 1
		if messageDigest([]byte("t"), q) == base {
			t.Fatalf("flipping byte %d does not change the digest", i)
		}
	}
	// Same value in another process: the test binary run again.
	if os.Getenv("TANDEM_DIGEST_CHILD") != "" {
		fmt.Printf("digest=%x\n", messageDigest([]byte("topic"), []byte("payload")))
		return
	}
	out := runSelf(t, "TestMessageDigestStable", "TANDEM_DIGEST_CHILD=1")
	if want := fmt.Sprintf("digest=%x", messageDigest([]byte("topic"), []byte("payload"))); !strings.Contains(out, want) {
		t.Fatalf("child process computed another digest: %q, want %q", out, want)
	}
}

// Start-up ordering: nothing listens on the client port while the
// journal is recovered and the index rebuilt (New); Start binds it once
// they are done, so a client either cannot connect (refused: try the
// other instance, or again) or is served at once, never left waiting.
func TestClientPortClosedUntilStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	s := openNoStart(t, dir, func(c *Config) { c.Listen = addr })
	defer s.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("client port accepts connections before Start")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial before Start: %v, want connection refused", err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, s)
	c.logon("after-start", 0)
}

func runSelf(t *testing.T, test string, env ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(exe), err, out)
	}
	return string(out)
}

// Every start is a new origin epoch: what the previous run published is an
// identity stream of the index (local seq == originSeq), the same from a
// checkpoint's state as from a full replay, and a subscriber's progress in
// it maps to the right start.
func TestRestartIsANewOriginEpoch(t *testing.T) {
	dir := t.TempDir()
	s := testServer(t, dir, smallSegments, func(c *Config) { c.Epoch = 1 })
	c := dialRaw(t, s)
	c.logon("p", 0)
	c.publishN("t", "x", 1, 300, wire.AckPersisted)
	c.waitAck(wire.AckKindPersisted, 300)
	jid := s.j.ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	old := record.OriginEpochID("test", jid, 1)
	for _, mod := range []func(*Config){
		func(c *Config) { smallSegments(c); c.Epoch = 2 },
		func(c *Config) { smallSegments(c); c.Epoch = 2; c.Journal.VerifyAll = true },
	} {
		a := openNoStart(t, dir, mod)
		if a.origin != record.OriginEpochID("test", jid, 2) || a.origin == old {
			t.Fatalf("origin %016x: not the new epoch's", a.origin)
		}
		o := a.idx.origins[old]
		if o == nil || !o.identity || o.first != 1 || o.last != 300 || o.count != 300 {
			t.Fatalf("previous run's stream: %+v", o)
		}
		f := &resumeFilter{origins: []wire.PositionEntry{{Origin: old, OriginSeq: 120}}, publishers: map[uint64]uint64{}}
		if got := a.resumeStart(f); got != 121 {
			t.Fatalf("resume after originSeq 120 of the previous run starts at %d, want 121", got)
		}
		f.origins[0].OriginSeq = 300
		if got := a.resumeStart(f); got != a.j.LastSeq()+1 {
			t.Fatalf("resume after everything starts at %d, want %d", got, a.j.LastSeq()+1)
		}
		// A subscription starting at seq 101 had everything of the previous
		// run before it: the Position says so exactly.
		found := false
		for _, e := range a.positionAt(101) {
			if e.Origin == old {
				found = true
				if e.OriginSeq != 100 {
					t.Fatalf("position at 101 of the previous run's stream: %d, want 100", e.OriginSeq)
				}
			}
		}
		if !found {
			t.Fatalf("position at 101 lacks the previous run's stream: %+v", a.positionAt(101))
		}
		a.Close()
	}
}
