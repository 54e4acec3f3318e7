package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// plannedStep is one step of a run's matrix, as Run would take it.
type plannedStep struct {
	system, scenario, key string
	skipped               bool // recorded without running (replay skip, missing peer)
}

// plan lists the steps Run takes for set, in order, without running them.
// The keys are the results' (the tests check the two agree).
func plan(set Settings, skippedSystem func(string) bool) []plannedStep {
	want := map[string]bool{}
	for _, s := range set.Scenarios {
		want[s] = true
	}
	var out []plannedStep
	for _, sys := range set.Systems {
		if skippedSystem != nil && skippedSystem(sys) {
			continue
		}
		add := func(scen, key string, skipped bool) {
			out = append(out, plannedStep{system: sys, scenario: scen, key: key, skipped: skipped})
		}
		rates := func() []string {
			var rs []string
			for _, rt := range set.Rates {
				rs = append(rs, fmt.Sprint(rt))
			}
			if set.KneeFraction > 0 && len(set.Sizes) > 0 && want[ScenPublish] {
				rs = append(rs, fmt.Sprintf("knee(%.0f%%)", set.KneeFraction*100))
			}
			return rs
		}
		for _, sc := range scenarios() {
			if sc.run == nil || !want[sc.name] {
				continue
			}
			switch sc.name {
			case ScenPublish:
				for _, size := range set.Sizes {
					for _, pubs := range set.Publishers {
						add(sc.name, fmt.Sprintf("publish size=%d pubs=%d", size, pubs), false)
					}
				}
			case ScenAckLatency, ScenE2E:
				for _, rl := range rates() {
					add(sc.name, fmt.Sprintf("%s size=%d rate=%s", sc.name, set.LatencySize, rl), false)
				}
			case ScenFanout:
				for _, n := range set.Fanout {
					add(sc.name, fmt.Sprintf("fanout size=%d subs=%d", set.FanoutSize, n), false)
				}
			case ScenReplay:
				_, skip := set.ReplaySkip[sys]
				add(sc.name, fmt.Sprintf("replay size=%d", set.ReplaySize), skip)
			case ScenPair:
				if sys != "tandem" {
					continue
				}
				for _, size := range set.PairSizes {
					for _, m := range pairModes {
						add(sc.name, fmt.Sprintf("pair publish size=%d pubs=1 mode=%s", size, m), false)
					}
				}
				for _, rate := range set.PairRates {
					for _, m := range pairModes {
						add(sc.name, fmt.Sprintf("pair ack-latency size=%d rate=%d mode=%s", set.LatencySize, rate, m), false)
					}
				}
			case ScenEngine:
				if sys != "tandem" {
					continue
				}
				for _, size := range set.EngineSizes {
					for _, pubs := range set.EnginePublishers {
						for _, e := range engines {
							add(sc.name, fmt.Sprintf("engine publish size=%d pubs=%d engine=%s", size, pubs, e), false)
						}
					}
				}
				for _, n := range set.EngineFanout {
					for _, e := range engines {
						add(sc.name, fmt.Sprintf("engine fanout size=%d subs=%d engine=%s", set.FanoutSize, n, e), false)
					}
				}
				for _, size := range set.EnginePairSizes {
					for _, e := range engines {
						add(sc.name, fmt.Sprintf("engine sync-pair publish size=%d pubs=1 engine=%s", size, e), false)
					}
				}
			case ScenFailover:
				if (sys == "nats-r3-always" || sys == "nats-r3-default") && set.FailoverPeerRuns > 0 && set.FailoverPeerRate > 0 {
					add(sc.name, natsFailoverKey(&set), false)
				}
				if sys != "tandem" || set.FailoverRuns <= 0 {
					continue
				}
				add(sc.name, failoverKey(&set), false)
			case ScenTLS:
				if sys != "tandem" {
					continue
				}
				n := 0
				for _, size := range set.TLSSizes {
					for _, m := range tlsOrder(n) {
						add(sc.name, fmt.Sprintf("tls publish size=%d pubs=1 mode=%s", size, m), false)
					}
					n++
				}
				for _, kind := range []string{"ack-latency", "e2e-latency"} {
					for _, rate := range set.Rates {
						for _, m := range tlsOrder(n) {
							add(sc.name, fmt.Sprintf("tls %s size=%d rate=%d mode=%s", kind, set.LatencySize, rate, m), false)
						}
						n++
					}
				}
			}
		}
	}
	return out
}

// Per-step costs of the estimate besides the measured interval, from the
// full run of 2026-11-22 on 2 cores (bench/results/run-20261122-025734.json:
// 452 s for 78 steps whose measured intervals sum to 395 s).
const (
	estStepOverhead = 700 * time.Millisecond // start, warm-up, drain, stop
	estPairStart    = 1500 * time.Millisecond
	estReplayRate   = 300000.0 // msgs/s preloaded and replayed when prev has no figure
	// The failover step (tandem bench --scenarios failover, 2026-11-22,
	// 2 cores: 42 s, of which 50 runs 26 s): one run (settle, kill,
	// failover, restart, pair in sync again) when prev has no failover
	// step, and the step's start (both processes' first journal segments),
	// warm-up, drain and stop.
	estFailoverRun   = 600 * time.Millisecond
	estFailoverStart = 16 * time.Second
	// A replicated NATS peer's failover run (nats_failover.go): a guess
	// until a run records one.
	estNATSFailoverRun = 10 * time.Second
	// Starting a replicated peer (peers.go): the NATS cluster electing its
	// meta leader and the stream's, the Redis replica's first sync.
	estReplicatedStart = 4 * time.Second
)

