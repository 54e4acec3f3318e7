package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
)

// The tls scenario at test size against the in-process server: every step
// over plaintext and over TLS, both with figures, and the report's table
// with the ratio line. Not in the default scenarios.
func TestTLSScenario(t *testing.T) {
	t.Parallel()
	if slices.Contains(DefaultSettings(false).Scenarios, ScenTLS) || slices.Contains(DefaultSettings(true).Scenarios, ScenTLS) {
		t.Errorf("tls is in the default scenarios: %v", DefaultSettings(false).Scenarios)
	}
	set := tinySettings(t, ScenTLS)
	set.TLSSizes = []int{128}
	want := map[string]bool{}
	for _, k := range []string{"tls publish size=128 pubs=1", "tls ack-latency size=128 rate=2000", "tls e2e-latency size=128 rate=2000"} {
		want[k+" mode=plaintext"], want[k+" mode=tls"] = true, true
	}
	rr, _ := tinyRun(t, set, want)
	// The variants alternate which goes first: plaintext in the first
	// measurement, TLS in the second.
	if len(rr.Results) == 6 && (rr.Results[0].Mode != "plaintext" || rr.Results[2].Mode != "tls") {
		t.Errorf("order: %s, %s first", rr.Results[0].Key, rr.Results[2].Key)
	}
	modes := map[string]int{}
	for _, r := range rr.Results {
		if r.Scenario != ScenTLS {
			t.Errorf("%s: scenario %q", r.Key, r.Scenario)
			continue
		}
		modes[r.Mode]++
		if r.Error != "" || r.MsgsPerSec <= 0 || r.Latency == nil || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 {
			t.Errorf("%s: no figures: %s", r.Key, r.Summary())
		}
		if r.Subscribers > 0 && (r.AckLatency == nil || r.Received < r.Sent || r.Sent == 0) {
			t.Errorf("%s: e2e: ack latency %v, received %d of %d", r.Key, r.AckLatency, r.Received, r.Sent)
		}
	}
	if modes["plaintext"] != 3 || modes["tls"] != 3 {
		t.Errorf("results per mode %v, want 3 plaintext and 3 tls", modes)
	}
	var md bytes.Buffer
	if err := WriteReport(&md, rr, ReportOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"## TLS vs plaintext (Tandem)", "| publish size=128 pubs=1 | ", "| ack-latency size=128 rate=2000 | tls |",
		"| e2e-latency size=128 rate=2000 | plaintext |", "**TLS ÷ plaintext:** publish size=128 pubs=1 throughput ", "e2e-latency size=128 rate=2000 p50 "} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("report lacks %q", s)
		}
	}
	if t.Failed() || testing.Verbose() {
		i := strings.Index(md.String(), "## TLS vs plaintext")
		j := strings.Index(md.String(), "## Systems")
		t.Logf("report:\n%s", md.String()[i:j])
	}
}

// The tls variant's server really serves TLS: a plaintext client is
// refused with ErrTLSRequired, a WithTLS client trusting the run's CA gets
// through; the key files are private to the owner.
func TestTLSVariantServesTLS(t *testing.T) {
	t.Parallel()
	bt, err := newBenchTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{bt.CertFile, bt.KeyFile, bt.CAFile} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	v := (&Tandem{}).tlsVariant("tls", bt)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := v.Start(ctx, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	c, err := client.Connect(ctx, v.addr, client.WithName("plain"))
	if err == nil {
		c.Close()
		t.Fatal("plaintext client connected to the TLS variant")
	}
	if !errors.Is(err, client.ErrTLSRequired) {
		t.Errorf("plaintext client: %v, want ErrTLSRequired", err)
	}
	st, err := statsOf(ctx, v.addr, "stat", v.clientOpts()...)
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if st.Engine == "" {
		t.Errorf("stats over TLS: %+v", st)
	}
}
