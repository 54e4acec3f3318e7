package admin

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/wire"
)

// chromium finds a Chromium or Chrome binary, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Chromium found (apt-get install chromium; .ci/run installs it): the console is not tested in a browser")
	return ""
}

// The console in headless Chromium: it shows the instance, and its figures
// change as messages are published. With TANDEM_UPDATE_SCREENSHOT=1 it
// also writes docs/console.png (after a longer, paced workload so the plot
// has something to show).
func TestConsoleInBrowser(t *testing.T) {
	bin := chromium(t)
	screenshot := os.Getenv("TANDEM_UPDATE_SCREENSHOT") == "1"

	b := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Name = "tandem-b"
		c.Replication = &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{{Name: "tandem-a", Mode: replicate.Sync}},
			Heartbeat: 50 * time.Millisecond}
	})
	a := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Name = "tandem-a"
		c.Replication = &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{
			{Name: "tandem-b", Addr: b.Replicator().Addr().String(), Mode: replicate.Sync}}, Heartbeat: 50 * time.Millisecond}
	})
	l := newAdmin(t, Config{})
	l.SetServer(a)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1200, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	url := "http://" + l.Addr().String() + "/"
	if _, err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	number := func(sel string) float64 {
		t.Helper()
		s := strings.ReplaceAll(text(sel), ",", "")
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("%s shows %q, not a number", sel, s)
		}
		return f
	}
	waitFor(t, "the console shows the instance", 20*time.Second, func() (bool, string) {
		s := text("#instance")
		return s == "tandem-a", s
	})
	waitFor(t, "the console shows the peer in sync", 20*time.Second, func() (bool, string) {
		s := text("#peers tbody")
		return strings.Contains(s, "tandem-b") && strings.Contains(s, "sync") && strings.Contains(s, "yes"), s
	})
	if s := text("#status"); s != "ok" {
		t.Errorf("status shows %q, want ok (from /healthz)", s)
	}
	waitFor(t, "the console shows readiness", 10*time.Second, func() (bool, string) {
		s := text("#ready")
		return s == "ready", s
	})
	if n := number("#stored"); n != 0 {
		t.Fatalf("stored shows %v before any publish", n)
	}

	sub := dial(t, a, "console-sub")
	sub.send(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("prices")))
	pub := dial(t, a, "console-pub")
	var seq uint64
	publish := func(n int) {
		var batch []byte
		for i := 0; i < n; i++ {
			seq++
			batch = wire.AppendPublish(batch, seq, wire.AckPersisted, []byte("prices"), []byte("EUR/USD 1.0842"))
		}
		pub.send(batch)
		pub.waitAck(seq)
		sub.waitDelivers(int(seq))
	}
	publish(500)
	waitFor(t, "the console shows 500 stored and delivered, and a publish rate", 20*time.Second, func() (bool, string) {
		st, dl, rate := text("#stored"), text("#delivered"), text("#pubRate")
		return st == "500" && dl == "500" && rate != "0" && rate != "0.0", st + " " + dl + " " + rate
	})
	publish(700)
	waitFor(t, "the console follows to 1,200", 20*time.Second, func() (bool, string) {
		st := text("#stored")
		return st == "1,200", st
	})
	if n := number("#connections"); n != 2 {
		t.Errorf("connections shows %v, want 2", n)
	}
	if s := text("#clients tbody"); !strings.Contains(s, "console-pub") || !strings.Contains(s, "console-sub") {
		t.Errorf("clients table: %q", s)
	}
	if s := text("#journalBytes"); !strings.HasSuffix(s, "KiB") {
		t.Errorf("journal used shows %q", s)
	}

	if !screenshot {
		return
	}
	// A paced workload so the plot shows a few rates over ~30 seconds;
	// the screenshot is taken while it still runs (live rates).
	deadline := time.Now().Add(30 * time.Second)
	for step := 0; time.Now().Before(deadline); step++ {
		publish(100 + 20*(step%40))
		time.Sleep(100 * time.Millisecond) // pacing the workload, not synchronising
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	if r := text("#pubRate"); r == "0" || r == "0.0" {
		t.Logf("screenshot shows a publish rate of %s", r)
	}
	out := filepath.Join("..", "docs", "console.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}
