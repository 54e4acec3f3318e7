package engine

import (
	"github.com/tandemhq/tandem/internal/hist"
)

// AckHistBase is the first bucket's bound of Metrics.PersistedAck, in
// nanoseconds (buckets double from 8.2µs to about 69s).
const AckHistBase = 8192

// Metrics are the counters and histograms the event loops keep for the
// admin listener (package admin), beyond the stat document. Reading them
// takes no lock the loops use: each loop keeps its own shard of atomics,
// added up here.
type Metrics struct {
	// Delivered counts Deliver frames written to subscribers since start.
	Delivered uint64
	// SlowConsumers is the number of connections whose deliveries are
	// paused now because their output reached WriteHighWater.
	SlowConsumers int
	// PersistedAck is the latency from appending a read batch of publishes
	// (the loop iteration that parsed them) to queueing their persisted
	// ack for sending (the iteration that saw the journal, and every sync
	// peer, cover them), in nanoseconds: one observation per batch of
	// publishes that asked for a persisted ack. Resolution is one loop
	// iteration.
	PersistedAck hist.Snapshot
}

// Metrics returns the loops' metrics, summed over the loops.
func (s *Server) Metrics() Metrics {
	m := Metrics{PersistedAck: hist.Snapshot{Base: AckHistBase}}
	for _, lp := range s.loops {
		m.Delivered += lp.delivered.Load()
		m.SlowConsumers += int(lp.nslow.Load())
		m.PersistedAck.Merge(lp.ackHist.Snapshot())
	}
	return m
}

// Started reports whether Start has returned successfully: recovery is
// done and the loops accept connections.
func (s *Server) Started() bool { return s.ready.Load() }

// Stopping reports whether Close has begun.
func (s *Server) Stopping() bool { return s.stopping.Load() }

// Config returns the server's configuration with defaults filled in.
func (s *Server) Config() Config { return s.cfg }
