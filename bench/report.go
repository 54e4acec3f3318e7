package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ReportOptions say where the markdown report and its plots go.
type ReportOptions struct {
	// PlotDir is where the SVG plots are written; PlotLink is how the
	// report refers to that directory (relative to the report).
	PlotDir  string
	PlotLink string
	// ResultLink is how the report refers to the JSON result file.
	ResultLink string
}

// WriteReport renders rr as markdown into w and draws the plots.
func WriteReport(w io.Writer, rr *RunResult, o ReportOptions) error {
	b := &strings.Builder{}
	pf := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	peers := measuredSystems(rr)
	pf("# Tandem benchmarks\n\n")
	pf("Tandem and its peers measured on the same machine in the same run by `tandem bench` (package `bench/`), with the same client-side measurement code for every system: only the adapter differs. ")
	pf("Regenerate with `make bench` (full matrix) after `make bench-deps` (installs the peers).\n\n")
	pf("- Run: %s, %s, Tandem commit `%s` (%s)", rr.Started.Format("2006-01-02 15:04 MST"), time.Duration(rr.Elapsed*float64(time.Second)).Round(time.Second), rr.Tandem.Short(), rr.Tandem.Source)
	if rr.Settings.Quick {
		pf(", **--quick** (reduced matrix, 1 s steps: smoke test, not for comparison)")
	}
	pf("\n")
	if len(rr.Command) > 0 {
		pf("- Command: `%s`\n", strings.Join(rr.Command, " "))
	}
	if o.ResultLink != "" {
		pf("- Raw results: [%s](%s) (compare two runs with `tandem bench --compare OLD.json NEW.json`)\n", filepath.Base(o.ResultLink), o.ResultLink)
	}
	pf("- Machine: %s, %d cores, %s RAM, %s; data on %s; fdatasync of a 4 KiB append: %s\n\n",
		rr.Machine.CPU, rr.Machine.Cores, rr.Machine.Memory, rr.Machine.Kernel, rr.Machine.Filesystem, fsyncText(rr.Machine))

	// Headline.
	pf("## Headline\n\n")
	writeHeadline(b, rr)
	writeVerdictSection(b, rr)

	// Skipped and not measured.
	var skipped []string
	for _, s := range rr.Systems {
		if s.Skipped != "" {
			skipped = append(skipped, fmt.Sprintf("- **%s skipped**: %s", s.Name, s.Skipped))
		}
	}
	if len(skipped) > 0 {
		pf("### Peers not measured in this run\n\n%s\n\n", strings.Join(skipped, "\n"))
	}
	if len(rr.NotMeasured) > 0 {
		pf("### Scenarios not measured yet\n\n")
		for _, n := range rr.NotMeasured {
			pf("- %s: %s\n", n.Title, n.Reason)
		}
		pf("\n")
	}

	// Plots.
	plots := map[string]string{}
	if o.PlotDir != "" {
		if err := os.MkdirAll(o.PlotDir, 0o755); err != nil {
			return err
		}
		for _, pubs := range rr.Settings.Publishers {
			if f, err := plotThroughput(rr, o.PlotDir, pubs); err != nil {
				return err
			} else if f != "" {
				plots[fmt.Sprintf("throughput %d", pubs)] = f
			}
		}
		for _, rs := range rateLabels(rr) {
			for _, sc := range []struct{ scen, title string }{
				{ScenAckLatency, "Persisted-ack latency"},
				{ScenE2E, "End-to-end latency"},
			} {
				key := fmt.Sprintf("%s size=%d rate=%s", sc.scen, rr.Settings.LatencySize, rs)
				file := fmt.Sprintf("%s-%s.svg", sc.scen, strings.NewReplacer("(", "", ")", "", "%", "pct").Replace(rs))
				title := fmt.Sprintf("%s at %s msgs/s offered, %d B\ncorrected for coordinated omission", sc.title, rateTitle(rr, sc.scen, rs), rr.Settings.LatencySize)
				if f, err := plotLatency(rr, o.PlotDir, key, title, file); err != nil {
					return err
				} else if f != "" {
					plots[key] = f
				}
			}
		}
	}
	if o.PlotDir != "" {
		rp, err := plotReplicated(rr, o.PlotDir)
		if err != nil {
			return err
		}
		for k, f := range rp {
			plots[k] = f
		}
	}
	img := func(key, alt string) {
		if f, ok := plots[key]; ok {
			pf("![%s](%s)\n\n", alt, filepath.ToSlash(filepath.Join(o.PlotLink, f)))
		}
	}

	// Durable publish.
	pf("## Durable publish throughput\n\n")
	pf("Each publisher publishes as fast as its window of %d unacknowledged messages allows for %s; then waits up to %s for the outstanding acks; msgs/s is every persisted ack (or the peer's equivalent) over the time from the start to the last ack. msgs/s (MB/s of payload); the ratio is Tandem's figure divided by the peer's. Latency: send -> ack, closed loop (not corrected: see the fixed-rate tables).\n\n", rr.Settings.Window, rr.Settings.Duration, rr.Settings.DrainTimeout)
	writeThroughputTable(b, rr, peers, ScenPublish)
	for _, pubs := range rr.Settings.Publishers {
		img(fmt.Sprintf("throughput %d", pubs), fmt.Sprintf("throughput by message size, %d publishers", pubs))
	}

	// Latency.
	pf("## Persisted-ack latency at fixed rates\n\n")
	pf("One publisher on an open-loop schedule (message i due at start + i/rate), %d-byte messages, for %s. Latency is measured from when each message was due, not when it was sent, so a stall counts for every message scheduled during it (corrected for coordinated omission); messages still unacknowledged after the drain timeout (%s), or never sent because the window stayed full, are recorded with the time they had waited by then. `knee` is %.0f%% of the system's own 1-publisher throughput at the nearest size in this run. *Saturated*: the system did not keep up (acknowledged below 95%% of the offered rate, or left messages unsent/unacknowledged): its latency then grows with the length of the run.\n\n",
		rr.Settings.LatencySize, rr.Settings.Duration, rr.Settings.DrainTimeout, rr.Settings.KneeFraction*100)
	writeLatencyTable(b, rr, peers, ScenAckLatency)
	for _, rs := range rateLabels(rr) {
		img(fmt.Sprintf("%s size=%d rate=%s", ScenAckLatency, rr.Settings.LatencySize, rs), "persisted-ack latency at "+rs)
	}

	pf("## End-to-end latency at fixed rates\n\n")
	pf("As above, with one subscriber (starting from now) on its own connection: latency from when the message was due to when the subscriber received it. The publisher still asks for persisted acks.\n\n")
	writeLatencyTable(b, rr, peers, ScenE2E)
	for _, rs := range rateLabels(rr) {
		img(fmt.Sprintf("%s size=%d rate=%s", ScenE2E, rr.Settings.LatencySize, rs), "end-to-end latency at "+rs)
	}

	pf("## Fan-out\n\n")
	pf("One publisher (window %d, persisted acks) publishes %d-byte messages for at most %s or %d messages; N subscribers, each on its own connection, receive them all. Deliveries/s summed over subscribers, from the start of publishing to the last delivery.\n\n",
		rr.Settings.Window, rr.Settings.FanoutSize, rr.Settings.Duration, rr.Settings.FanoutMessages)
	writeThroughputTable(b, rr, peers, ScenFanout)

	pf("## Replay from EPOCH\n\n")
	pf("The log is preloaded with %d messages of %d bytes (4 publishers), then one subscriber reads it from the start (Tandem: From(Epoch); NATS: DeliverAll ordered consumer; Redis: XREAD from 0). Replayed msgs/s. The data is in the page cache (same server process, just written).\n\n", rr.Settings.ReplayMessages, rr.Settings.ReplaySize)
	writeThroughputTable(b, rr, peers, ScenReplay)

	writePairSection(b, rr)
	writeReplicatedSection(b, rr, img)
	writeEngineSection(b, rr)
	writeFailoverSection(b, rr)
	writeNATSFailover(b, rr)
	writeTLSSection(b, rr)

	// Systems and settings.
	pf("## Systems and their settings\n\n")
	for _, s := range rr.Systems {
		pf("### %s\n\n", s.Name)
		pf("%s", s.Product)
		if s.Version != "" {
			pf(" (%s)", s.Version)
		}
		if s.Binary != "" {
			pf(", binary `%s`", s.Binary)
		}
		pf("\n\n")
		if s.Skipped != "" {
			pf("**Skipped:** %s\n\n", s.Skipped)
		}
		keys := make([]string, 0, len(s.Settings))
		for k := range s.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			pf("- %s: %s\n", k, s.Settings[k])
		}
		pf("\n")
	}
	pf("## Run settings\n\n")
	st := rr.Settings
	pf("| setting | value |\n|---|---|\n")
	rows := [][2]string{
		{"quick", fmt.Sprint(st.Quick)},
		{"measured interval per step", st.Duration.String()},
		{"window (unacknowledged messages per publisher)", fmt.Sprint(st.Window)},
		{"publish sizes (bytes)", fmt.Sprint(st.Sizes)},
		{"publisher counts", fmt.Sprint(st.Publishers)},
		{"fixed-rate message size", fmt.Sprint(st.LatencySize)},
		{"fixed rates (msgs/s)", fmt.Sprint(st.Rates)},
		{"knee fraction", fmt.Sprint(st.KneeFraction)},
		{"fan-out subscribers", fmt.Sprint(st.Fanout)},
		{"fan-out size / max messages / timeout", fmt.Sprintf("%d / %d / %s", st.FanoutSize, st.FanoutMessages, st.FanoutTimeout)},
		{"replay messages / size", fmt.Sprintf("%d / %d", st.ReplayMessages, st.ReplaySize)},
		{"replay preload / read timeouts", fmt.Sprintf("%s / %s", st.ReplayPreloadTimeout, st.ReplayTimeout)},
		{"pair: publish sizes (1 publisher) / fixed rates", fmt.Sprintf("%v / %v", st.PairSizes, st.PairRates)},
		{"engine: publish sizes / publisher counts / fan-out subscribers / sync pair sizes / runs per backend", fmt.Sprintf("%v / %v / %v / %v / %d", st.EngineSizes, st.EnginePublishers, st.EngineFanout, st.EnginePairSizes, max(1, st.EngineRuns))},
		{"failover: runs / rate (msgs/s) / size / heartbeat", fmt.Sprintf("%d / %d / %d / %s", st.FailoverRuns, st.FailoverRate, st.FailoverSize, st.FailoverHeartbeat)},
		{"failover of the NATS R3 peers: runs / rate (msgs/s)", fmt.Sprintf("%d / %d", st.FailoverPeerRuns, st.FailoverPeerRate)},
		{"tls: publish sizes (1 publisher) / fixed rates", fmt.Sprintf("%v / %v", st.TLSSizes, st.Rates)},
		{"drain timeout", st.DrainTimeout.String()},
		{"fdatasync probe calls", fmt.Sprint(st.FsyncProbe)},
		{"systems", strings.Join(st.Systems, ", ")},
		{"scenarios", strings.Join(st.Scenarios, ", ")},
		{"data directory", st.DataDir},
		{"Go", rr.Machine.GoVersion},
		{"OS", rr.Machine.OS},
	}
	for _, r := range rows {
		pf("| %s | %s |\n", r[0], r[1])
	}
	for sys, why := range st.ReplaySkip {
		pf("| replay skipped for %s | %s |\n", sys, why)
	}
	pf("\n## Method\n\n")
	pf("- Every step starts a fresh server (Tandem, nats-server or redis-server as its own process, on a loopback port, data in a new temporary directory) and stops it afterwards; the load generator is the bench process on the same machine, so the server and the generator share the cores.\n")
	pf("- Every payload starts with a 16-byte header (message index, due time); subscribers check order (out-of-order or duplicate deliveries are counted as bad).\n")
	pf("- Latencies are recorded in HdrHistogram (3 significant digits). The fixed-rate publisher paces itself with nanosleep on a locked thread (time.Sleep sleeps >= 1 ms here); its lag behind the schedule is part of the corrected latency and its p99 is in the JSON (pacer_lag_p99_us).\n")
	pf("- Durability differs by setting and is spelled out per system above: `tandem`, `nats-always` and `redis-always` acknowledge only after fdatasync/fsync; `nats-default` and `redis-everysec` acknowledge before the data is on disk; of the replicated peers, `nats-r3-always` acknowledges after the leader and one follower fsynced (3 copies), `nats-r3-default` after they wrote (no fsync), `redis-replica` after the primary's AOF fsync and the replica's acknowledgement of the replication stream (in its memory).\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func fsyncText(m Machine) string {
	if m.Fsync == nil {
		if m.FsyncError != "" {
			return "probe failed: " + m.FsyncError
		}
		return "not measured"
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%d calls)", fmtUs(m.Fsync.P50), fmtUs(m.Fsync.P99), fmtUs(m.Fsync.Max), m.Fsync.Count)
}

