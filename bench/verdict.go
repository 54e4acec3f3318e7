package bench

import (
	"fmt"
	"io"
	"strings"
)

// Verdicts: issue 15's latency targets, checked against one run's results.
// Each target gives one line
//
//	target NAME: VALUE vs GOAL: met|missed
//
// (or "not measured" in place of met|missed when the run has no result
// for it). The report lists them (writeVerdictSection) and `tandem bench`
// prints them on stdout at the end (also with --render).
//
// The targets, all persisted-ack latency at a fixed offered rate,
// corrected for coordinated omission, 128-byte messages:
//   - single-10k-p50, single-100k-p50: a single Tandem instance's p50 <=
//     2 x the machine's fdatasync p50 (machine.fdatasync.p50_us, the probe
//     of the same run) + 100 µs;
//   - single-10k-p99, single-100k-p99: its p99 <= 1 ms;
//     "in every scenario": VALUE is the worst of the single-instance
//     results at that rate: the ack-latency scenario, the pair scenario's
//     single mode and the tls scenario's plaintext mode (when run);
//   - sync-pair-10k-p50 <= 1 ms, sync-pair-10k-p99 <= 2 ms,
//     sync-pair-100k-p99 <= 3 ms: the pair scenario's sync mode.

// Verdict is one target's check.
type Verdict struct {
	Name  string `json:"name"`
	Value string `json:"value"` // the figure measured, and where the worst came from
	Goal  string `json:"goal"`
	// Status is "met", "missed" or "not measured".
	Status string `json:"status"`
}

// Line is the verdict as printed: "target NAME: VALUE vs GOAL: STATUS".
func (v Verdict) Line() string {
	return fmt.Sprintf("target %s: %s vs %s: %s", v.Name, v.Value, v.Goal, v.Status)
}

// Verdict statuses.
const (
	VerdictMet         = "met"
	VerdictMissed      = "missed"
	VerdictNotMeasured = "not measured"
)

// verdictSource is one result a target reads, named for the VALUE text.
type verdictSource struct {
	label string
	r     *Result
}

// singleSources are the single-instance persisted-ack results at rate.
func singleSources(rr *RunResult, rate float64) []verdictSource {
	var out []verdictSource
	for i := range rr.Results {
		r := &rr.Results[i]
		if r.System != "tandem" || r.Rate != rate || strings.HasPrefix(r.RateLabel, "knee") {
			continue
		}
		switch {
		case r.Scenario == ScenAckLatency:
			out = append(out, verdictSource{ScenAckLatency, r})
		case r.Scenario == ScenPair && r.Mode == "single" && strings.HasPrefix(r.Key, "pair ack-latency "):
			out = append(out, verdictSource{"pair", r})
		case r.Scenario == ScenTLS && r.Mode == "plaintext" && strings.HasPrefix(r.Key, "tls ack-latency "):
			out = append(out, verdictSource{"tls plaintext", r})
		}
	}
	return out
}

// syncPairSources are the sync pair's persisted-ack results at rate.
func syncPairSources(rr *RunResult, rate float64) []verdictSource {
	var out []verdictSource
	for i := range rr.Results {
		r := &rr.Results[i]
		if r.System == "tandem" && r.Scenario == ScenPair && r.Mode == "sync" && r.Rate == rate && strings.HasPrefix(r.Key, "pair ack-latency ") {
			out = append(out, verdictSource{"pair", r})
		}
	}
	return out
}

