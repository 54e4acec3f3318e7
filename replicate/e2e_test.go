package replicate_test

import (
	"context"
	"fmt"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

var topicSet = []string{"px.eu", "px.us", "orders.eu", "orders.usa", "orders.toolong", "fills.eu"}

// TestHotHotPairTwoWaySync: two instances replicating to each other with
// sync acknowledgment over one connection, two publishers on each side
// publishing concurrently. Both journals end with the same set of
// messages, each exactly once, every publisher's in order, with origin and
// via telling where each was published.
func TestHotHotPairTwoWaySync(t *testing.T) {
	rng := testSeed(t)
	ctx := testCtx(t, 30*time.Second)
	b := startNode(t, "B", nodeOpts{}, "A")
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+b.repl+",sync")
	a.waitState(t, "B", "sync", 5*time.Second)
	b.waitState(t, "A", "sync", 5*time.Second)

	var plans []pubPlan
	for i, to := range []*node{a, a, b, b} {
		plans = append(plans, pubPlan{name: fmt.Sprintf("p%d-%s", i, to.name), to: to, n: 600 + rng.IntN(900), topics: topicSet})
	}
	want, origins := map[msgKey]msgBody{}, map[uint64]string{}
	for _, p := range plans {
		expected(want, origins, p, uint64(p.n))
	}
	publishAll(t, ctx, plans, nil)
	total := uint64(len(want))
	waitQuiet(t, 15*time.Second, map[*node]uint64{a: total, b: total}, a, b)
	checkExactly(t, a, want, origins)
	checkExactly(t, b, want, origins)
	if la, ra, da, ok := a.srv.Replicator().LinkInfo("B"); !ok {
		t.Fatal("A has no link to B")
	} else if lb, rb, db, ok := b.srv.Replicator().LinkInfo("A"); !ok || la != rb || ra != lb || da != "A" || db != "A" {
		t.Fatalf("A's link %s->%s (dialed by %s), B's link %s->%s (dialed by %s): not one connection", la, ra, da, lb, rb, db)
	}
	t.Logf("%d messages; duplicates A %d B %d", total, a.stats().Duplicates, b.stats().Duplicates)
}

