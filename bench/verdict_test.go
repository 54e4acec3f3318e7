package bench

import (
	"strings"
	"testing"
)

func latRes(scen, key, mode string, rate, p50, p99 float64) Result {
	return Result{Scenario: scen, System: "tandem", Key: key, Mode: mode, Rate: rate, RateLabel: "x",
		Latency: &Latency{Count: 1, P50: p50, P99: p99}}
}

// verdictRun is a run with the fdatasync probe at 150 µs (single-instance
// p50 goal: 400 µs) and the given results.
func verdictRun(rs ...Result) *RunResult {
	return &RunResult{Machine: Machine{Fsync: &Latency{P50: 150}}, Results: rs}
}

func TestVerdicts(t *testing.T) {
	ack10 := func(p50, p99 float64) Result {
		return latRes(ScenAckLatency, "ack-latency size=128 rate=10000", "", 10000, p50, p99)
	}
	pair := func(mode string, rate, p50, p99 float64) Result {
		return latRes(ScenPair, "pair ack-latency size=128 rate=x mode="+mode, mode, rate, p50, p99)
	}
	for _, c := range []struct {
		name string
		rr   *RunResult
		want map[string]string // target -> line
	}{
		{"all met", verdictRun(ack10(390, 900), pair("single", 10000, 380, 950), pair("sync", 10000, 800, 1900), pair("sync", 100000, 1200, 2900),
			latRes(ScenAckLatency, "ack-latency size=128 rate=100000", "", 100000, 300, 700)), map[string]string{
			"single-10k-p50":     "target single-10k-p50: 390 µs (worst of 2 scenarios: ack-latency) vs <= 400 µs (2 x fdatasync p50 150 µs + 100 µs): met",
			"single-10k-p99":     "target single-10k-p99: 950 µs (worst of 2 scenarios: pair) vs <= 1.00 ms: met",
			"single-100k-p50":    "target single-100k-p50: 300 µs (ack-latency) vs <= 400 µs (2 x fdatasync p50 150 µs + 100 µs): met",
			"single-100k-p99":    "target single-100k-p99: 700 µs (ack-latency) vs <= 1.00 ms: met",
			"sync-pair-10k-p50":  "target sync-pair-10k-p50: 800 µs (pair) vs <= 1.00 ms: met",
			"sync-pair-10k-p99":  "target sync-pair-10k-p99: 1.90 ms (pair) vs <= 2.00 ms: met",
			"sync-pair-100k-p99": "target sync-pair-100k-p99: 2.90 ms (pair) vs <= 3.00 ms: met",
		}},
		// The figures: every target missed; the pair scenario's
		// single instance (after its throughput steps) is the worst.
		{"issue 15 figures", verdictRun(ack10(584, 2700), pair("single", 10000, 713, 30000), pair("sync", 10000, 2500, 63000), pair("async", 10000, 1010, 3210)), map[string]string{
			"single-10k-p50":     "target single-10k-p50: 713 µs (worst of 2 scenarios: pair) vs <= 400 µs (2 x fdatasync p50 150 µs + 100 µs): missed",
			"single-10k-p99":     "target single-10k-p99: 30.00 ms (worst of 2 scenarios: pair) vs <= 1.00 ms: missed",
			"single-100k-p50":    "target single-100k-p50: – vs <= 400 µs (2 x fdatasync p50 150 µs + 100 µs): not measured",
			"sync-pair-10k-p50":  "target sync-pair-10k-p50: 2.50 ms (pair) vs <= 1.00 ms: missed",
			"sync-pair-10k-p99":  "target sync-pair-10k-p99: 63.00 ms (pair) vs <= 2.00 ms: missed",
			"sync-pair-100k-p99": "target sync-pair-100k-p99: – vs <= 3.00 ms: not measured",
		}},
		// Exactly at the limit is met; the knee rate, other systems and
		// other scenarios (e2e) do not count.
		{"boundaries and filters", verdictRun(ack10(400, 1000),
			Result{Scenario: ScenAckLatency, System: "tandem", Key: "ack-latency size=128 rate=knee(80%)", Rate: 10000, RateLabel: "knee(80%)", Latency: &Latency{P50: 9000, P99: 9000}},
			Result{Scenario: ScenAckLatency, System: "nats-always", Key: "ack-latency size=128 rate=10000", Rate: 10000, Latency: &Latency{P50: 9000, P99: 9000}},
			latRes(ScenE2E, "e2e-latency size=128 rate=10000", "", 10000, 9000, 9000),
			pair("async", 100000, 9000, 9000),
			latRes(ScenTLS, "tls ack-latency size=128 rate=10000 mode=tls", "tls", 10000, 9000, 9000),
			latRes(ScenTLS, "tls ack-latency size=128 rate=10000 mode=plaintext", "plaintext", 10000, 350, 990)), map[string]string{
			"single-10k-p50":     "target single-10k-p50: 400 µs (worst of 2 scenarios: ack-latency) vs <= 400 µs (2 x fdatasync p50 150 µs + 100 µs): met",
			"single-10k-p99":     "target single-10k-p99: 1.00 ms (worst of 2 scenarios: ack-latency) vs <= 1.00 ms: met",
			"sync-pair-100k-p99": "target sync-pair-100k-p99: – vs <= 3.00 ms: not measured",
		}},
		// A failed step cannot meet a target.
		{"error", verdictRun(ack10(300, 500), Result{Scenario: ScenPair, System: "tandem", Key: "pair ack-latency size=128 rate=10000 mode=single", Mode: "single", Rate: 10000, Error: "boom"},
			Result{Scenario: ScenPair, System: "tandem", Key: "pair ack-latency size=128 rate=10000 mode=sync", Mode: "sync", Rate: 10000, Error: "boom"}), map[string]string{
			"single-10k-p50":    "target single-10k-p50: 300 µs (worst of 2 scenarios: ack-latency); error in pair vs <= 400 µs (2 x fdatasync p50 150 µs + 100 µs): missed",
			"sync-pair-10k-p50": "target sync-pair-10k-p50: error in pair vs <= 1.00 ms: missed",
		}},
		{"no fdatasync probe", &RunResult{Results: []Result{ack10(300, 500)}}, map[string]string{
			"single-10k-p50": "target single-10k-p50: – vs <= 2 x fdatasync p50 + 100 µs (fdatasync not probed): not measured",
			"single-10k-p99": "target single-10k-p99: 500 µs (ack-latency) vs <= 1.00 ms: met",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			vs := Verdicts(c.rr)
			if len(vs) != 7 {
				t.Fatalf("%d verdicts, want 7", len(vs))
			}
			got := map[string]string{}
			for _, v := range vs {
				got[v.Name] = v.Line()
			}
			for name, want := range c.want {
				if got[name] != want {
					t.Errorf("%s:\n got %s\nwant %s", name, got[name], want)
				}
			}
		})
	}
}

func TestWriteVerdicts(t *testing.T) {
	var b strings.Builder
	rr := verdictRun()
	rr.Settings.Quick = true
	WriteVerdicts(&b, rr)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 8 || !strings.Contains(lines[0], "--quick") {
		t.Fatalf("output:\n%s", b.String())
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "target ") || !strings.HasSuffix(l, ": not measured") {
			t.Errorf("line %q", l)
		}
	}
}