// check makes the verdict of the worst of srcs' figure (pick) against
// limit (µs).
func check(name, goal string, limit float64, srcs []verdictSource, pick func(*Latency) float64) Verdict {
	v := Verdict{Name: name, Goal: goal}
	if len(srcs) == 0 {
		v.Value, v.Status = "–", VerdictNotMeasured
		return v
	}
	worst, from := -1.0, ""
	var failed []string
	for _, s := range srcs {
		if s.r.Error != "" || s.r.Latency == nil {
			failed = append(failed, s.label)
			continue
		}
		if x := pick(s.r.Latency); x > worst {
			worst, from = x, s.label
		}
	}
	switch {
	case worst < 0:
		v.Value, v.Status = "error in "+strings.Join(failed, ", "), VerdictMissed
		return v
	case len(srcs) > 1:
		v.Value = fmt.Sprintf("%s (worst of %d scenarios: %s)", fmtUs(worst), len(srcs), from)
	default:
		v.Value = fmt.Sprintf("%s (%s)", fmtUs(worst), from)
	}
	v.Status = VerdictMet
	if worst > limit || len(failed) > 0 {
		v.Status = VerdictMissed
	}
	if len(failed) > 0 {
		v.Value += "; error in " + strings.Join(failed, ", ")
	}
	return v
}

func p50(l *Latency) float64 { return l.P50 }
func p99(l *Latency) float64 { return l.P99 }

// Verdicts checks issue 15's latency targets against rr.
func Verdicts(rr *RunResult) []Verdict {
	var out []Verdict
	for _, rate := range []float64{10000, 100000} {
		tag := fmt.Sprintf("%.0fk", rate/1000)
		srcs := singleSources(rr, rate)
		name := "single-" + tag + "-p50"
		if f := rr.Machine.Fsync; f != nil && f.P50 > 0 {
			limit := 2*f.P50 + 100
			out = append(out, check(name, fmt.Sprintf("<= %s (2 x fdatasync p50 %s + 100 µs)", fmtUs(limit), fmtUs(f.P50)), limit, srcs, p50))
		} else {
			out = append(out, Verdict{Name: name, Value: "–", Goal: "<= 2 x fdatasync p50 + 100 µs (fdatasync not probed)", Status: VerdictNotMeasured})
		}
		out = append(out, check("single-"+tag+"-p99", "<= 1.00 ms", 1000, srcs, p99))
	}
	s10 := syncPairSources(rr, 10000)
	out = append(out,
		check("sync-pair-10k-p50", "<= 1.00 ms", 1000, s10, p50),
		check("sync-pair-10k-p99", "<= 2.00 ms", 2000, s10, p99),
		check("sync-pair-100k-p99", "<= 3.00 ms", 3000, syncPairSources(rr, 100000), p99))
	return out
}

// WriteVerdicts prints one line per target; a --quick run says its figures
// are a smoke test.
func WriteVerdicts(w io.Writer, rr *RunResult) {
	if rr.Settings.Quick {
		fmt.Fprintln(w, "targets of issue 15 (--quick: 1 s steps, a smoke test, not a verdict):")
	} else {
		fmt.Fprintln(w, "targets of issue 15:")
	}
	for _, v := range Verdicts(rr) {
		fmt.Fprintln(w, v.Line())
	}
}

// writeVerdictSection is the report's list of the verdicts.
func writeVerdictSection(b *strings.Builder, rr *RunResult) {
	b.WriteString("## Latency targets (issue 15)\n\n")
	b.WriteString("Persisted-ack latency at fixed offered rates (128-byte messages, one publisher, corrected for coordinated omission), this run: " +
		"a single instance at 10k and 100k msgs/s, p50 <= 2 x the machine's fdatasync p50 (probed at the start of the run) + 100 µs and p99 <= 1 ms, in every scenario that measures it " +
		"(the ack-latency scenario, the pair scenario's single instance, the tls scenario's plaintext instance when it ran: the worst counts); " +
		"the sync pair at 10k msgs/s p50 <= 1 ms and p99 <= 2 ms, at 100k msgs/s p99 <= 3 ms. " +
		"The bench checks them; no test asserts them. " +
		"The issue's other targets (throughput not below the parent commit's, zero allocations per message, `BenchmarkAppendSync`, `BenchmarkCatchUp`) are Go benchmarks and tests, not checked here.")
	if rr.Settings.Quick {
		b.WriteString(" **--quick**: 1 s steps, a smoke test, not a verdict.")
	}
	b.WriteString("\n\n```\n")
	for _, v := range Verdicts(rr) {
		b.WriteString(v.Line() + "\n")
	}
	b.WriteString("```\n\n")
}