// TestSyncAckMeansOnPeerDisk: in sync mode a publisher's persisted ack
// implies the message is durable on the peer: right after WaitPersisted
// (and after Flush) the peer's journal, read up to its SyncedSeq, holds
// every message acknowledged so far. Both directions of a pair.
func TestSyncAckMeansOnPeerDisk(t *testing.T) {
	rng := testSeed(t)
	ctx := testCtx(t, 30*time.Second)
	// A generous downgrade age: the destination must stay sync throughout,
	// or the acks would (rightly) stop waiting for it.
	o := nodeOpts{heartbeat: 250 * time.Millisecond, downgrade: time.Minute}
	b := startNode(t, "B", o, "A")
	o.listen = "-"
	a := startNode(t, "A", o, "B="+b.repl)
	a.waitState(t, "B", "sync", 5*time.Second)
	b.waitState(t, "A", "sync", 5*time.Second)

	for _, dir := range []struct{ from, to *node }{{a, b}, {b, a}} {
		name := "acker-" + dir.from.name
		c, err := client.Connect(ctx, dir.from.srv.Addr().String(), client.WithName(name))
		if err != nil {
			t.Fatal(err)
		}
		id := record.ID(name)
		var last uint64
		for round := 0; round < 12; round++ {
			k := 1 + rng.IntN(250)
			for i := 0; i < k; i++ {
				if last, err = c.Publish(ctx, "sync.t", []byte(payloadFor(name, last+1))); err != nil {
					t.Fatal(err)
				}
			}
			if round%2 == 0 {
				err = c.WaitPersisted(ctx, last)
			} else {
				err = c.Flush(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			// No waiting: the ack already implies it is on the peer's disk.
			have := map[uint64]bool{}
			for _, m := range readJournal(t, dir.to.srv) {
				if m.key.publisher == id {
					have[m.key.pubSeq] = true
				}
			}
			for s := uint64(1); s <= last; s++ {
				if !have[s] {
					t.Fatalf("%s acknowledged pubSeq %d as persisted (sync to %s), but %s's durable journal lacks it "+
						"(holds %d of %d); %s logged %d downgrades",
						dir.from.name, s, dir.to.name, dir.to.name, len(have), last, dir.from.name,
						dir.from.logs.count("downgraded"))
				}
			}
		}
		c.Close()
		if st := dir.from.dest(t, dir.to.name).State; st != "sync" {
			t.Fatalf("%s's destination %s is %s at the end", dir.from.name, dir.to.name, st)
		}
	}
}

// TestBothDialOneLinkSurvives: A and B each have the other's address, so
// both dial. Exactly one connection survives on both sides (the same one,
// dialed by the instance whose name sorts first) and carries both
// directions. The connection is cut again and again under load (through
// proxies, so both redial at once); messages published meanwhile are
// neither lost nor doubled.
func TestBothDialOneLinkSurvives(t *testing.T) {
	rng := testSeed(t)
	ctx := testCtx(t, 40*time.Second)
	pAB, pBA := newCutProxy(t, ""), newCutProxy(t, "")
	a := startNode(t, "A", nodeOpts{}, "B="+pAB.addr())
	b := startNode(t, "B", nodeOpts{}, "A="+pBA.addr())
	pAB.setUpstream(b.repl)
	pBA.setUpstream(a.repl)

	// agreed reports whether both sides use one and the same connection.
	agreed := func() (string, bool) {
		ra, rb := a.srv.Replicator(), b.srv.Replicator()
		la, _, da, okA := ra.LinkInfo("B")
		lb, _, db, okB := rb.LinkInfo("A")
		if !okA || !okB || da != db || ra.LinkCount() != 1 || rb.LinkCount() != 1 {
			return "", false
		}
		_, remA, _, _ := ra.LinkInfo("B")
		_, remB, _, _ := rb.LinkInfo("A")
		if da == "A" {
			return da, pAB.upstreamSide(la) == remB
		}
		return da, pBA.upstreamSide(lb) == remA
	}

	plans := []pubPlan{{name: "pa", to: a, topics: topicSet}, {name: "pb", to: b, topics: topicSet}}
	var published atomic.Int64
	stop := make(chan struct{})
	type result struct {
		name string
		n    uint64
		err  error
	}
	results := make(chan result, len(plans))
	for _, p := range plans {
		go func() {
			n, err := publishUntil(ctx, p, stop, func() { published.Add(1) })
			results <- result{p.name, n, err}
		}()
	}
	// Cut the link whenever both sides agree on one, after some messages
	// went through it, while the publishers run.
	const cuts = 10
	var cutErr error
	rounds := 0
	for ; rounds < cuts && cutErr == nil; rounds++ {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := agreed(); ok {
				break
			}
			if time.Now().After(deadline) {
				cutErr = fmt.Errorf("cut %d: no single agreed link within 10s", rounds)
				break
			}
			time.Sleep(2 * time.Millisecond) // polling a condition with a deadline
		}
		target := published.Load() + int64(200+rng.IntN(800))
		for cutErr == nil && published.Load() < target {
			time.Sleep(time.Millisecond) // polling a condition (publishers make progress)
		}
		pAB.cut()
		pBA.cut()
	}
	close(stop)
	want, origins := map[msgKey]msgBody{}, map[uint64]string{}
	count := map[string]uint64{}
	for range plans {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		count[r.name] = r.n
	}
	if cutErr != nil {
		t.Fatalf("%v\nA: %s\nB: %s", cutErr, a.logs, b.logs)
	}
	for _, p := range plans {
		expected(want, origins, p, count[p.name])
	}
	total := uint64(len(want))
	waitQuiet(t, 15*time.Second, map[*node]uint64{a: total, b: total}, a, b)
	waitFor(t, 10*time.Second, "one agreed link", func() bool { _, ok := agreed(); return ok })
	checkExactly(t, a, want, origins)
	checkExactly(t, b, want, origins)
	dialer, _ := agreed()
	dups := a.logs.count("closing duplicate replication link") + b.logs.count("closing duplicate replication link") +
		a.logs.count("replaced by the link dialed by") + b.logs.count("replaced by the link dialed by")
	t.Logf("%d cuts, %d messages; survivor dialed by %s; duplicate links resolved: %d; duplicates stored-away A %d B %d",
		rounds, total, dialer, dups, a.stats().Duplicates, b.stats().Duplicates)
	if dups == 0 {
		t.Errorf("the instances never dialed each other at the same time in %d cuts: the test proved nothing about the switch", rounds)
	}
}

// TestChainPassthrough: A -> B -> C. With passthrough on B's destination
// C, everything published on A reaches C exactly once (and B's own
// messages too); without it, C gets only B's own messages.
func TestChainPassthrough(t *testing.T) {
	for _, passthrough := range []bool{true, false} {
		t.Run(fmt.Sprintf("passthrough=%v", passthrough), func(t *testing.T) {
			rng := testSeed(t)
			ctx := testCtx(t, 30*time.Second)
			c := startNode(t, "C", nodeOpts{}, "B,receive-only")
			opt := ""
			if passthrough {
				opt = ",passthrough"
			}
			b := startNode(t, "B", nodeOpts{}, "C="+c.repl+opt, "A,receive-only")
			a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+b.repl)
			a.waitState(t, "B", "sync", 5*time.Second)
			b.waitState(t, "C", "sync", 5*time.Second)
			pa := pubPlan{name: "pa", to: a, n: 500 + rng.IntN(1000)}
			pb := pubPlan{name: "pb", to: b, n: 200 + rng.IntN(300)}
			all, onlyB, origins := map[msgKey]msgBody{}, map[msgKey]msgBody{}, map[uint64]string{}
			expected(all, origins, pa, uint64(pa.n))
			expected(all, origins, pb, uint64(pb.n))
			expected(onlyB, origins, pb, uint64(pb.n))
			publishAll(t, ctx, []pubPlan{pa, pb}, nil)
			total := uint64(len(all))
			wantC := total
			if !passthrough {
				wantC = uint64(pb.n)
			}
			waitQuiet(t, 15*time.Second, map[*node]uint64{a: uint64(pa.n), b: total, c: wantC}, a, b, c)
			checkExactly(t, b, all, origins)
			if passthrough {
				checkExactly(t, c, all, origins)
				viaB := b.srv.Origin() // B's id on its journal and run (rsm.Filter)
				for _, m := range readJournal(t, c.srv) {
					if m.via != viaB {
						t.Fatalf("C's copy of %v came via %x, not B", m.key, m.via)
					}
				}
			} else {
				checkExactly(t, c, onlyB, origins)
			}
			if st := c.stats(); st.Duplicates != 0 {
				t.Errorf("C stored-away %d duplicates in a chain", st.Duplicates)
			}
		})
	}
}

