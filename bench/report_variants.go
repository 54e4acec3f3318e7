package bench

import (
	"fmt"
	"strings"
)

// Report sections of the Tandem-only scenarios (variants.go): one row per
// measurement, one column per variant, and the ratio to the baseline.

// variantRows groups the results of scen (Tandem's) by measurement: the key
// without its " mode=..." / " engine=..." suffix, in run order.
func variantRows(rr *RunResult, scen, suffix string, variant func(*Result) string) (rows []string, cells map[string]map[string]*Result) {
	cells = map[string]map[string]*Result{}
	for i := range rr.Results {
		r := &rr.Results[i]
		if r.Scenario != scen || r.System != "tandem" {
			continue
		}
		v := variant(r)
		row := strings.TrimPrefix(strings.TrimSuffix(r.Key, " "+suffix+"="+v), scen+" ")
		if cells[row] == nil {
			cells[row] = map[string]*Result{}
			rows = append(rows, row)
		}
		cells[row][v] = r
	}
	return rows, cells
}

// variantCell is a throughput cell with the closed-loop p99 for publishes.
func variantCell(r *Result) string {
	c := cell(r)
	if r != nil && r.Error == "" && r.Skipped == "" && r.Latency != nil && r.Rate == 0 && r.Scenario != ScenFanout && r.Subscribers == 0 {
		c += fmt.Sprintf(", p99 %s", fmtUs(r.Latency.P99))
	}
	return c
}

func ratioOf(a, b *Result) string {
	if measured(a) == nil || measured(b) == nil || a.MsgsPerSec <= 0 || b.MsgsPerSec <= 0 {
		return "–"
	}
	return fmtRatio(a.MsgsPerSec/b.MsgsPerSec) + "×"
}

func variantNotes(b *strings.Builder, rows []string, cells map[string]map[string]*Result, variants []string) {
	n := 0
	for _, row := range rows {
		for _, v := range variants {
			r := cells[row][v]
			if r == nil {
				continue
			}
			if msg := firstNonEmpty(r.Error, r.Skipped, r.Note); msg != "" {
				fmt.Fprintf(b, "- %s: %s\n", r.Key, msg)
				n++
			}
		}
	}
	if n > 0 {
		b.WriteString("\n")
	}
}

func writePairSection(b *strings.Builder, rr *RunResult) {
	st := rr.Settings
	fmt.Fprintf(b, "## Replication: sync pair and async pair (Tandem)\n\n")
	rows, cells := variantRows(rr, ScenPair, "mode", func(r *Result) string { return r.Mode })
	if len(rows) == 0 {
		b.WriteString("_Not run._\n\n")
		return
	}
	fmt.Fprintf(b, "Two Tandem instances A and B (`tandem serve --repl-listen ... --peer NAME=HOST:PORT,MODE`, each with its own journal directory on the same disk and sharing the machine's cores with each other and the load generator) replicate to each other; the publisher is connected to A. "+
		"*single* is one instance, the baseline, measured in the same run with the same parameters; *sync*: A's persisted ack waits until B also has the message on disk (`--repl-downgrade-after %s`, longer than a step, so B holds every ack for the whole step); *async*: A acknowledges after its own fdatasync and ships to B afterwards. "+
		"Every step starts fresh instances. B's lag (messages A stored that B has not acknowledged) is polled every 250 ms from A's `stat`.\n\n", pairDowngradeAfter)
	fmt.Fprintf(b, "Durable publish, one publisher, window %d, %s, closed loop (msgs/s, MB/s of payload, p99 send -> persisted ack):\n\n", st.Window, st.Duration)
	b.WriteString("| measurement | single | sync pair | async pair | sync ÷ single | async ÷ single | B's lag at end / max (async) |\n|---|---:|---:|---:|---:|---:|---:|\n")
	var latRows []string
	for _, row := range rows {
		c := cells[row]
		if strings.HasPrefix(row, "ack-latency") {
			latRows = append(latRows, row)
			continue
		}
		lag := "–"
		if a := c["async"]; a != nil && a.Error == "" {
			lag = fmt.Sprintf("%d / %d", a.ReplLagEnd, a.ReplLagMax)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", row, variantCell(c["single"]), variantCell(c["sync"]), variantCell(c["async"]),
			ratioOf(c["sync"], c["single"]), ratioOf(c["async"], c["single"]), lag)
	}
	b.WriteString("\n")
	if len(latRows) > 0 {
		fmt.Fprintf(b, "Persisted-ack latency at fixed offered rates (%d-byte messages, one publisher, %s, corrected for coordinated omission as in the fixed-rate tables above):\n\n", st.LatencySize, st.Duration)
		b.WriteString("| offered rate | mode | achieved msgs/s | p50 | p90 | p99 | p99.9 | max | p99 vs single |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range latRows {
			base := cells[row]["single"]
			for _, mode := range pairModes {
				r := cells[row][mode]
				if r == nil {
					continue
				}
				label := fmtRate(r.Rate)
				if r.Error != "" {
					fmt.Fprintf(b, "| %s | %s | error | | | | | | |\n", label, mode)
					continue
				}
				if r.Latency == nil {
					fmt.Fprintf(b, "| %s | %s | %s | | | | | | |\n", label, mode, fmtRate(r.MsgsPerSec))
					continue
				}
				vs := ""
				if mode != "single" && base != nil && base.Latency != nil && base.Latency.P99 > 0 {
					vs = fmtRatio(r.Latency.P99/base.Latency.P99) + "×"
				}
				sat := ""
				if r.Saturated {
					sat = " (saturated)"
				}
				l := r.Latency
				fmt.Fprintf(b, "| %s | %s | %s%s | %s | %s | %s | %s | %s | %s |\n", label, mode, fmtRate(r.MsgsPerSec), sat,
					fmtUs(l.P50), fmtUs(l.P90), fmtUs(l.P99), fmtUs(l.P999), fmtUs(l.Max), vs)
			}
		}
		b.WriteString("\n`p99 vs single`: the pair's p99 ÷ the single instance's (what replication adds).\n\n")
	}
	variantNotes(b, rows, cells, pairModes)
}