// rateLabels returns the fixed-rate labels present in the run, in order.
func rateLabels(rr *RunResult) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rr.Results {
		if (r.Scenario == ScenAckLatency || r.Scenario == ScenE2E) && r.RateLabel != "" && !seen[r.RateLabel] {
			seen[r.RateLabel] = true
			out = append(out, r.RateLabel)
		}
	}
	return out
}

// keysOf returns the measurement keys of a scenario in run order.
func keysOf(rr *RunResult, scen string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rr.Results {
		if r.Scenario == scen && !seen[r.Key] {
			seen[r.Key] = true
			out = append(out, r.Key)
		}
	}
	return out
}

func cell(r *Result) string {
	switch {
	case r == nil:
		return "–"
	case r.Skipped != "":
		return "skipped"
	case r.Error != "":
		return "error"
	}
	s := fmtRate(r.MsgsPerSec)
	if r.MBPerSec >= 1 {
		s += fmt.Sprintf(" (%.0f MB/s)", r.MBPerSec)
	}
	if r.Saturated {
		s += " *"
	}
	return s
}

func ratio(t, p *Result) string {
	if t == nil || p == nil || t.MsgsPerSec <= 0 || p.MsgsPerSec <= 0 || t.Error != "" || p.Error != "" {
		return ""
	}
	return fmt.Sprintf(" **%s×**", fmtRatio(t.MsgsPerSec/p.MsgsPerSec))
}

