package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A tiny run of every scenario against the in-process Tandem server, then
// the JSON round trip, the report with its plots, and --compare.
func TestRunReportCompare(t *testing.T) {
	set := DefaultSettings(true)
	set.Systems = []string{"tandem"}
	set.Duration = 200 * time.Millisecond
	set.Sizes = []int{64, 512}
	set.Publishers = []int{1, 2}
	set.Rates = []int{2000}
	set.KneeFraction = 0.01
	set.Fanout = []int{1, 3}
	set.FanoutMessages = 5000
	set.ReplayMessages = 5000
	set.FsyncProbe = 5
	set.DataDir = t.TempDir()
	var progress bytes.Buffer
	rr, err := Run(context.Background(), Options{Settings: set, Progress: &progress, Command: []string{"test"}})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Machine.Cores == 0 || rr.Machine.CPU == "" || rr.Machine.Fsync == nil || rr.Machine.Filesystem == "" {
		t.Errorf("machine %+v", rr.Machine)
	}
	want := map[string]bool{
		"publish size=64 pubs=1": true, "publish size=512 pubs=2": true,
		"ack-latency size=128 rate=2000": true, "ack-latency size=128 rate=knee(1%)": true,
		"e2e-latency size=128 rate=2000": true, "fanout size=128 subs=3": true, "replay size=128": true,
	}
	for _, r := range rr.Results {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Key, r.Error)
		}
		if r.Bad != 0 {
			t.Errorf("%s: %d bad deliveries", r.Key, r.Bad)
		}
		delete(want, r.Key)
		if r.MsgsPerSec <= 0 {
			t.Errorf("%s: %v msgs/s", r.Key, r.MsgsPerSec)
		}
		if (r.Scenario == ScenAckLatency || r.Scenario == ScenE2E) && (r.Latency == nil || r.Latency.Count == 0) {
			t.Errorf("%s: no latency", r.Key)
		}
	}
	for k := range want {
		t.Errorf("missing result %s", k)
	}
	if len(rr.NotMeasured) < 3 {
		t.Errorf("not measured: %+v", rr.NotMeasured)
	}
	if !strings.Contains(progress.String(), "publish size=64 pubs=1") {
		t.Errorf("progress:\n%s", progress.String())
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
	for _, s := range []string{"## Headline", "| tandem |", "not yet measured (feature not built)", "plots/throughput-pubs1.svg", "plots/ack-latency-2000.svg", "fdatasync"} {
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
