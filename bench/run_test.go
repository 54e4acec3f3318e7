package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/uring"
)

// tinySettings is the quick matrix cut down to test size, Tandem only,
// in-process, for scenarios.
func tinySettings(t *testing.T, scenarios ...string) Settings {
	set := DefaultSettings(true)
	set.Systems = []string{"tandem"}
	set.Scenarios = scenarios
	set.Duration = 200 * time.Millisecond
	set.Sizes = []int{64, 512}
	set.Publishers = []int{1, 2}
	set.Rates = []int{2000}
	set.KneeFraction = 0.01
	set.Fanout = []int{1, 3}
	set.FanoutMessages = 5000
	set.ReplayMessages = 5000
	set.FsyncProbe = 5
	set.PairSizes = []int{64}
	set.PairRates = []int{2000}
	set.EngineSizes = []int{64}
	set.EnginePublishers = []int{1}
	set.EngineFanout = []int{2}
	set.EnginePairSizes = []int{64}
	set.EngineRuns = 2
	set.DataDir = t.TempDir()
	return set
}

// tinyRun runs set and checks every result: no errors, no bad deliveries,
// a rate, latencies where expected, the backend in use, the keys in want
// (and the keys the dry run's plan lists, in order).
func tinyRun(t *testing.T, set Settings, want map[string]bool) (*RunResult, string) {
	t.Helper()
	var progress bytes.Buffer
	rr, err := Run(context.Background(), Options{Settings: set, Progress: &progress, Command: []string{"test"}})
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("progress:\n%s", progress.String())
	}
	for _, r := range rr.Results {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Key, r.Error)
		}
		if r.Bad != 0 {
			t.Errorf("%s: %d bad deliveries", r.Key, r.Bad)
		}
		delete(want, r.Key)
		if r.Skipped != "" {
			t.Logf("%s skipped: %s", r.Key, r.Skipped)
			continue
		}
		if r.System == "tandem" && r.EngineInUse == "" {
			t.Errorf("%s: engine in use not recorded", r.Key)
		}
		if r.Engine != "" && !strings.Contains(r.EngineInUse, map[string]string{"uring": "io_uring", "epoll": "epoll"}[r.Engine]) {
			t.Errorf("%s: asked for %s, server used %q", r.Key, r.Engine, r.EngineInUse)
		}
		if r.Mode == "sync" && r.Note != "" {
			t.Errorf("%s: %s", r.Key, r.Note)
		}
		if r.MsgsPerSec <= 0 && r.Scenario != ScenFailover {
			t.Errorf("%s: %v msgs/s", r.Key, r.MsgsPerSec)
		}
		if (r.Scenario == ScenAckLatency || r.Scenario == ScenE2E || r.Rate > 0) && (r.Latency == nil || r.Latency.Count == 0) {
			t.Errorf("%s: no latency", r.Key)
		}
	}
	for k := range want {
		t.Errorf("missing result %s", k)
	}
	// The dry run's plan is the run's steps.
	var planned []string
	for _, st := range plan(set, nil) {
		planned = append(planned, st.system+" "+st.key)
	}
	var ran []string
	for _, r := range rr.Results {
		ran = append(ran, r.System+" "+r.Key)
	}
	if strings.Join(planned, "\n") != strings.Join(ran, "\n") {
		t.Errorf("plan:\n%s\nrun:\n%s", strings.Join(planned, "\n"), strings.Join(ran, "\n"))
	}
	return rr, progress.String()
}

