package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/wire"
)

func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (replay with TANDEM_SEED=%d)", seed, seed)
	return seed
}

// pair starts two instances replicating to each other with sync acks.
func pair(t *testing.T) (a, b *Server) {
	t.Helper()
	replCfg := func(peer string) *replicate.Config {
		d, err := replicate.ParseDestination(peer)
		if err != nil {
			t.Fatal(err)
		}
		return &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{d}, Heartbeat: 50 * time.Millisecond}
	}
	b = testServer(t, t.TempDir(), func(c *Config) { c.Name = "B"; c.Replication = replCfg("A") })
	a = testServer(t, t.TempDir(), func(c *Config) {
		c.Name = "A"
		c.Replication = replCfg("B=" + b.Replicator().Addr().String() + ",sync")
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		sa, sb := a.Stats(), b.Stats()
		if sa.Replication[0].State == "sync" && sb.Replication[0].State == "sync" {
			return a, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("pair not in sync: %+v %+v", sa.Replication, sb.Replication)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition with a deadline
	}
}

type msgKey struct{ pub, pubSeq uint64 }

// A subscriber that read part of the stream on A resumes on B from its
// per-origin and per-publisher progress and gets exactly what it had not
// seen, although B interleaves the two publishers differently.
func TestResumeOnOtherInstanceOfSyncPair(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	a, b := pair(t)
	defer a.Close()
	defer b.Close()

	const n = 3000
	pa, pb := dialRaw(t, a), dialRaw(t, b)
	pa.logon("pub-a", 0)
	pb.logon("pub-b", 0)
	for from := uint64(1); from <= n; from += 500 { // both sides publish, interleaved
		pa.publishN("t", "a", from, 500, wire.AckPersisted)
		pb.publishN("t", "b", from, 500, wire.AckPersisted)
	}
	pa.waitAck(wire.AckKindPersisted, n)
	pb.waitAck(wire.AckKindPersisted, n)

	sa := dialRaw(t, a)
	sa.logon("sub-a", 0)
	sa.subscribe(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("t")))
	k := 1 + rng.IntN(2*n-1)
	origins := map[uint64]uint64{}
	pubs := map[uint64]uint64{}
	seen := map[msgKey]bool{}
	for i := 0; i < k; i++ {
		f := sa.nextSkipping(5 * time.Second)
		var d wire.Deliver
		if err := wire.DecodeDeliver(f.Body, &d); err != nil {
			t.Fatal(err)
		}
		v := d.Record
		origins[v.Origin()] = max(origins[v.Origin()], v.OriginSeq())
		pubs[v.Publisher()] = max(pubs[v.Publisher()], v.PubSeq())
		seen[msgKey{v.Publisher(), v.PubSeq()}] = true
	}
	var entries []wire.ResumeEntry
	for id, s := range origins {
		entries = append(entries, wire.ResumeEntry{ID: id, Seq: s, Kind: wire.ResumeOrigin})
	}
	for id, s := range pubs {
		entries = append(entries, wire.ResumeEntry{ID: id, Seq: s, Kind: wire.ResumePublisher})
	}
	t.Logf("saw %d of %d on A, resuming on B", k, 2*n)

	sb := dialRaw(t, b)
	sb.logon("sub-b", 0)
	if ack := sb.subscribe(wire.AppendSubscribeResume(nil, 1, wire.MatchExact, []byte("t"), entries)); ack.Code != 0 {
		t.Fatalf("resume refused: %s %s", ack.Code, ack.Text)
	}
	lastPerPub := map[uint64]uint64{}
	for i := 0; i < 2*n-k; i++ {
		d := sb.nextDelivery(5 * time.Second)
		pub := record.ID(map[byte]string{'a': "pub-a", 'b': "pub-b"}[d.payload[0]])
		key := msgKey{pub, d.pubSeq}
		if seen[key] {
			t.Fatalf("message %s repeated after failover", d.payload)
		}
		if d.pubSeq <= lastPerPub[pub] {
			t.Fatalf("publisher order broken: %s after %d", d.payload, lastPerPub[pub])
		}
		lastPerPub[pub] = d.pubSeq
		seen[key] = true
	}
	if len(seen) != 2*n {
		t.Fatalf("after resume the subscriber has %d distinct messages, want %d", len(seen), 2*n)
	}
	// Nothing more: a live message arrives next, not a stale one.
	pa.publishN("t", "a", n+1, 1, wire.AckPersisted)
	if d := sb.nextDelivery(5 * time.Second); d.payload != fmt.Sprint("a", n+1) {
		t.Fatalf("after the resumed stream: %+v", d)
	}
}

// positionAt: per origin, the last originSeq stored before the start, for
// the instance's own stream and for a replicated origin interleaved with
// it, and nothing for an origin that starts after it.
func TestPositionAt(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("own", 0)
	mk := func(origin uint64, originSeq, pubSeq uint64) record.View {
		h := record.Header{Seq: 1, Time: 1, Origin: origin, Publisher: record.ID("far"), PubSeq: pubSeq, OriginSeq: originSeq}
		v, _, err := record.Parse(record.Append(nil, &h, []byte("t"), []byte("x")))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	far, late := record.ID("far-instance"), record.ID("late-instance")
	var pub uint64
	for round := uint64(1); round <= 100; round++ { // own, far, far, own, ...
		c.publishN("t", "m", round, 1, wire.AckPersisted)
		c.waitAck(wire.AckKindPersisted, round)
		for k := uint64(0); k < 2; k++ {
			pub++
			if _, err := s.StoreReplicated([]record.View{mk(far, pub, pub)}, far); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub++
	if _, err := s.StoreReplicated([]record.View{mk(late, 1, pub)}, late); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return s.Journal().SyncedSeq() == s.Journal().LastSeq() })
	// Local seqs: round r has own at 3r-2, far at 3r-1 and 3r; late at 301.
	for _, from := range []uint64{1, 2, 3, 4, 150, 151, 299, 301, 302} {
		got := map[uint64]uint64{}
		for _, e := range s.positionAt(from) {
			got[e.Origin] = e.OriginSeq
		}
		wantFar := uint64(0)
		for r := uint64(1); r <= 100; r++ {
			for k := uint64(0); k < 2; k++ {
				if 3*r-1+k < from {
					wantFar = 2*(r-1) + k + 1
				}
			}
		}
		if got[s.idx.self] != from-1 || got[far] != wantFar {
			t.Errorf("from %d: own %d far %d, want %d and %d", from, got[s.idx.self], got[far], from-1, wantFar)
		}
		if l, ok := got[late]; (from > 301) != ok || ok && l != 1 {
			t.Errorf("from %d: late origin %d %v", from, l, ok)
		}
	}
}