func fmtRatio(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func writeThroughputTable(b *strings.Builder, rr *RunResult, systems []string, scen string) {
	keys := keysOf(rr, scen)
	if len(keys) == 0 {
		b.WriteString("_Not run._\n\n")
		return
	}
	b.WriteString("| measurement |")
	for _, s := range systems {
		b.WriteString(" " + s + " |")
	}
	b.WriteString("\n|---|")
	for range systems {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	var notes []string
	for _, k := range keys {
		b.WriteString("| " + strings.TrimPrefix(k, scen+" ") + " |")
		t := rr.find(k, "tandem")
		for _, s := range systems {
			r := rr.find(k, s)
			c := cell(r)
			if s != "tandem" {
				c += ratio(t, r)
			} else if r != nil && r.Latency != nil && scen == ScenPublish {
				c += fmt.Sprintf(" p99 %s", fmtUs(r.Latency.P99))
			}
			b.WriteString(" " + c + " |")
			if r != nil && (r.Note != "" || r.Error != "") {
				notes = append(notes, fmt.Sprintf("%s %s: %s", s, k, firstNonEmpty(r.Error, r.Note)))
			}
			if r != nil && r.Skipped != "" && scen == ScenReplay {
				notes = append(notes, fmt.Sprintf("%s: %s", s, r.Skipped))
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nRatios in bold: Tandem ÷ peer. `*` did not finish within its limits (see notes).\n\n")
	if scen == ScenPublish {
		b.WriteString("Persisted-ack latency (send -> ack, closed loop) p50 / p99:\n\n")
		writeClosedLatency(b, rr, systems, keys)
	}
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}
}

func writeClosedLatency(b *strings.Builder, rr *RunResult, systems []string, keys []string) {
	b.WriteString("| measurement |")
	for _, s := range systems {
		b.WriteString(" " + s + " |")
	}
	b.WriteString("\n|---|")
	for range systems {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, k := range keys {
		b.WriteString("| " + strings.TrimPrefix(k, ScenPublish+" ") + " |")
		for _, s := range systems {
			r := rr.find(k, s)
			if r == nil || r.Latency == nil {
				b.WriteString(" – |")
				continue
			}
			b.WriteString(fmt.Sprintf(" %s / %s |", fmtUs(r.Latency.P50), fmtUs(r.Latency.P99)))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func writeLatencyTable(b *strings.Builder, rr *RunResult, systems []string, scen string) {
	keys := keysOf(rr, scen)
	if len(keys) == 0 {
		b.WriteString("_Not run._\n\n")
		return
	}
	b.WriteString("| offered rate | system | achieved msgs/s | p50 | p90 | p99 | p99.9 | max | p99 vs Tandem |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range keys {
		t := rr.find(k, "tandem")
		for _, s := range systems {
			r := rr.find(k, s)
			if r == nil {
				continue
			}
			label := r.RateLabel
			if strings.HasPrefix(label, "knee") {
				label = fmt.Sprintf("%s = %s", label, fmtRate(r.Rate))
			} else {
				label = fmtRate(r.Rate)
			}
			if r.Error != "" {
				fmt.Fprintf(b, "| %s | %s | error: %s | | | | | | |\n", label, s, r.Error)
				continue
			}
			l := r.Latency
			if l == nil {
				fmt.Fprintf(b, "| %s | %s | %s | | | | | | |\n", label, s, fmtRate(r.MsgsPerSec))
				continue
			}
			vs := ""
			if s != "tandem" && t != nil && t.Latency != nil && t.Latency.P99 > 0 {
				vs = fmt.Sprintf("%s×", fmtRatio(l.P99/t.Latency.P99))
			}
			sat := ""
			if r.Saturated {
				sat = " (saturated)"
			}
			fmt.Fprintf(b, "| %s | %s | %s%s | %s | %s | %s | %s | %s | %s |\n", label, s, fmtRate(r.MsgsPerSec), sat,
				fmtUs(l.P50), fmtUs(l.P90), fmtUs(l.P99), fmtUs(l.P999), fmtUs(l.Max), vs)
		}
	}
	b.WriteString("\n`p99 vs Tandem`: the peer's p99 ÷ Tandem's (above 1: Tandem is faster).\n\n")
}

// writeHeadline writes the headline table: durable publish msgs/s and p99
// persisted-ack latency for every system, same run.
func writeHeadline(b *strings.Builder, rr *RunResult) {
	systems := measuredSystems(rr)
	st := rr.Settings
	if len(st.Sizes) == 0 || len(systems) == 0 {
		b.WriteString("_No results._\n\n")
		return
	}
	size := st.Sizes[0]
	pubCols := st.Publishers
	rates := rateLabels(rr)
	fmt.Fprintf(b, "Durable publish of %d-byte messages (msgs/s, window %d) and p99 persisted-ack latency at fixed offered rates (%d-byte messages, corrected for coordinated omission).\n\n", size, st.Window, st.LatencySize)
	b.WriteString("| system | ack means |")
	for _, p := range pubCols {
		fmt.Fprintf(b, " publish msgs/s, %d pub |", p)
	}
	for _, r := range rates {
		fmt.Fprintf(b, " p99 ack @ %s |", r)
	}
	b.WriteString("\n|---|---|")
	for range pubCols {
		b.WriteString("---:|")
	}
	for range rates {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, s := range systems {
		fmt.Fprintf(b, "| %s | %s |", s, durability(s))
		for _, p := range pubCols {
			k := fmt.Sprintf("publish size=%d pubs=%d", size, p)
			r := rr.find(k, s)
			c := cell(r)
			if s != "tandem" {
				if t := rr.find(k, "tandem"); t != nil && r != nil && r.MsgsPerSec > 0 && t.MsgsPerSec > 0 {
					c += fmt.Sprintf(" (Tandem %s×)", fmtRatio(t.MsgsPerSec/r.MsgsPerSec))
				}
			}
			b.WriteString(" " + c + " |")
		}
		for _, rl := range rates {
			k := fmt.Sprintf("%s size=%d rate=%s", ScenAckLatency, st.LatencySize, rl)
			r := rr.find(k, s)
			if r == nil || r.Latency == nil {
				b.WriteString(" – |")
				continue
			}
			c := fmtUs(r.Latency.P99)
			if strings.HasPrefix(rl, "knee") {
				c += " @" + fmtRate(r.Rate)
			}
			if r.Saturated {
				c += " (saturated)"
			}
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func durability(sys string) string {
	switch sys {
	case "tandem":
		return "after fdatasync (group commit)"
	case "nats-always":
		return "after fsync (sync_interval: always)"
	case "nats-default":
		return "after write, fsync every 2 min"
	case "redis-always":
		return "after AOF fsync (appendfsync always)"
	case "redis-everysec":
		return "after AOF write, fsync every 1 s"
	case "nats-r3-always":
		return "after fsync on the leader and 1 follower (R3, 3 copies)"
	case "nats-r3-default":
		return "after write on the leader and 1 follower (R3), fsync every 2 min"
	case "redis-replica":
		return redisReplicaDurability + " (WAIT 1 0)"
	}
	return ""
}
