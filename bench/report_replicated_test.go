package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// replicatedRun is a full-settings run with Tandem's pair results, two
// replicated peers measured, nats-r3-default skipped, and the failover of
// Tandem and of nats-r3-always.
func replicatedRun() *RunResult {
	rr := &RunResult{Machine: Machine{Cores: 2, Fsync: &Latency{P50: 150}}}
	rr.Settings = DefaultSettings(false)
	rr.Systems = []SystemInfo{{Name: "tandem"}, {Name: "nats-r3-always"}, {Name: "nats-r3-default", Skipped: "peer not installed: nats-server not found"}, {Name: "redis-replica"}}
	curve := func(p50, p99 float64) *Latency {
		return &Latency{Count: 100, P50: p50, P99: p99, Max: p99 * 2, Curve: []CurvePoint{{0, p50 / 2}, {50, p50}, {99, p99}, {100, p99 * 2}}}
	}
	add := func(r Result) { rr.Results = append(rr.Results, r) }
	for _, m := range []struct {
		mode     string
		msgs     float64
		p50, p99 float64
	}{{"single", 3e6, 600, 2000}, {"sync", 1.3e6, 2400, 60000}, {"async", 1.6e6, 1000, 3200}} {
		for _, size := range rr.Settings.PairSizes {
			add(Result{Scenario: ScenPair, System: "tandem", Mode: m.mode, Key: "pair publish size=" + itoa(size) + " pubs=1 mode=" + m.mode, MsgsPerSec: m.msgs, Latency: curve(m.p50, m.p99)})
		}
		for _, rate := range rr.Settings.PairRates {
			add(Result{Scenario: ScenPair, System: "tandem", Mode: m.mode, Rate: float64(rate), RateLabel: itoa(rate), Key: "pair ack-latency size=128 rate=" + itoa(rate) + " mode=" + m.mode, MsgsPerSec: float64(rate), Latency: curve(m.p50, m.p99)})
		}
	}
	for _, p := range []struct {
		sys      string
		msgs     float64
		p50, p99 float64
	}{{"nats-r3-always", 3100, 900, 2500}, {"redis-replica", 150000, 500, 3000}} {
		for _, size := range rr.Settings.Sizes {
			add(Result{Scenario: ScenPublish, System: p.sys, Key: "publish size=" + itoa(size) + " pubs=1", MsgsPerSec: p.msgs, Latency: curve(p.p50, p.p99)})
		}
		for _, rate := range rr.Settings.Rates {
			r := Result{Scenario: ScenAckLatency, System: p.sys, Rate: float64(rate), RateLabel: itoa(rate), Key: "ack-latency size=128 rate=" + itoa(rate), MsgsPerSec: min(float64(rate), p.msgs), Latency: curve(p.p50, p.p99)}
			r.Saturated = p.msgs < float64(rate)
			add(r)
		}
	}
	add(Result{Scenario: ScenFailover, System: "tandem", Mode: "sync", Key: failoverKey(&rr.Settings), Latency: curve(90000, 150000),
		Failover: &FailoverStats{Runs: 3, TimesUs: []float64{80000, 90000, 150000}}})
	add(Result{Scenario: ScenFailover, System: "nats-r3-always", Mode: "r3", Key: natsFailoverKey(&rr.Settings), Latency: curve(5.1e6, 8e6),
		Failover: &FailoverStats{Runs: 2, TimesUs: []float64{5.1e6, 8e6}, PublishTimesUs: []float64{4.4e6, 7.9e6}, PublishLatency: &Latency{P50: 4.4e6, Max: 7.9e6}, ClientNodeKilled: 1}})
	return rr
}

// The replicated section: Tandem's pair rows and the peers' with what an
// ack means, the copies kept, the 2-core caveat and the plots; the NATS
// failover beside Tandem's; the skipped peer listed.
func TestReplicatedReport(t *testing.T) {
	rr := replicatedRun()
	dir := t.TempDir()
	var full bytes.Buffer
	if err := WriteReport(&full, rr, ReportOptions{PlotDir: dir, PlotLink: "plots"}); err != nil {
		t.Fatal(err)
	}
	md := full.String()
	wantIn(t, md,
		"## Replicated: Tandem's pair vs replicated peers",
		"JetStream keeps 3 copies to Tandem's 2",
		"primary's disk + replica's memory",
		"On 2 cores these are comparative figures only",
		"| system | ack means | publish 64 B msgs/s, p99 | publish 4096 B msgs/s, p99 | ack @ 10.0k p50 / p99 | ack @ 100.0k p50 / p99 |",
		"| tandem sync pair | after A's and B's fdatasync (2 copies on disk) | 1.30M, 60.00 ms | 1.30M, 60.00 ms | 2.40 ms / 60.00 ms | 2.40 ms / 60.00 ms |",
		"| nats-r3-always | after the leader and 1 of 2 followers fsynced it (3 copies, quorum 2) | 3.1k, 2.50 ms | 3.1k, 2.50 ms | 900 µs / 2.50 ms (saturated: 3.1k msgs/s) | 900 µs / 2.50 ms (saturated: 3.1k msgs/s) |",
		"| redis-replica | primary's disk + replica's memory (2 copies, 1 on disk) | 150.0k, 3.00 ms |",
		"![replicated systems: persisted-ack latency at 100000 msgs/s](plots/replicated-ack-latency-100000.svg)",
		"![replicated systems: durable publish by message size](plots/replicated-throughput.svg)",
		"- **nats-r3-default skipped**: peer not installed",
		"### NATS JetStream R3: killing the stream leader",
		"| tandem sync pair (kill the subscriber's instance) | 3 | – | 90.00 ms / ",
		"| nats-r3-always | 2 | 4.40 s / 7.90 s | 5.10 s / ",
		"| 0 | 0 | 1 of 2 | 0 |",
		"target sync-pair-10k-p99: 60.00 ms (pair) vs <= 2.00 ms: missed",
	)
	if strings.Contains(md, "| nats-r3-default |") {
		t.Error("the skipped peer has a row")
	}
	for _, f := range []string{"replicated-ack-latency-10000.svg", "replicated-ack-latency-100000.svg", "replicated-throughput.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, label := range []string{"tandem sync pair", "nats-r3-always", "redis-replica"} {
			if !bytes.Contains(b, []byte(label)) {
				t.Errorf("%s lacks %q in its legend", f, label)
			}
		}
	}
}

// Without replicated peers the section says so and draws nothing.
func TestReplicatedReportNone(t *testing.T) {
	rr := replicatedRun()
	rr.Systems = []SystemInfo{{Name: "tandem"}}
	dir := t.TempDir()
	var full bytes.Buffer
	if err := WriteReport(&full, rr, ReportOptions{PlotDir: dir}); err != nil {
		t.Fatal(err)
	}
	wantIn(t, full.String(), "_No replicated peer ran")
	if _, err := os.Stat(filepath.Join(dir, "replicated-throughput.svg")); err == nil {
		t.Error("replicated plot drawn without replicated peers")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
