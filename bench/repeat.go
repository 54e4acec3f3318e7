package bench

import (
	"fmt"
	"sort"
	"strings"
)

// Repeated steps (the engine scenario, Settings.EngineRuns): one result
// whose figures are the medians over the runs.

// median returns the median of vs: the middle value, or the mean of the
// two middle values for an even count; 0 for none. vs is not modified.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianBy returns the median of f over xs.
func medianBy[T any](xs []T, f func(T) float64) float64 {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	return median(vs)
}

// medianLatency returns the per-percentile median of ls (nil if any is
// nil); Count is the sum, and there is no curve.
func medianLatency(ls []*Latency) *Latency {
	if len(ls) == 0 {
		return nil
	}
	var count int64
	for _, l := range ls {
		if l == nil {
			return nil
		}
		count += l.Count
	}
	return &Latency{
		Count: count,
		Mean:  medianBy(ls, func(l *Latency) float64 { return l.Mean }),
		P50:   medianBy(ls, func(l *Latency) float64 { return l.P50 }),
		P90:   medianBy(ls, func(l *Latency) float64 { return l.P90 }),
		P99:   medianBy(ls, func(l *Latency) float64 { return l.P99 }),
		P999:  medianBy(ls, func(l *Latency) float64 { return l.P999 }),
		Max:   medianBy(ls, func(l *Latency) float64 { return l.Max }),
	}
}

// medianResources returns the per-figure median of rs (nil if any is
// nil); the threads exited are summed.
func medianResources(rs []*Resources) *Resources {
	if len(rs) == 0 {
		return nil
	}
	exited := 0
	for _, r := range rs {
		if r == nil {
			return nil
		}
		exited += r.ServerThreadsExited
	}
	m := func(f func(*Resources) float64) float64 { return medianBy(rs, f) }
	return &Resources{
		WallSec:             m(func(r *Resources) float64 { return r.WallSec }),
		Messages:            int64(m(func(r *Resources) float64 { return float64(r.Messages) })),
		Servers:             rs[0].Servers,
		ServerCPUSec:        m(func(r *Resources) float64 { return r.ServerCPUSec }),
		ServerVoluntary:     uint64(m(func(r *Resources) float64 { return float64(r.ServerVoluntary) })),
		ServerInvoluntary:   uint64(m(func(r *Resources) float64 { return float64(r.ServerInvoluntary) })),
		ServerThreadsExited: exited,
		BenchCPUSec:         m(func(r *Resources) float64 { return r.BenchCPUSec }),
		MachineBusySec:      m(func(r *Resources) float64 { return r.MachineBusySec }),
		ServerCPUPerM:       m(func(r *Resources) float64 { return r.ServerCPUPerM }),
		ServerCtxPerM:       m(func(r *Resources) float64 { return r.ServerCtxPerM }),
		BenchCPUPerM:        m(func(r *Resources) float64 { return r.BenchCPUPerM }),
	}
}

// aggregateRuns combines the runs of one step (same key, in run order)
// into one result. One run is returned as it is. Otherwise the result is
// the first successful run's description (key, sizes, backend in use)
// with the median of every figure over the successful runs, each figure
// separately (msgs/s, MB/s, each latency percentile, each resource
// figure); counters summed over them; saturated if any run was; every
// run's note or error as a note; and the runs themselves in Runs. It is
// an error only when every run failed.
func aggregateRuns(runs []Result) Result {
	if len(runs) == 0 {
		return Result{}
	}
	if len(runs) == 1 {
		return runs[0]
	}
	var ok []Result
	var notes []string
	inUse := map[string]bool{}
	for i, r := range runs {
		switch {
		case r.Error != "":
			notes = append(notes, fmt.Sprintf("run %d failed: %s", i+1, r.Error))
		case r.Skipped != "":
			notes = append(notes, fmt.Sprintf("run %d skipped: %s", i+1, r.Skipped))
		default:
			ok = append(ok, r)
			inUse[r.EngineInUse] = true
			if r.Note != "" {
				notes = append(notes, fmt.Sprintf("run %d: %s", i+1, r.Note))
			}
		}
	}
	out := runs[0]
	if len(ok) > 0 {
		out = ok[0]
	}
	out.Run = 0
	out.Runs = make([]Result, len(runs))
	for i, r := range runs {
		r.Run = i + 1
		r.Runs = nil
		r.Latency, r.AckLatency, r.RawLatency = withoutCurve(r.Latency), withoutCurve(r.AckLatency), withoutCurve(r.RawLatency)
		out.Runs[i] = r
	}
	if len(ok) == 0 {
		out.Error = fmt.Sprintf("all %d runs failed: %s", len(runs), strings.Join(notes, "; "))
		out.Note = ""
		return out
	}
	out.Error, out.Skipped = "", ""
	out.MsgsPerSec = medianBy(ok, func(r Result) float64 { return r.MsgsPerSec })
	out.MBPerSec = medianBy(ok, func(r Result) float64 { return r.MBPerSec })
	out.PublishRate = medianBy(ok, func(r Result) float64 { return r.PublishRate })
	out.DurationSec = medianBy(ok, func(r Result) float64 { return r.DurationSec })
	out.Latency = medianLatency(latencies(ok, func(r *Result) *Latency { return r.Latency }))
	out.AckLatency = medianLatency(latencies(ok, func(r *Result) *Latency { return r.AckLatency }))
	out.RawLatency = medianLatency(latencies(ok, func(r *Result) *Latency { return r.RawLatency }))
	rs := make([]*Resources, len(ok))
	for i := range ok {
		rs[i] = ok[i].Resources
	}
	out.Resources = medianResources(rs)
	out.Sent, out.Acked, out.Unacked, out.Unsent, out.Received, out.Bad, out.Errors = 0, 0, 0, 0, 0, 0, 0
	out.ReplLagEnd, out.ReplLagMax = 0, 0
	out.Saturated = false
	for _, r := range ok {
		out.Sent += r.Sent
		out.Acked += r.Acked
		out.Unacked += r.Unacked
		out.Unsent += r.Unsent
		out.Received += r.Received
		out.Bad += r.Bad
		out.Errors += r.Errors
		out.ReplLagEnd = max(out.ReplLagEnd, r.ReplLagEnd)
		out.ReplLagMax = max(out.ReplLagMax, r.ReplLagMax)
		out.Saturated = out.Saturated || r.Saturated
	}
	if len(inUse) > 1 {
		var names []string
		for n := range inUse {
			names = append(names, fmt.Sprintf("%q", n))
		}
		sort.Strings(names)
		notes = append(notes, "the runs' servers reported different backends: "+strings.Join(names, ", "))
	}
	out.Note = strings.Join(notes, "; ")
	return out
}

// latencies returns f of every result (nil entries included).
func latencies(rs []Result, f func(*Result) *Latency) []*Latency {
	out := make([]*Latency, len(rs))
	for i := range rs {
		out[i] = f(&rs[i])
	}
	return out
}

// withoutCurve returns a copy of l without its percentile curve.
func withoutCurve(l *Latency) *Latency {
	if l == nil {
		return nil
	}
	c := *l
	c.Curve = nil
	return &c
}