// TestTrianglePassthrough: A <-> B <-> C <-> A, every destination
// passthrough, publishers on all three. Every message reaches every
// instance exactly once and nothing loops: once every destination has
// acknowledged its whole journal, each instance stores exactly N, and the
// copies refused as duplicates are bounded (each instance stores a message
// once and so forwards it at most once per destination: at most two
// redundant copies per message in a triangle).
func TestTrianglePassthrough(t *testing.T) {
	rng := testSeed(t)
	ctx := testCtx(t, 30*time.Second)
	addrs := map[string]string{"A": freeAddr(t), "B": freeAddr(t), "C": freeAddr(t)}
	nodes := map[string]*node{}
	for _, n := range []string{"A", "B", "C"} {
		var peers []string
		for _, p := range []string{"A", "B", "C"} {
			if p != n {
				peers = append(peers, p+"="+addrs[p]+",passthrough")
			}
		}
		nodes[n] = startNode(t, n, nodeOpts{listen: addrs[n]}, peers...)
	}
	a, b, c := nodes["A"], nodes["B"], nodes["C"]
	for _, n := range []*node{a, b, c} {
		for _, ds := range n.stats().Replication {
			n.waitState(t, ds.Name, "sync", 5*time.Second)
		}
	}
	var plans []pubPlan
	for _, n := range []*node{a, b, c} {
		plans = append(plans, pubPlan{name: "p" + n.name, to: n, n: 400 + rng.IntN(800), topics: topicSet})
	}
	want, origins := map[msgKey]msgBody{}, map[uint64]string{}
	for _, p := range plans {
		expected(want, origins, p, uint64(p.n))
	}
	publishAll(t, ctx, plans, nil)
	total := uint64(len(want))
	waitQuiet(t, 20*time.Second, map[*node]uint64{a: total, b: total, c: total}, a, b, c)
	var dups uint64
	for _, n := range []*node{a, b, c} {
		checkStored(t, n, want, origins, false)
		dups += n.stats().Duplicates
		if lc := n.srv.Replicator().LinkCount(); lc != 2 {
			t.Errorf("%s has %d links, want 2", n.name, lc)
		}
	}
	t.Logf("%d messages, %d copies refused as duplicates", total, dups)
	if dups > 2*total {
		t.Fatalf("%d duplicates for %d messages: messages circulate", dups, total)
	}
}