// Issue 5's target: io_uring at least fanoutTarget times epoll's fan-out
// throughput with fanoutTargetSubs subscribers.
const (
	fanoutTarget     = 1.3
	fanoutTargetSubs = 8
)

func writeEngineSection(b *strings.Builder, rr *RunResult) {
	st := rr.Settings
	b.WriteString("## io_uring vs epoll (Tandem)\n\n")
	rows, cells := variantRows(rr, ScenEngine, "engine", func(r *Result) string { return r.Engine })
	if len(rows) == 0 {
		b.WriteString("_Not run._\n\n")
		return
	}
	runs := max(1, st.EngineRuns)
	how := "once per backend, io_uring then epoll"
	if runs > 1 {
		how = fmt.Sprintf("%d times per backend, the backends alternating (io_uring first in odd runs, epoll first in even ones); every figure below is the median of the %d runs, each figure separately (each run is in the JSON, `runs`)", runs, runs)
	}
	pair := ""
	for _, row := range rows {
		if strings.HasPrefix(row, "sync-pair ") {
			pair = " and the durable publish of a sync pair (two `tandem serve` processes replicating synchronously, both on the backend: the publisher is on A, whose persisted ack waits for B's)"
			break
		}
	}
	fmt.Fprintf(b, "The same steps with `tandem serve --engine uring` and with `--engine epoll`, back to back in one run of the same binary, each on fresh servers, %s: "+
		"durable publish (window %d, %s, closed loop), fan-out (one publisher, %d-byte messages, at most %s or %d messages)%s. "+
		"The backend each server reported in `stat` is in the JSON (`engine_in_use`).\n\n",
		how, st.Window, st.Duration, st.FanoutSize, st.Duration, st.FanoutMessages, pair)
	b.WriteString(engineTargetText(rr, cells) + "\n\n")

	b.WriteString("Throughput, msgs/s (MB/s of payload): publish and sync pair: persisted acks; fan-out: deliveries summed over subscribers.\n\n")
	b.WriteString("| measurement | io_uring | epoll | io_uring ÷ epoll |\n|---|---:|---:|---:|\n")
	for _, row := range rows {
		c := cells[row]
		fmt.Fprintf(b, "| %s | %s | %s | **%s** |\n", row, cell(c["uring"]), cell(c["epoll"]), ratioOf(c["uring"], c["epoll"]))
	}
	b.WriteString("\nAbove 1: io_uring is faster. `*` did not finish within its limits (see notes).\n\n")

	b.WriteString("Latency p50 / p99 / p99.9, closed loop, from the actual send: publish and sync pair: to the persisted ack; fan-out: to the delivery (every subscriber's).\n\n")
	b.WriteString("| measurement | io_uring | epoll | p99 io_uring ÷ epoll |\n|---|---:|---:|---:|\n")
	for _, row := range rows {
		u, e := measured(cells[row]["uring"]), measured(cells[row]["epoll"])
		r := "–"
		if u != nil && e != nil && u.Latency != nil && e.Latency != nil && e.Latency.P99 > 0 {
			r = fmtRatio(u.Latency.P99/e.Latency.P99) + "×"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", row, latencyCell(u), latencyCell(e), r)
	}
	b.WriteString("\nBelow 1: io_uring's p99 is lower.\n\n")

	cores := rr.Machine.Cores
	anyRes := false
	for _, row := range rows {
		for _, r := range cells[row] {
			anyRes = anyRes || (measured(r) != nil && r.Resources != nil)
		}
	}
	if !anyRes {
		b.WriteString("_Server CPU and context switches not measured: " + resourcesMissing(rr) + "._\n\n")
	} else {
		fmt.Fprintf(b, "Cost per million messages (the messages msgs/s counts), from just before the step's clients connect to its last ack or delivery: "+
			"**server CPU**: CPU seconds of the `tandem serve` process(es), every thread (the process's CPU-time clock), the sync pair's A + B; "+
			"**context switches** of every server thread (voluntary + involuntary, /proc/PID/task/TID/status); "+
			"**bench CPU**: the load generator's (this process, getrusage), which shares the machine's %d cores with the server; "+
			"**cores busy**: server + bench CPU over the step's wall time and the %d cores; "+
			"**other**: the rest of the machine's busy time (/proc/stat) meanwhile, same unit: other processes on the machine.\n\n", cores, cores)
		b.WriteString("| measurement | server CPU s/M io_uring | epoll | ÷ | context switches/M io_uring | epoll | ÷ | bench CPU s/M io_uring / epoll | cores busy io_uring / epoll | other io_uring / epoll |\n" +
			"|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range rows {
			u, e := resourcesOf(cells[row]["uring"]), resourcesOf(cells[row]["epoll"])
			cpu := func(x *Resources) string {
				if x == nil {
					return "–"
				}
				return fmt.Sprintf("%.3f", x.ServerCPUPerM)
			}
			ctx := func(x *Resources) string {
				if x == nil {
					return "–"
				}
				return fmtRate(x.ServerCtxPerM)
			}
			pair := func(f func(*Resources) string) string { return f(u) + " / " + f(e) }
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row,
				cpu(u), cpu(e), resRatio(u, e, func(x *Resources) float64 { return x.ServerCPUPerM }),
				ctx(u), ctx(e), resRatio(u, e, func(x *Resources) float64 { return x.ServerCtxPerM }),
				pair(func(x *Resources) string {
					if x == nil {
						return "–"
					}
					return fmt.Sprintf("%.3f", x.BenchCPUPerM)
				}),
				pair(func(x *Resources) string { return pct(x.busyFraction(cores)) }),
				pair(func(x *Resources) string { return pct(x.otherFraction(cores)) }))
		}
		b.WriteString("\nBelow 1: io_uring costs less.\n\n")
	}
	variantNotes(b, rows, cells, engines)
}

