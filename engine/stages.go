package engine

import (
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/internal/hist"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// Per-stage latency breakdown (issue 15): where the time between a publish
// arriving and its persisted ack leaving goes.
//
// Sampling. One message at a time is followed (the probe): when no probe is
// in flight, the next message stored claims it (one atomic load per stored
// message, a compare-and-swap when it is idle), and every stage on its way
// stamps the time once, matching by local seq: the event loop (received,
// staged, ack sent), the journal's flusher (taken, written, synced:
// journal.Options.OnFlushStage and OnSync) and, with replication, the
// senders and links (shipped, peer ack: replicate.StageHooks). When the
// last stage is stamped the durations between stamps go into fixed
// histograms (hist.Fine) and the probe is free again. So at most one
// sample per ack round trip: about 1000-2000 per second at 10k msgs/s,
// whatever the rate. A probe whose message never completes (refused,
// connection closed) is taken over by the next message after
// stageProbeStale. Nothing allocates; the cost is in BenchmarkStageProbe.
//
// Two kinds of probe: a client publish (on the instance it was published
// to) and a replicated batch (on a replication destination: from
// StoreReplicated to the batch acknowledgment written back). Stamps come
// from one clock (time.Now's monotonic reading, as UnixNano of the loop
// iteration for "received"), all in this process: the pair's "peer"
// stages are the destination's own replicated-kind stages, read from its
// stat document.
//
// Exposed in the stat document (wire.Stats.Stages): per stage, the bucket
// counts in hist.Fine's layout, nanoseconds, cumulative since start; a
// reader takes two and subtracts (tandem bench does, bench/stages.go).

// Stamps of a probe, in path order.
const (
	stRecv    = iota // the loop iteration that read the publish (or StoreReplicated began)
	stStaged         // appended to the journal's staging buffer
	stTaken          // the flusher took it (the group commit in progress before it ended)
	stWritten        // its group commit's pwrite returned (syscall sync path only)
	stSynced         // its group commit's fdatasync returned
	stShipped        // a replication sender wrote it to a link
	stPeerAck        // a destination acknowledged it
	stAckSent        // the persisted ack (or, replicated, the batch ack) was queued for the socket
	nStamps
)

// Stages, the histograms: each a duration between two stamps.
const (
	sgRecvStaged = iota
	sgStagedTaken
	sgTakenWritten
	sgWrittenSynced
	sgTakenSynced
	sgSyncedAck
	sgSyncedShipped
	sgShippedPeerAck
	sgPeerAckAck
	sgTotal
	sgReplRecvStaged
	sgReplStagedTaken
	sgReplTakenSynced
	sgReplSyncedAck
	sgReplTotal
	nStages
)

// stageDefs names each stage and the stamps it spans; repl: the
// replicated kind's.
var stageDefs = [nStages]struct {
	name     string
	from, to int
	repl     bool
}{
	sgRecvStaged:      {"received-staged", stRecv, stStaged, false},
	sgStagedTaken:     {"staged-taken", stStaged, stTaken, false},
	sgTakenWritten:    {"taken-written", stTaken, stWritten, false},
	sgWrittenSynced:   {"written-synced", stWritten, stSynced, false},
	sgTakenSynced:     {"taken-synced", stTaken, stSynced, false},
	sgSyncedAck:       {"synced-ack_sent", stSynced, stAckSent, false},
	sgSyncedShipped:   {"synced-shipped", stSynced, stShipped, false},
	sgShippedPeerAck:  {"shipped-peer_ack", stShipped, stPeerAck, false},
	sgPeerAckAck:      {"peer_ack-ack_sent", stPeerAck, stAckSent, false},
	sgTotal:           {"received-ack_sent", stRecv, stAckSent, false},
	sgReplRecvStaged:  {"repl:received-staged", stRecv, stStaged, true},
	sgReplStagedTaken: {"repl:staged-taken", stStaged, stTaken, true},
	sgReplTakenSynced: {"repl:taken-synced", stTaken, stSynced, true},
	sgReplSyncedAck:   {"repl:synced-ack_sent", stSynced, stAckSent, true},
	sgReplTotal:       {"repl:received-ack_sent", stRecv, stAckSent, true},
}

// stageProbeStale: a probe older than this is taken over.
const stageProbeStale = int64(2 * time.Second)

const (
	probeIdle   = 0
	probeClient = 1
	probeRepl   = 2
)

// stageProbe is the one message followed at a time, and the histograms.
type stageProbe struct {
	// claimed: when the probe was claimed (UnixNano), 0 when idle.
	claimed atomic.Int64
	kind    atomic.Uint32
	// seq: the local seq followed (0 while being set up: no stamp matches).
	seq atomic.Uint64
	t   [nStamps]atomic.Int64
	h   [nStages]hist.Fine
}

// now is the probe's clock.
func stageNow() int64 { return time.Now().UnixNano() }

// claim makes the probe follow local seq (received at recv) if it is idle
// or stale; the caller stamps staged right after. It returns false when
// another probe is in flight.
func (p *stageProbe) claim(kind uint32, seq uint64, recv, now int64) bool {
	c := p.claimed.Load()
	if c != 0 && now-c < stageProbeStale {
		return false
	}
	if !p.claimed.CompareAndSwap(c, now) {
		return false
	}
	p.seq.Store(0)
	for i := range p.t {
		p.t[i].Store(0)
	}
	p.kind.Store(kind)
	p.t[stRecv].Store(recv)
	p.t[stStaged].Store(now)
	p.seq.Store(seq)
	return true
}

// idle reports whether a new message may claim the probe (cheap: one load).
func (p *stageProbe) busy(now int64) bool {
	c := p.claimed.Load()
	return c != 0 && now-c < stageProbeStale
}

// stamp records stamp st if the followed message is at or below through
// and st is not stamped yet.
func (p *stageProbe) stamp(st int, through uint64) {
	seq := p.seq.Load()
	if seq == 0 || seq > through || p.t[st].Load() != 0 {
		return
	}
	p.t[st].CompareAndSwap(0, stageNow())
}

// done stamps the last stage of a probe of kind and, once, records its
// durations and frees the probe.
func (p *stageProbe) done(kind uint32, through uint64) {
	seq := p.seq.Load()
	if seq == 0 || seq > through || p.kind.Load() != kind {
		return
	}
	if !p.t[stAckSent].CompareAndSwap(0, stageNow()) {
		return
	}
	var t [nStamps]int64
	for i := range t {
		t[i] = p.t[i].Load()
	}
	repl := kind == probeRepl
	for i := range stageDefs {
		d := &stageDefs[i]
		if d.repl != repl || t[d.from] == 0 || t[d.to] == 0 {
			continue
		}
		p.h[i].Observe(t[d.to] - t[d.from])
	}
	p.seq.Store(0)
	p.claimed.Store(0)
}

// onFlushStage is the journal's OnFlushStage hook.
func (p *stageProbe) onFlushStage(st journal.FlushStage, through uint64) {
	switch st {
	case journal.FlushTaken:
		p.stamp(stTaken, through)
	case journal.FlushWritten:
		p.stamp(stWritten, through)
	}
}

// stats returns the histograms for the stat document: per stage with at
// least one observation, the bucket counts up to the last non-empty one.
func (p *stageProbe) stats() []wire.StageStats {
	var out []wire.StageStats
	for i := range p.h {
		s := p.h[i].Snapshot()
		last := -1
		for k, c := range s {
			if c != 0 {
				last = k
			}
		}
		if last < 0 {
			continue
		}
		out = append(out, wire.StageStats{Name: stageDefs[i].name, Counts: append([]uint64(nil), s[:last+1]...)})
	}
	return out
}
