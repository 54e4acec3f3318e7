package engine

import (
	"context"
	"testing"

	"github.com/tandemhq/tandem/internal/hist"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// probeLife runs one client probe through every stage, as the loop, the
// flusher and the replication hooks would.
func probeLife(p *stageProbe, seq uint64) {
	now := stageNow()
	if !p.busy(now) && p.claim(probeClient, seq, now, stageNow()) {
		p.onFlushStage(journal.FlushTaken, seq)
		p.onFlushStage(journal.FlushWritten, seq)
		p.stamp(stSynced, seq)
		p.stamp(stShipped, seq)
		p.stamp(stPeerAck, seq)
		p.done(probeClient, seq)
	}
}

func TestStageProbe(t *testing.T) {
	var p stageProbe
	probeLife(&p, 5)
	st := p.stats()
	got := map[string]uint64{}
	for _, s := range st {
		var n uint64
		for _, c := range s.Counts {
			n += c
		}
		got[s.Name] = n
	}
	for _, name := range []string{"received-staged", "staged-taken", "taken-written", "written-synced", "taken-synced",
		"synced-ack_sent", "synced-shipped", "shipped-peer_ack", "peer_ack-ack_sent", "received-ack_sent"} {
		if got[name] != 1 {
			t.Errorf("stage %s: %d samples, want 1 (all: %v)", name, got[name], got)
		}
	}
	if got["repl:received-ack_sent"] != 0 {
		t.Errorf("a client probe counted as a replicated one: %v", got)
	}
	// Free again: the next message is followed.
	if p.busy(stageNow()) {
		t.Fatal("probe still busy after its ack")
	}
	// A probe for seq 10 ignores stamps for batches that end before it,
	// and a replicated completion.
	now := stageNow()
	if !p.claim(probeClient, 10, now, now) {
		t.Fatal("claim failed")
	}
	p.stamp(stSynced, 9)
	if p.t[stSynced].Load() != 0 {
		t.Error("synced through 9 stamped the probe of seq 10")
	}
	p.done(probeRepl, 10)
	if !p.busy(stageNow()) {
		t.Error("a replicated ack completed a client probe")
	}
	if p.claim(probeClient, 11, stageNow(), stageNow()) {
		t.Error("a second probe claimed while one is in flight")
	}
	// Stale probes are taken over.
	if !p.claim(probeClient, 12, now+stageProbeStale+1, now+stageProbeStale+1) {
		t.Error("a stale probe was not taken over")
	}
}

// The hot path must not allocate: the per-message check and a whole probe.
func TestStageProbeAllocs(t *testing.T) {
	var p stageProbe
	seq := uint64(0)
	if n := testing.AllocsPerRun(1000, func() { seq++; probeLife(&p, seq) }); n != 0 {
		t.Errorf("a probe's life allocates %.1f times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = p.busy(stageNow()) }); n != 0 {
		t.Errorf("the per-message check allocates %.1f times", n)
	}
}

// BenchmarkStageProbe: the cost of sampling. "check" is what every stored
// message pays (one atomic load; the loop's clock reading is reused);
// "life" is one sampled message through every stage: claim, 7 stamps (each
// a clock reading), the durations into the histograms.
func BenchmarkStageProbe(b *testing.B) {
	b.Run("check", func(b *testing.B) {
		var p stageProbe
		p.claimed.Store(stageNow())
		now := stageNow()
		n := 0
		for i := 0; i < b.N; i++ {
			if !p.busy(now) {
				n++
			}
		}
		_ = n
	})
	b.Run("life", func(b *testing.B) {
		var p stageProbe
		for i := 0; i < b.N; i++ {
			probeLife(&p, uint64(i+1))
		}
	})
	b.Run("hist", func(b *testing.B) {
		var h hist.Fine
		for i := 0; i < b.N; i++ {
			h.Observe(int64(i))
		}
	})
}

// BenchmarkPublishPathSampling: BenchmarkPublishPath's parse + de-dup +
// append per message, with the stage probe never free ("held": the
// per-message check only) and freed after every batch of 256 ("claim":
// one claimed message per batch, far more often than the one per ack
// round trip of a live server).
func BenchmarkPublishPathSampling(b *testing.B) {
	for _, mode := range []string{"held", "claim"} {
		b.Run(mode, func(b *testing.B) {
			s, c := detachedConn(b)
			payload := make([]byte, 128)
			frames := make([]byte, 0, 256*(wire.PublishOverhead+len(payload)+16))
			seq := uint64(1)
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			for done := 0; done < b.N; done += 256 {
				if mode == "held" {
					s.stages.claimed.Store(stageNow())
				} else {
					s.stages.claimed.Store(0)
				}
				frames = feedPublishes(frames, seq, 256, payload)
				seq += 256
				c.rn = copy(c.rbuf, frames)
				c.process()
				resetOutput(c)
			}
			b.StopTimer()
			s.j.WaitSynced(context.Background(), seq-1)
		})
	}
}