// resourcesMissing says why a run has no server CPU figures.
func resourcesMissing(rr *RunResult) string {
	for _, s := range rr.Systems {
		if s.Name == "tandem" && s.Binary != "" {
			return "not recorded by this run's version of the bench"
		}
	}
	return "Tandem ran inside the bench process (`--in-process`)"
}

// measured returns r if it has figures (not missing, failed or skipped).
func measured(r *Result) *Result {
	if r == nil || r.Error != "" || r.Skipped != "" {
		return nil
	}
	return r
}

func resourcesOf(r *Result) *Resources {
	if r = measured(r); r == nil || r.Resources == nil || r.Resources.Messages <= 0 {
		return nil
	}
	return r.Resources
}

func latencyCell(r *Result) string {
	if r == nil || r.Latency == nil {
		return "–"
	}
	l := r.Latency
	return fmt.Sprintf("%s / %s / %s", fmtUs(l.P50), fmtUs(l.P99), fmtUs(l.P999))
}

// resRatio is f(u) ÷ f(e), or "–".
func resRatio(u, e *Resources, f func(*Resources) float64) string {
	if u == nil || e == nil || f(e) <= 0 {
		return "–"
	}
	return fmtRatio(f(u)/f(e)) + "×"
}

// pct formats a fraction as a percentage ("–" for 0: unknown).
func pct(v float64) string {
	if v <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", v*100)
}