// TestTopicFilteredDestination: a destination with topics=REGEX (with a
// comma in it) gets exactly the messages whose topic matches, and its
// acknowledged position still covers the whole journal.
func TestTopicFilteredDestination(t *testing.T) {
	rng := testSeed(t)
	ctx := testCtx(t, 30*time.Second)
	const expr = `^orders\.[a-z]{2,3}$`
	b := startNode(t, "B", nodeOpts{}, "A,receive-only")
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+b.repl+",topics="+expr+",sync")
	a.waitState(t, "B", "sync", 5*time.Second)
	re := regexp.MustCompile(expr)
	plans := []pubPlan{
		{name: "f1", to: a, n: 500 + rng.IntN(1000), topics: topicSet},
		{name: "f2", to: a, n: 500 + rng.IntN(1000), topics: topicSet},
	}
	all, origins := map[msgKey]msgBody{}, map[uint64]string{}
	for _, p := range plans {
		expected(all, origins, p, uint64(p.n))
	}
	matching := countMatching(all, func(m msgBody) bool { return re.MatchString(m.topic) })
	if len(matching) == 0 || len(matching) == len(all) {
		t.Fatalf("bad test: %d of %d match", len(matching), len(all))
	}
	publishAll(t, ctx, plans, nil)
	waitQuiet(t, 15*time.Second, map[*node]uint64{a: uint64(len(all)), b: uint64(len(matching))}, a, b)
	checkExactly(t, a, all, origins)
	checkExactly(t, b, matching, origins)
	if d := a.dest(t, "B"); d.Topics != expr {
		t.Errorf("stat shows topics %q", d.Topics)
	}
}

// TestWrongSecretRefused: instances with different secrets never link: no
// message flows, both sides log the refusal, and the publisher's acks do
// not wait for the unreachable sync destination.
func TestWrongSecretRefused(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := startNode(t, "B", nodeOpts{secret: "right"}, "A")
	a := startNode(t, "A", nodeOpts{listen: "-", secret: "wrong"}, "B="+b.repl)
	p := pubPlan{name: "ws", to: a, n: 300}
	publishAll(t, ctx, []pubPlan{p}, nil) // persisted acks come: B never was sync
	waitFor(t, 10*time.Second, "two refusals logged on both sides", func() bool {
		return b.logs.count("replication link refused", "secret") >= 2 && a.logs.count("replication link refused", "secret") >= 2
	}, func() string { return "\nA: " + a.logs.String() + "\nB: " + b.logs.String() })
	if st := b.stats(); st.Stored != 0 {
		t.Fatalf("B stored %d messages from a peer with the wrong secret", st.Stored)
	}
	if d := a.dest(t, "B"); d.Connected || d.State != "downgraded" || d.AckedThrough != 0 {
		t.Fatalf("A's destination B: %+v", d)
	}
	if d := b.dest(t, "A"); d.Connected || d.State != "downgraded" {
		t.Fatalf("B's destination A: %+v", d)
	}
	if a.srv.Replicator().LinkCount() != 0 || b.srv.Replicator().LinkCount() != 0 {
		t.Fatal("a link is up")
	}
}

