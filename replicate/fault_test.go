package replicate_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/tandemhq/tandem/client"
)

// toxicLink is an in-process toxiproxy proxy in front of a peer's
// replication listener.
type toxicLink struct {
	p *toxiproxy.Proxy
}

func newToxicLink(t *testing.T, upstream string) *toxicLink {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "repl", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &toxicLink{p: p}
}

func (l *toxicLink) addr() string { return l.p.Listen }

// partition black-holes both directions: bytes are dropped, connections
// stay open (toxiproxy's timeout toxic with timeout 0), new connections
// are accepted and hang. Only heartbeats can tell the link is dead.
func (l *toxicLink) partition(t *testing.T) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":"blackhole_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, dir, dir)
		if _, err := l.p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatal(err)
		}
	}
}

func (l *toxicLink) heal(t *testing.T) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		if err := l.p.Toxics.RemoveToxic(context.Background(), "blackhole_"+dir); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPartitionUnderLoad: a hot-hot sync pair whose link goes through
// toxiproxy. Publishers on both sides publish flat out; the link is
// black-holed. During the partition each side's sync destination is
// downgraded (disconnected, detected by heartbeats) and both publishers
// keep getting persisted acks. After healing, the pair converges (same
// messages, each once, in publisher order) and both destinations are
// upgraded back to sync.
func TestPartitionUnderLoad(t *testing.T) {
	ctx := testCtx(t, 40*time.Second)
	o := nodeOpts{heartbeat: 100 * time.Millisecond, downgrade: 500 * time.Millisecond, upgrade: 100 * time.Millisecond}
	b := startNode(t, "B", o, "A")
	px := newToxicLink(t, b.repl)
	o.listen = "-"
	a := startNode(t, "A", o, "B="+px.addr()+",sync")
	a.waitState(t, "B", "sync", 5*time.Second)
	b.waitState(t, "A", "sync", 5*time.Second)

	plans := []pubPlan{{name: "qa", to: a, topics: topicSet}, {name: "qb", to: b, topics: topicSet}}
	clients := map[string]*client.Client{}
	for _, p := range plans {
		c, err := client.Connect(ctx, p.to.srv.Addr().String(), client.WithName(p.name))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[p.name] = c
	}
	stop := make(chan struct{})
	errs := make(chan error, len(plans))
	counts := map[string]*atomic.Uint64{}
	for _, p := range plans {
		c, n := clients[p.name], &atomic.Uint64{}
		counts[p.name] = n
		go func() {
			// A steady load (bursts of 20 every 2ms, about 10k msgs/s per
			// publisher) that a healed link can catch up with: flat out, a
			// downgraded destination would never get under the upgrade age.
			tick := time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
			for s := uint64(1); ; s++ {
				if s%20 == 0 {
					select {
					case <-stop:
						errs <- c.Flush(ctx)
						return
					case <-tick.C:
					}
				}
				if _, err := c.Publish(ctx, topicFor(p, s), []byte(payloadFor(p.name, s))); err != nil {
					errs <- fmt.Errorf("%s: publish %d: %w", p.name, s, err)
					return
				}
				n.Store(s)
			}
		}()
	}
	persistedBeyond := func(min map[string]uint64) func() bool {
		return func() bool {
			for name, c := range clients {
				if c.PersistedSeq() <= min[name] {
					return false
				}
			}
			return true
		}
	}
	snapshot := func() map[string]uint64 {
		m := map[string]uint64{}
		for name, c := range clients {
			m[name] = c.PersistedSeq() + 300
		}
		return m
	}
	diag := func() string { return fmt.Sprintf("\nA: %+v\nB: %+v", a.stats().Replication, b.stats().Replication) }
	waitFor(t, 10*time.Second, "acks before the partition", persistedBeyond(snapshot()), diag)

	px.partition(t)
	start := time.Now()
	waitFor(t, 10*time.Second, "both sync destinations downgraded", func() bool {
		return a.dest(t, "B").State == "downgraded" && b.dest(t, "A").State == "downgraded"
	}, diag)
	t.Logf("downgraded %v after the partition", time.Since(start).Round(time.Millisecond))
	// Publishers keep getting persisted acks while the peer is unreachable.
	waitFor(t, 10*time.Second, "persisted acks during the partition", persistedBeyond(snapshot()), diag)
	if da, db := a.dest(t, "B"), b.dest(t, "A"); da.State != "downgraded" || da.Connected || db.State != "downgraded" || db.Connected {
		t.Fatalf("still partitioned, yet A->B %+v, B->A %+v", da, db)
	}

	px.heal(t)
	start = time.Now()
	waitFor(t, 20*time.Second, "both destinations upgraded back to sync", func() bool {
		return a.dest(t, "B").State == "sync" && b.dest(t, "A").State == "sync"
	}, diag)
	t.Logf("upgraded %v after healing", time.Since(start).Round(time.Millisecond))
	// More traffic over the healed link, then stop.
	waitFor(t, 10*time.Second, "acks after healing", persistedBeyond(snapshot()), diag)
	close(stop)
	for range plans {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want, origins := map[msgKey]msgBody{}, map[uint64]string{}
	for _, p := range plans {
		expected(want, origins, p, counts[p.name].Load())
	}
	total := uint64(len(want))
	waitQuiet(t, 15*time.Second, map[*node]uint64{a: total, b: total}, a, b)
	checkExactly(t, a, want, origins)
	checkExactly(t, b, want, origins)
	for _, n := range []*node{a, b} {
		if n.logs.count("sync destination downgraded") == 0 || n.logs.count("upgraded back to sync") == 0 {
			t.Errorf("%s did not log its downgrade and upgrade:\n%s", n.name, n.logs)
		}
	}
	t.Logf("%d messages (%d on A, %d on B)", total, counts["qa"].Load(), counts["qb"].Load())
}