// otherFraction is the share of the cores busy with neither the server
// nor the bench between the samples (0: unknown or none).
func (r *Resources) otherFraction(cores int) float64 {
	if r == nil || r.MachineBusySec <= 0 || cores <= 0 || r.WallSec <= 0 {
		return 0
	}
	return max(0, r.MachineBusySec-r.ServerCPUSec-r.BenchCPUSec) / (r.WallSec * float64(cores))
}

// engineTargetText says whether issue 5's fan-out target is met, with the
// measurements that explain the ratio: the CPU cost per delivery (server
// and load generator) and how busy they kept the cores. With
// msgs/s = busy × cores ÷ (CPU per message), the throughput ratio is the
// product of the cost ratio and the busy ratio.
func engineTargetText(rr *RunResult, cells map[string]map[string]*Result) string {
	st := rr.Settings
	head := fmt.Sprintf("**Fan-out target** (issue 5: io_uring at least %s× epoll's 1 → %d fan-out throughput)", fmtRatio(fanoutTarget), fanoutTargetSubs)
	c := cells[fmt.Sprintf("fanout size=%d subs=%d", st.FanoutSize, fanoutTargetSubs)]
	if c == nil {
		return head + fmt.Sprintf(": not checked, this run has no 1 → %d fan-out step.", fanoutTargetSubs)
	}
	u, e := c["uring"], c["epoll"]
	switch {
	case u != nil && u.Skipped != "":
		return head + ": not checked, io_uring is not available here (" + u.Skipped + ")."
	case measured(u) == nil || measured(e) == nil || u.MsgsPerSec <= 0 || e.MsgsPerSec <= 0:
		return head + ": not checked, a step failed (see the notes)."
	}
	ratio := u.MsgsPerSec / e.MsgsPerSec
	runs := "one run per backend"
	if n := max(1, st.EngineRuns); n > 1 {
		runs = fmt.Sprintf("medians of %d runs per backend", n)
	}
	verdict := "met"
	if ratio < fanoutTarget {
		verdict = "not met on this machine"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "%s: **%s**. io_uring delivered %s deliveries/s, epoll %s: **%s×** (%s", head, verdict, fmtRate(u.MsgsPerSec), fmtRate(e.MsgsPerSec), fmtRatio(ratio), runs)
	if st.Quick {
		s.WriteString("; --quick: 1 s steps, a smoke test, not a verdict")
	}
	s.WriteString(").")
	ru, re := resourcesOf(u), resourcesOf(e)
	cores := rr.Machine.Cores
	if ru == nil || re == nil || cores <= 0 {
		s.WriteString(" Server CPU not measured (" + resourcesMissing(rr) + "), so no breakdown.")
		return s.String()
	}
	fmt.Fprintf(&s, " Per million deliveries the server used %.3f CPU-s with io_uring and %.3f with epoll (%s) and %s vs %s context switches (%s); the load generator, on the same %d cores, %.3f vs %.3f CPU-s.",
		ru.ServerCPUPerM, re.ServerCPUPerM, resRatio(ru, re, func(x *Resources) float64 { return x.ServerCPUPerM }),
		fmtRate(ru.ServerCtxPerM), fmtRate(re.ServerCtxPerM), resRatio(ru, re, func(x *Resources) float64 { return x.ServerCtxPerM }),
		cores, ru.BenchCPUPerM, re.BenchCPUPerM)
	tu, te := ru.ServerCPUPerM+ru.BenchCPUPerM, re.ServerCPUPerM+re.BenchCPUPerM
	bu, be := ru.busyFraction(cores), re.busyFraction(cores)
	if tu > 0 && te > 0 && bu > 0 && be > 0 {
		fmt.Fprintf(&s, " Deliveries/s ≈ CPU time available ÷ CPU per delivery: the total CPU per delivery (server + generator, %.3f vs %.3f s/M) makes a factor of %s× and how busy they kept the %d cores (%s vs %s) one of %s×.",
			tu, te, fmtRatio(te/tu), cores, pct(bu), pct(be), fmtRatio(bu/be))
		if min(bu, be) >= 0.85 {
			s.WriteString(" Both kept the cores nearly saturated: the step is CPU-bound, so io_uring can only win by costing less CPU per delivery in total.")
			if ratio < fanoutTarget {
				need := te / fanoutTarget
				fmt.Fprintf(&s, " %s× would need a total of at most %.3f s/M with io_uring", fmtRatio(fanoutTarget), need)
				if room := need - ru.BenchCPUPerM; room > 0 {
					fmt.Fprintf(&s, ", i.e. a server at %.3f s/M instead of %.3f.", room, ru.ServerCPUPerM)
				} else {
					fmt.Fprintf(&s, ", less than the load generator alone uses (%.3f): out of reach with the generator on the same cores.", ru.BenchCPUPerM)
				}
			}
		} else if ou, oe := ru.otherFraction(cores), re.otherFraction(cores); min(bu+ou, be+oe) >= 0.85 && max(ou, oe) >= 0.10 {
			fmt.Fprintf(&s, " The cores were nearly saturated, but other processes had %s / %s of them: the step competed with them for CPU, so it does not show what io_uring gains; rerun on a quiet machine.", pct(ou), pct(oe))
			return s.String()
		} else {
			s.WriteString(" The cores were not saturated, so the CPU per delivery does not bound this step on its own.")
		}
	}
	if ou, oe := ru.otherFraction(cores), re.otherFraction(cores); max(ou, oe) >= 0.10 {
		fmt.Fprintf(&s, " Other processes kept %s / %s of the cores busy meanwhile: a shared machine, noisy figures.", pct(ou), pct(oe))
	}
	return s.String()
}