// TestPeerNameMismatchRefused: A is configured with B=<C's address>. C
// refuses (it is not B), both log it, and nothing flows to C.
func TestPeerNameMismatchRefused(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	c := startNode(t, "C", nodeOpts{})
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+c.repl)
	publishAll(t, ctx, []pubPlan{{name: "nm", to: a, n: 200}}, nil)
	waitFor(t, 10*time.Second, "two refusals logged on both sides", func() bool {
		return c.logs.count("replication link refused", `expected instance \"B\"`) >= 2 &&
			a.logs.count("replication link refused", "peer=B") >= 2
	}, func() string { return "\nA: " + a.logs.String() + "\nC: " + c.logs.String() })
	if st := c.stats(); st.Stored != 0 {
		t.Fatalf("C stored %d messages meant for B", st.Stored)
	}
	if d := a.dest(t, "B"); d.Connected || d.AckedThrough != 0 {
		t.Fatalf("A's destination B: %+v", d)
	}
}

// TestAcceptOnlyDestination: B is in a DMZ-like position the other way
// round: B lists A with no address (accept-only) and A has no listener at
// all; A dials B, and B replicates to A over A's connection.
func TestAcceptOnlyDestination(t *testing.T) {
	rng := testSeed(t)
	ctx := testCtx(t, 30*time.Second)
	b := startNode(t, "B", nodeOpts{}, "A,sync")
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+b.repl+",async")
	b.waitState(t, "A", "sync", 5*time.Second)
	if d := a.dest(t, "B"); d.State != "async" || d.Mode != "async" {
		t.Fatalf("A's destination B: %+v", d)
	}
	plans := []pubPlan{
		{name: "da", to: a, n: 300 + rng.IntN(700)},
		{name: "db", to: b, n: 300 + rng.IntN(700)},
	}
	want, origins := map[msgKey]msgBody{}, map[uint64]string{}
	for _, p := range plans {
		expected(want, origins, p, uint64(p.n))
	}
	publishAll(t, ctx, plans, nil)
	total := uint64(len(want))
	waitQuiet(t, 15*time.Second, map[*node]uint64{a: total, b: total}, a, b)
	checkExactly(t, a, want, origins)
	checkExactly(t, b, want, origins)
	if _, _, dialer, ok := b.srv.Replicator().LinkInfo("A"); !ok || dialer != "A" {
		t.Fatalf("B's link to A: up %v, dialed by %q", ok, dialer)
	}
	if b.logs.count("replication link up") != 1 {
		t.Errorf("B brought up %d links:\n%s", b.logs.count("replication link up"), b.logs)
	}
}

// TestSkippedRangeKeepsStreamContinuous: B's journal first fills with
// records B must not send back to A (they came from A); B's sender
// examines them without sending anything. B's first own message must then
// arrive at A in a batch whose range covers the skipped records, not as a
// "gap" that makes A drop the link.
func TestSkippedRangeKeepsStreamContinuous(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	b := startNode(t, "B", nodeOpts{}, "A")
	a := startNode(t, "A", nodeOpts{listen: "-"}, "B="+b.repl)
	a.waitState(t, "B", "sync", 5*time.Second)
	b.waitState(t, "A", "sync", 5*time.Second)
	pa := pubPlan{name: "sa", to: a, n: 100}
	publishAll(t, ctx, []pubPlan{pa}, nil)
	waitFor(t, 5*time.Second, "B's sender to examine A's records", func() bool {
		st := b.stats()
		return st.Stored == 100 && st.Replication[0].SentThrough == st.Journal.LastSeq && st.Journal.LastSeq == 100
	})
	pb := pubPlan{name: "sb", to: b, n: 1}
	publishAll(t, ctx, []pubPlan{pb}, nil)
	waitQuiet(t, 10*time.Second, map[*node]uint64{a: 101, b: 101}, a, b)
	for _, n := range []*node{a, b} {
		if c := n.logs.count("replication link down"); c != 0 {
			t.Fatalf("%s: the link went down %d times:\n%s", n.name, c, n.logs)
		}
	}
}