// Estimate prints the steps of set and how long they should take, without
// running anything: a dry run. prev, if set, is an earlier run on this
// machine whose step durations are used where it has the same step (or,
// for the engine scenario, the same publish / fan-out step); other steps
// count as the measured interval plus the overhead above (so do all when
// prev's steps were of another length). It returns the
// estimated total.
func Estimate(w io.Writer, set Settings, prev *RunResult, skippedSystem func(string) bool) time.Duration {
	steps := plan(set, skippedSystem)
	type agg struct {
		n int
		d time.Duration
	}
	per := map[string]*agg{}
	var order []string
	var total time.Duration
	for _, st := range steps {
		d := estimateStep(set, prev, st)
		k := st.system + "\t" + st.scenario
		if per[k] == nil {
			per[k] = &agg{}
			order = append(order, k)
		}
		per[k].n++
		per[k].d += d
		total += d
	}
	probe := time.Duration(set.FsyncProbe) * 300 * time.Microsecond
	total += probe
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "system\tscenario\tsteps\testimate\t")
	byScen := map[string]*agg{}
	var scenOrder []string
	for _, k := range order {
		fmt.Fprintf(tw, "%s\t%d\t%s\t\n", k, per[k].n, per[k].d.Round(time.Second))
		_, scen, _ := strings.Cut(k, "\t")
		if byScen[scen] == nil {
			byScen[scen] = &agg{}
			scenOrder = append(scenOrder, scen)
		}
		byScen[scen].n += per[k].n
		byScen[scen].d += per[k].d
	}
	tw.Flush()
	sort.Strings(scenOrder)
	fmt.Fprintln(w)
	for _, s := range scenOrder {
		fmt.Fprintf(w, "%-12s %3d steps  %s\n", s, byScen[s].n, byScen[s].d.Round(time.Second))
	}
	src := "model only (no earlier run given)"
	if prev != nil {
		src = fmt.Sprintf("step durations of the run of %s where it has them", prev.Started.Format("2006-01-02 15:04"))
	}
	fmt.Fprintf(w, "\n%d steps, estimated %s (%s)\n", len(steps), total.Round(time.Second), src)
	return total
}

func estimateStep(set Settings, prev *RunResult, st plannedStep) time.Duration {
	d := estimateStepOnly(set, prev, st)
	if d > 0 && isReplicated(st.system) {
		d += estReplicatedStart
	}
	return d
}

// estimateStepOnly is a step's estimate on a single server (or Tandem's
// pair).
func estimateStepOnly(set Settings, prev *RunResult, st plannedStep) time.Duration {
	if st.skipped {
		return 0
	}
	secs := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	lookup := func(key string) *Result {
		if prev == nil || prev.Settings.Duration != set.Duration {
			return nil
		}
		if r := prev.find(key, st.system); r != nil && r.Error == "" && r.Skipped == "" && r.DurationSec > 0 {
			return r
		}
		return nil
	}
	base := set.Duration + estStepOverhead
	switch st.scenario {
	case ScenReplay:
		rate := estReplayRate
		if r := lookup(st.key); r != nil && r.PublishRate > 0 {
			rate = r.PublishRate
		}
		preload := min(secs(float64(set.ReplayMessages)/rate), set.ReplayPreloadTimeout)
		replay := min(secs(float64(set.ReplayMessages)/estReplayRate), set.ReplayTimeout)
		if r := lookup(st.key); r != nil {
			replay = secs(r.DurationSec)
		}
		return preload + replay + estStepOverhead
	case ScenPair:
		if strings.Contains(st.key, "mode=single") {
			return base
		}
		return base + estPairStart
	case ScenEngine:
		// EngineRuns runs of the step, each like the same engine step of
		// prev (its duration is the median of its runs), else like the
		// peer scenario's step of the same measurement.
		runs := time.Duration(max(1, set.EngineRuns))
		one := base
		if strings.Contains(st.key, " sync-pair ") {
			one += estPairStart
		}
		k := strings.TrimPrefix(st.key, "engine ")
		k = k[:strings.LastIndex(k, " engine=")]
		if r := lookup(st.key); r != nil {
			one = secs(r.DurationSec) + estStepOverhead
			if strings.Contains(st.key, " sync-pair ") {
				one += estPairStart
			}
		} else if r := lookup(k); r != nil {
			one = secs(r.DurationSec) + estStepOverhead
		}
		return runs * one
	case ScenFailover:
		// The runs do not depend on the step duration: any earlier
		// failover step with the same key, scaled to the number of runs.
		per := estFailoverRun
		if prev != nil {
			if r := prev.find(st.key, st.system); r != nil && r.Error == "" && r.Failover != nil && r.Failover.Runs > 0 && r.DurationSec > 0 {
				per = secs(r.DurationSec / float64(r.Failover.Runs))
			}
		}
		if st.system != "tandem" {
			// A replicated NATS peer: the stream leader's election (4-9 s)
			// and the restarted server catching up, per run.
			per = estNATSFailoverRun
			if prev != nil {
				if r := prev.find(st.key, st.system); r != nil && r.Error == "" && r.Failover != nil && r.Failover.Runs > 0 && r.DurationSec > 0 {
					per = secs(r.DurationSec / float64(r.Failover.Runs))
				}
			}
			return time.Duration(set.FailoverPeerRuns)*per + estFailoverStart
		}
		return time.Duration(set.FailoverRuns)*per + estFailoverStart
	case ScenPublish, ScenFanout, ScenTLS:
		if r := lookup(st.key); r != nil {
			return secs(r.DurationSec) + estStepOverhead
		}
	}
	return base
}