func writeFailoverSection(b *strings.Builder, rr *RunResult) {
	st := rr.Settings
	b.WriteString("## Failover time (HA client)\n\n")
	var r *Result
	for i := range rr.Results {
		if rr.Results[i].Scenario == ScenFailover && rr.Results[i].System == "tandem" && rr.Results[i].Mode != sharedStoreMode && rr.Results[i].Failover != nil {
			r = &rr.Results[i]
		}
	}
	if r == nil {
		b.WriteString("_Not run._\n\n")
		return
	}
	defer writeSharedFailover(b, rr)
	fs := r.Failover
	kill := "SIGKILL of its `tandem serve` process"
	if fs != nil && strings.HasPrefix(fs.KillMethod, "in-process") {
		kill = "closing the in-process server (" + fs.KillMethod + ")"
	}
	fmt.Fprintf(b, "A hot-hot sync pair of Tandem instances A and B (as in the pair scenario: `--peer ...,sync`, `--repl-downgrade-after %s`), "+
		"an HA publisher (`client.NewHA`, memory publish store) publishing %d-byte messages at %s msgs/s on an open-loop schedule, "+
		"and an HA subscriber (`WithSubID`, `From(MostRecent)`, memory bookmark store, `Discard` after every message), "+
		"both with a %s heartbeat and A listed first in `Servers`. "+
		"Each run waits until the pair is in sync both ways, both clients are connected and the subscriber is receiving (%s of steady publishing), "+
		"then kills the instance the subscriber is on (%s). "+
		"**Failover time**: from the kill to the first message the subscriber receives through the other instance; that message must be the one right after the last message received before it (no loss, no repeat at the switch). "+
		"The killed instance is then started again on its data directory and rejoins the pair; the clients stay where they failed over to, so the next run kills the other instance (runs alternate A, B).\n\n",
		pairDowngradeAfter, st.FailoverSize, fmtRate(float64(st.FailoverRate)), st.FailoverHeartbeat, failoverSettle, kill)
	if r.Error != "" {
		fmt.Fprintf(b, "**Error:** %s\n\n", r.Error)
		return
	}
	b.WriteString("| runs | p50 | p90 | p99 | max | lost or repeated at the switch | no failover within 10 s |\n|---:|---:|---:|---:|---:|---:|---:|\n")
	if l := r.Latency; l != nil && fs != nil {
		fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %d | %d |\n\n", len(fs.TimesUs), fmtUs(l.P50), fmtUs(l.P90), fmtUs(l.P99), fmtUs(l.Max), fs.Violations, fs.Timeouts)
		if len(fs.TimesUs) < 100 {
			b.WriteString("With fewer than 100 runs, p99 is the largest run.\n\n")
		}
		fmt.Fprintf(b, "Over the whole step: %d messages published, %d received, %d out of order or repeated, %d dropped by the HA client's duplicate filter; "+
			"the publisher failed over %d times, the subscriber %d times. From each kill to the pair in sync again with both clients connected: p50 %.0f ms.\n\n",
			r.Sent, r.Received, r.Bad, fs.Duplicates, fs.PublisherFailovers, fs.SubscriberFailovers, fs.RestartP50Ms)
		if l := fs.PublishLatency; l != nil {
			fmt.Fprintf(b, "Time from the kill to the HA publisher's first persisted ack of a message published after it: p50 %s, max %s (%d runs had none by the time the pair was in sync again, counted as that time). "+
				"The surviving instance of the sync pair may hold its acks until the killed one is back (`--repl-downgrade-after %s` is longer than a run), so this includes the restart.\n\n",
				fmtUs(l.P50), fmtUs(l.Max), fs.PublishTimeouts, pairDowngradeAfter)
		}
	}
	if r.Note != "" {
		fmt.Fprintf(b, "- %s: %s\n\n", r.Key, r.Note)
	}
}