// A tiny run of the peer-comparison scenarios against the in-process
// Tandem server, then the JSON round trip, the report with its plots, and
// --compare.
func TestRunReportCompare(t *testing.T) {
	t.Parallel()
	set := tinySettings(t, ScenPublish, ScenAckLatency, ScenE2E, ScenFanout, ScenReplay)
	rr, progress := tinyRun(t, set, map[string]bool{
		"publish size=64 pubs=1": true, "publish size=512 pubs=2": true,
		"ack-latency size=128 rate=2000": true, "ack-latency size=128 rate=knee(1%)": true,
		"e2e-latency size=128 rate=2000": true, "fanout size=128 subs=3": true, "replay size=128": true,
	})
	if rr.Machine.Cores == 0 || rr.Machine.CPU == "" || rr.Machine.Fsync == nil || rr.Machine.Filesystem == "" {
		t.Errorf("machine %+v", rr.Machine)
	}
	if len(rr.NotMeasured) != 0 {
		t.Errorf("not measured: %+v", rr.NotMeasured)
	}
	var est bytes.Buffer
	if d := Estimate(&est, DefaultSettings(false), rr, nil); d <= 0 || !strings.Contains(est.String(), "pair") || !strings.Contains(est.String(), "failover") {
		t.Errorf("estimate %v:\n%s", d, est.String())
	}
	if !strings.Contains(progress, "publish size=64 pubs=1") {
		t.Errorf("progress:\n%s", progress)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "run.json")
	if err := rr.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(rr.Results) || back.Settings.Duration != set.Duration {
		t.Fatalf("round trip: %d results, duration %v", len(back.Results), back.Settings.Duration)
	}
	var md bytes.Buffer
	if err := WriteReport(&md, back, ReportOptions{PlotDir: filepath.Join(dir, "plots"), PlotLink: "plots", ResultLink: "run.json"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## Headline", "| tandem |", "## Failover time (HA client)\n\n",
		"## Replication: sync pair and async pair (Tandem)\n\n_Not run._", "plots/throughput-pubs1.svg", "plots/ack-latency-2000.svg", "fdatasync"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	for _, f := range []string{"throughput-pubs1.svg", "ack-latency-2000.svg", "e2e-latency-2000.svg"} {
		b, err := os.ReadFile(filepath.Join(dir, "plots", f))
		if err != nil || !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("plot %s: %v", f, err)
		}
	}

	// Compare: halve one figure of a copy: one regression.
	worse, _ := ReadJSON(path)
	for i := range worse.Results {
		if worse.Results[i].Key == "publish size=64 pubs=1" {
			worse.Results[i].MsgsPerSec /= 2
		}
	}
	var cmp bytes.Buffer
	if n := Compare(&cmp, back, worse, 0.10); n < 1 {
		t.Errorf("regressions %d\n%s", n, cmp.String())
	}
	if !strings.Contains(cmp.String(), "-50.0%") || !strings.Contains(cmp.String(), "REGRESSION") {
		t.Errorf("compare output:\n%s", cmp.String())
	}
}

// The Tandem-only scenarios at test size: one instance vs a sync and an
// async pair (in-process, replicating to each other), io_uring vs epoll;
// their report tables.
func TestPairAndEngine(t *testing.T) {
	t.Parallel()
	set := tinySettings(t, ScenPair, ScenEngine)
	want := map[string]bool{
		"pair publish size=64 pubs=1 mode=single": true, "pair publish size=64 pubs=1 mode=sync": true,
		"pair publish size=64 pubs=1 mode=async": true, "pair ack-latency size=128 rate=2000 mode=sync": true,
		"engine publish size=64 pubs=1 engine=epoll": true, "engine fanout size=128 subs=2 engine=epoll": true,
		"engine publish size=64 pubs=1 engine=uring": true, "engine fanout size=128 subs=2 engine=uring": true,
		"engine sync-pair publish size=64 pubs=1 engine=uring": true, "engine sync-pair publish size=64 pubs=1 engine=epoll": true,
	}
	uringErr := uring.Available()
	rr, _ := tinyRun(t, set, want)
	for _, r := range rr.Results {
		if r.Engine == "uring" && (r.Skipped != "") != (uringErr != nil) {
			t.Errorf("%s: skipped %q, io_uring available: %v", r.Key, r.Skipped, uringErr)
		}
		if r.Mode == "sync" && r.ReplLagEnd != 0 {
			t.Errorf("%s: B %d messages behind after the drain of a sync pair", r.Key, r.ReplLagEnd)
		}
		if r.Scenario == ScenEngine && r.Skipped == "" {
			// Two runs per backend, their medians; in-process: no server
			// CPU figures.
			if len(r.Runs) != 2 || r.Runs[0].Run != 1 || r.Runs[1].Run != 2 || r.Runs[0].Key != r.Key {
				t.Errorf("%s: runs %+v", r.Key, r.Runs)
			}
			if r.Latency == nil || r.Latency.P999 <= 0 {
				t.Errorf("%s: no latency", r.Key)
			}
			if r.Subscribers > 0 && (r.AckLatency == nil || r.Received < 2*r.Sent) {
				t.Errorf("%s: ack latency %v, received %d of %d x 2", r.Key, r.AckLatency, r.Received, r.Sent)
			}
			if r.Resources != nil {
				t.Errorf("%s: resources of an in-process server: %+v", r.Key, r.Resources)
			}
		}
	}
	if len(rr.NotMeasured) != 0 {
		t.Errorf("not measured: %+v", rr.NotMeasured)
	}
	var md bytes.Buffer
	if err := WriteReport(&md, rr, ReportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## Replication: sync pair and async pair (Tandem)", "| publish size=64 pubs=1 | ", "| 2.0k | sync |", "p99 vs single",
		"## io_uring vs epoll (Tandem)", "| fanout size=128 subs=2 |", "io_uring ÷ epoll", "| sync-pair publish size=64 pubs=1 |",
		"2 times per backend", "not checked, this run has no 1 → 8 fan-out step", "_Server CPU and context switches not measured"} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	if t.Failed() || testing.Verbose() {
		i := strings.Index(md.String(), "## Replication")
		j := strings.Index(md.String(), "## Systems")
		t.Logf("report:\n%s", md.String()[i:j])
	}
}

// The failover scenario at test size: 2 runs against an in-process sync
// pair (a kill is Server.Close there), its report section, and the
// estimate calibrated by it.
func TestFailover(t *testing.T) {
	t.Parallel()
	set := tinySettings(t, ScenFailover)
	set.FailoverRuns = 2
	set.FailoverRate = 2000
	key := failoverKey(&set)
	rr, _ := tinyRun(t, set, map[string]bool{key: true})
	r := rr.find(key, "tandem")
	if r == nil || r.Failover == nil || r.Latency == nil {
		t.Fatalf("result %+v", r)
	}
	f := r.Failover
	if len(f.TimesUs) != 2 || len(f.Killed) != 2 || f.Killed[0] != "A" || f.Killed[1] != "B" {
		t.Errorf("runs: killed %v, times %v", f.Killed, f.TimesUs)
	}
	if f.Violations != 0 || f.Timeouts != 0 || r.Bad != 0 || r.Note != "" {
		t.Errorf("violations %d, timeouts %d, bad %d, note %q", f.Violations, f.Timeouts, r.Bad, r.Note)
	}
	if len(f.PublishTimesUs) != 2 || f.PublishTimesUs[0] <= 0 || f.PublishTimesUs[1] <= 0 || f.PublishLatency == nil {
		t.Errorf("time to the next acknowledged publish: %v", f.PublishTimesUs)
	}
	if f.SubscriberFailovers < 2 || r.Received < r.Sent || r.Sent == 0 {
		t.Errorf("subscriber failovers %d, sent %d, received %d", f.SubscriberFailovers, r.Sent, r.Received)
	}
	t.Logf("%s; %+v; step %.1fs", r.Summary(), *f, r.DurationSec)
	var md bytes.Buffer
	if err := WriteReport(&md, rr, ReportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## Failover time (HA client)", "| 2 | ", "50ms heartbeat", "2.0k msgs/s", "failover: runs / rate", "first persisted ack of a message published after it: p50 "} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	// The estimate scales the step's duration to the full matrix's runs.
	full := DefaultSettings(false)
	full.Scenarios, full.Systems = []string{ScenFailover}, []string{"tandem"}
	rr.Results[0].Key = failoverKey(&full)
	var est bytes.Buffer
	d := Estimate(&est, full, rr, nil)
	want := 50*time.Duration(r.DurationSec/2*float64(time.Second)) + estFailoverStart
	if diff := d - want - time.Duration(full.FsyncProbe)*300*time.Microsecond; diff < -time.Millisecond || diff > time.Millisecond {
		t.Errorf("estimate %v, want %v\n%s", d, want, est.String())
	}
}
