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
	if a == nil || b == nil || a.Error != "" || b.Error != "" || a.MsgsPerSec <= 0 || b.MsgsPerSec <= 0 {
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

func writeEngineSection(b *strings.Builder, rr *RunResult) {
	st := rr.Settings
	b.WriteString("## io_uring vs epoll (Tandem)\n\n")
	rows, cells := variantRows(rr, ScenEngine, "engine", func(r *Result) string { return r.Engine })
	if len(rows) == 0 {
		b.WriteString("_Not run._\n\n")
		return
	}
	fmt.Fprintf(b, "The durable publish (window %d, %s, closed loop) and fan-out (%d-byte messages, at most %s or %d messages) steps, run once with `tandem serve --engine uring` and once with `--engine epoll`, back to back on fresh servers; everything else is the same. The backend each server reported in `stat` is in the JSON (`engine_in_use`). Publish cells: msgs/s (MB/s) and p99 send -> persisted ack; fan-out: deliveries/s summed over subscribers.\n\n",
		st.Window, st.Duration, st.FanoutSize, st.Duration, st.FanoutMessages)
	b.WriteString("| measurement | io_uring | epoll | io_uring ÷ epoll |\n|---|---:|---:|---:|\n")
	for _, row := range rows {
		c := cells[row]
		fmt.Fprintf(b, "| %s | %s | %s | **%s** |\n", row, variantCell(c["uring"]), variantCell(c["epoll"]), ratioOf(c["uring"], c["epoll"]))
	}
	b.WriteString("\nAbove 1: io_uring is faster. `*` did not finish within its limits (see notes).\n\n")
	variantNotes(b, rows, cells, engines)
}

func writeFailoverSection(b *strings.Builder, rr *RunResult) {
	st := rr.Settings
	b.WriteString("## Failover time (HA client)\n\n")
	var r *Result
	for i := range rr.Results {
		if rr.Results[i].Scenario == ScenFailover && rr.Results[i].System == "tandem" {
			r = &rr.Results[i]
		}
	}
	if r == nil {
		b.WriteString("_Not run._\n\n")
		return
	}
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
	}
	if r.Note != "" {
		fmt.Fprintf(b, "- %s: %s\n\n", r.Key, r.Note)
	}
}