// writeSharedFailover adds the shared-store variant's table to the
// failover section (sharedstore.go), when it ran.
func writeSharedFailover(b *strings.Builder, rr *RunResult) {
	for i := range rr.Results {
		r := &rr.Results[i]
		if r.Scenario != ScenFailover || r.Mode != sharedStoreMode {
			continue
		}
		b.WriteString("### Shared store (active/passive)\n\n")
		b.WriteString("Two `tandem serve --shared-store` processes on one data directory, the same publisher and subscriber given both addresses. " +
			"Each run SIGKILLs the active (the process the subscriber is on); **takeover time**: from the kill to the first message the subscriber receives through the other address, " +
			"which took the lock (polled every 100 ms), recovered the journal and started serving. The killed process is restarted as the new passive (docs/ha.md).\n\n")
		if r.Error != "" {
			fmt.Fprintf(b, "**Error:** %s\n\n", r.Error)
			break
		}
		fs := r.Failover
		b.WriteString("| runs | p50 | p90 | p99 | max | lost or repeated at the switch | no takeover within 10 s |\n|---:|---:|---:|---:|---:|---:|---:|\n")
		if l := r.Latency; l != nil && fs != nil {
			fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %d | %d |\n\n", len(fs.TimesUs), fmtUs(l.P50), fmtUs(l.P90), fmtUs(l.P99), fmtUs(l.Max), fs.Violations, fs.Timeouts)
			fmt.Fprintf(b, "Over the whole step: %d messages published, %d received, %d out of order or repeated.\n\n", r.Sent, r.Received, r.Bad)
		}
		if r.Note != "" {
			fmt.Fprintf(b, "- %s: %s\n\n", r.Key, r.Note)
		}
		break
	}
	var rows []*Result
	for i := range rr.Results {
		if r := &rr.Results[i]; r.Scenario == ScenFailover && strings.HasPrefix(r.Key, "failover compare ") {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("Durable publish (one publisher, closed loop) and persisted-ack latency (fixed rate), shared store (the active, a passive beside it, one journal) vs a sync pair (every ack waits for the peer's fdatasync), each on fresh servers in the same run:\n\n")
	b.WriteString("| measurement | msgs/s | p50 | p99 | p99.9 |\n|---|---:|---:|---:|---:|\n")
	for _, r := range rows {
		if r.Error != "" || r.Latency == nil {
			fmt.Fprintf(b, "| %s | error: %s | | | |\n", strings.TrimPrefix(r.Key, "failover compare "), r.Error)
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", strings.TrimPrefix(r.Key, "failover compare "), fmtRate(r.MsgsPerSec),
			fmtUs(r.Latency.P50), fmtUs(r.Latency.P99), fmtUs(r.Latency.P999))
	}
	b.WriteString("\n")
}

// writeTLSSection is the tls scenario's table (tls.go): each measurement
// over plaintext and over TLS, and the ratios TLS ÷ plaintext.
func writeTLSSection(b *strings.Builder, rr *RunResult) {
	st := rr.Settings
	fmt.Fprintf(b, "## TLS vs plaintext (Tandem)\n\n")
	rows, cells := variantRows(rr, ScenTLS, "mode", func(r *Result) string { return r.Mode })
	if len(rows) == 0 {
		b.WriteString("_Not run (opt-in: `tandem bench --systems tandem --scenarios tls`)._\n\n")
		return
	}
	fmt.Fprintf(b, "One Tandem instance serving plaintext, the baseline, and one serving TLS on its client port (`tandem serve --tls-cert FILE --tls-key FILE`: TLS 1.3, an ECDSA P-256 server certificate signed by a CA the bench makes at run time; the server's Go TLS relay per connection, engine/tls.go), measured in the same run with the same parameters, every step on a fresh server, alternating which of the two goes first; the load generator connects with `client.WithTLS` trusting that CA. Every publish asks for a persisted ack.\n\n")
	fmt.Fprintf(b, "Durable publish, one publisher, window %d, %s, closed loop (msgs/s, MB/s of payload, p99 send -> persisted ack):\n\n", st.Window, st.Duration)
	b.WriteString("| measurement | plaintext | TLS | TLS ÷ plaintext |\n|---|---:|---:|---:|\n")
	var latRows []string
	for _, row := range rows {
		c := cells[row]
		if !strings.HasPrefix(row, "publish") {
			latRows = append(latRows, row)
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", row, variantCell(c["plaintext"]), variantCell(c["tls"]), ratioOf(c["tls"], c["plaintext"]))
	}
	b.WriteString("\n")
	if len(latRows) > 0 {
		fmt.Fprintf(b, "Latency at fixed offered rates (%d-byte messages, one publisher, %s, corrected for coordinated omission as in the fixed-rate tables above): *ack-latency* is publish -> persisted ack, *e2e-latency* publish -> delivery to one subscriber on its own connection (both over TLS in the TLS rows):\n\n", st.LatencySize, st.Duration)
		b.WriteString("| measurement | mode | achieved msgs/s | p50 | p90 | p99 | p99.9 | max | p50 TLS ÷ plaintext | p99 TLS ÷ plaintext |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range latRows {
			base := cells[row]["plaintext"]
			for _, mode := range tlsModes {
				r := cells[row][mode]
				if r == nil {
					continue
				}
				if r.Error != "" {
					fmt.Fprintf(b, "| %s | %s | error | | | | | | | |\n", row, mode)
					continue
				}
				if r.Latency == nil {
					fmt.Fprintf(b, "| %s | %s | %s | | | | | | | |\n", row, mode, fmtRate(r.MsgsPerSec))
					continue
				}
				p50, p99 := "", ""
				if mode == "tls" && base != nil && base.Error == "" && base.Latency != nil {
					p50, p99 = latRatio(r.Latency.P50, base.Latency.P50), latRatio(r.Latency.P99, base.Latency.P99)
				}
				sat := ""
				if r.Saturated {
					sat = " (saturated)"
				}
				l := r.Latency
				fmt.Fprintf(b, "| %s | %s | %s%s | %s | %s | %s | %s | %s | %s | %s |\n", row, mode, fmtRate(r.MsgsPerSec), sat,
					fmtUs(l.P50), fmtUs(l.P90), fmtUs(l.P99), fmtUs(l.P999), fmtUs(l.Max), p50, p99)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "**TLS ÷ plaintext:** %s.\n\n", tlsRatioLine(rows, cells))
	variantNotes(b, rows, cells, tlsModes)
}

func latRatio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmtRatio(a/b) + "×"
}

// tlsRatioLine sums the tls scenario up in one line: the throughput ratio
// of each publish row, the p50 and p99 ratios of each latency row.
func tlsRatioLine(rows []string, cells map[string]map[string]*Result) string {
	var parts []string
	for _, row := range rows {
		t, p := measured(cells[row]["tls"]), measured(cells[row]["plaintext"])
		if t == nil || p == nil {
			parts = append(parts, row+" –")
			continue
		}
		if strings.HasPrefix(row, "publish") {
			parts = append(parts, fmt.Sprintf("%s throughput %s", row, ratioOf(t, p)))
			continue
		}
		if t.Latency == nil || p.Latency == nil {
			parts = append(parts, row+" –")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s p50 %s, p99 %s", row, latRatio(t.Latency.P50, p.Latency.P50), latRatio(t.Latency.P99, p.Latency.P99)))
	}
	return strings.Join(parts, "; ")
}
