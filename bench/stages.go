package bench

import (
	"context"
	"fmt"
	"sort"

	"github.com/tandemhq/tandem/internal/hist"
	"github.com/tandemhq/tandem/wire"
)

// StageLatency is one stage of the server-side latency breakdown of a
// Tandem step (Result.Stages): the sampled durations between two points of
// a message's path, read from the servers' stat documents before and after
// the step and subtracted (engine/stages.go describes the sampling and the
// stages). Instance "A" is the instance the publishers use; "B", in the
// pair scenario, its replication destination, whose "repl:" stages are
// what A's "shipped-peer_ack" contains: batch stored, synced and
// acknowledged on B.
type StageLatency struct {
	Instance string  `json:"instance"`
	Name     string  `json:"name"`
	Count    uint64  `json:"count"` // samples
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	Max      float64 `json:"max_us"` // upper bound of the highest bucket with a sample
}

// stageSnap is the stage histograms of A and B at one moment.
type stageSnap map[string]map[string][]uint64 // instance -> stage -> counts

// stageSnapshot reads the stage histograms of the running Tandem
// instances; instances that do not answer are left out.
func (t *Tandem) stageSnapshot(ctx context.Context) stageSnap {
	snap := stageSnap{}
	add := func(inst string, st *wire.Stats) {
		m := map[string][]uint64{}
		for _, s := range st.Stages {
			m[s.Name] = s.Counts
		}
		snap[inst] = m
	}
	if st, err := t.stats(ctx); err == nil {
		add("A", st)
	}
	if t.srvB != nil {
		add("B", t.srvB.Stats())
	} else if t.addrB != "" && t.Pair != "" {
		if st, err := statsOf(ctx, t.addrB, t.clientName("stat"), t.clientOpts()...); err == nil {
			add("B", st)
		}
	}
	return snap
}

// stagesSince returns the breakdown of what the servers sampled between
// before and after, instance A first, in path order within each.
func stagesSince(before, after stageSnap) []StageLatency {
	var out []StageLatency
	insts := make([]string, 0, len(after))
	for inst := range after {
		insts = append(insts, inst)
	}
	sort.Strings(insts)
	for _, inst := range insts {
		names := make([]string, 0, len(after[inst]))
		for name := range after[inst] {
			names = append(names, name)
		}
		sort.Slice(names, func(i, j int) bool { return stageOrder(names[i]) < stageOrder(names[j]) })
		for _, name := range names {
			d := diffCounts(after[inst][name], before[inst][name])
			var n uint64
			last := -1
			for i, c := range d {
				n += c
				if c != 0 {
					last = i
				}
			}
			if n == 0 {
				continue
			}
			_, hi := hist.FineBounds(last)
			out = append(out, StageLatency{Instance: inst, Name: name, Count: n,
				P50: hist.QuantileOf(d, 0.50) / 1e3, P99: hist.QuantileOf(d, 0.99) / 1e3, Max: float64(hi) / 1e3})
		}
	}
	return out
}

func diffCounts(a, b []uint64) []uint64 {
	d := append([]uint64(nil), a...)
	for i := range d {
		if i < len(b) {
			d[i] -= min(b[i], d[i])
		}
	}
	return d
}

// stageOrder puts the stages in the order of a message's path (the names
// are engine/stages.go's); unknown names go last.
func stageOrder(name string) int {
	for i, n := range []string{
		"received-staged", "staged-taken", "taken-written", "written-synced", "taken-synced",
		"synced-ack_sent", "synced-shipped", "shipped-peer_ack", "peer_ack-ack_sent", "received-ack_sent",
		"repl:received-staged", "repl:staged-taken", "repl:taken-synced", "repl:synced-ack_sent", "repl:received-ack_sent",
	} {
		if n == name {
			return i
		}
	}
	return 1 << 20
}

// sayStages prints a step's breakdown on the progress display, one line
// per instance: stage p50/p99 in µs.
func (p *progress) sayStages(res *Result) {
	if len(res.Stages) == 0 {
		return
	}
	line, inst := "", ""
	flush := func() {
		if line != "" {
			p.say("  stages %s: %s", inst, line)
		}
		line = ""
	}
	for _, s := range res.Stages {
		if s.Instance != inst {
			flush()
			inst = s.Instance
		}
		line += fmt.Sprintf(" %s %.0f/%.0f", s.Name, s.P50, s.P99)
	}
	flush()
}
