package bench

import (
	"fmt"
	"strings"
)

// The report's comparison of replicated systems (issue 15): Tandem's sync
// and async pair (the pair scenario) beside the replicated peers
// (peers.go), durable publish and persisted-ack latency at the pair
// scenario's fixed rates, and the NATS R3 failover beside Tandem's.

// replRow is one system of the replicated comparison: where its results
// are (the pair scenario's keys for Tandem, the peer scenarios' for peers).
type replRow struct {
	label, system, mode, means string
}

func replicatedRows(rr *RunResult) []replRow {
	rows := []replRow{
		{"tandem single", "tandem", "single", "after its fdatasync (1 copy; the baseline)"},
		{"tandem sync pair", "tandem", "sync", "after A's and B's fdatasync (2 copies on disk)"},
		{"tandem async pair", "tandem", "async", "after A's fdatasync; B stores it afterwards (2 copies, the second later)"},
	}
	means := map[string]string{
		"nats-r3-always":  "after the leader and 1 of 2 followers fsynced it (3 copies, quorum 2)",
		"nats-r3-default": "after the leader and 1 of 2 followers wrote it; fsync every 2 min (3 copies, quorum 2)",
		"redis-replica":   redisReplicaDurability + " (2 copies, 1 on disk)",
	}
	for _, s := range measuredSystems(rr) {
		if isReplicated(s) {
			rows = append(rows, replRow{s, s, "", means[s]})
		}
	}
	return rows
}

func (w replRow) publish(rr *RunResult, size int) *Result {
	if w.mode != "" {
		return rr.find(fmt.Sprintf("pair publish size=%d pubs=1 mode=%s", size, w.mode), w.system)
	}
	return rr.find(fmt.Sprintf("publish size=%d pubs=1", size), w.system)
}

func (w replRow) ackLatency(rr *RunResult, rate int) *Result {
	if w.mode != "" {
		return rr.find(fmt.Sprintf("pair ack-latency size=%d rate=%d mode=%s", rr.Settings.LatencySize, rate, w.mode), w.system)
	}
	return rr.find(fmt.Sprintf("%s size=%d rate=%d", ScenAckLatency, rr.Settings.LatencySize, rate), w.system)
}

// replicatedRan reports whether the comparison has anything beyond
// Tandem's own pair (which the pair section shows already).
func replicatedRan(rr *RunResult) bool {
	for _, s := range measuredSystems(rr) {
		if isReplicated(s) {
			return true
		}
	}
	return false
}

// plotReplicated draws the comparison's plots into dir: persisted-ack
// latency curves at each pair rate and durable publish by size. It
// returns the files by report key.
func plotReplicated(rr *RunResult, dir string) (map[string]string, error) {
	out := map[string]string{}
	if !replicatedRan(rr) {
		return out, nil
	}
	rows := replicatedRows(rr)
	for _, rate := range rr.Settings.PairRates {
		var ss []latencySeries
		for _, w := range rows {
			ss = append(ss, latencySeries{label: w.label, r: w.ackLatency(rr, rate)})
		}
		file := fmt.Sprintf("replicated-ack-latency-%d.svg", rate)
		title := fmt.Sprintf("Replicated: persisted-ack latency at %s msgs/s offered, %d B\ncorrected for coordinated omission", fmtRate(float64(rate)), rr.Settings.LatencySize)
		f, err := plotLatencySeries(dir, file, title, ss)
		if err != nil {
			return nil, err
		}
		if f != "" {
			out[fmt.Sprintf("replicated ack-latency %d", rate)] = f
		}
	}
	var ts []throughputSeries
	for _, w := range rows {
		t := throughputSeries{label: w.label}
		for _, size := range rr.Settings.PairSizes {
			t.points = append(t.points, sizePoint{size, w.publish(rr, size)})
		}
		ts = append(ts, t)
	}
	f, err := plotThroughputSeries(dir, "replicated-throughput.svg", fmt.Sprintf("Replicated: durable publish throughput, 1 publisher\npersisted acks, window %d", rr.Settings.Window), rr.Settings.PairSizes, ts)
	if err != nil {
		return nil, err
	}
	if f != "" {
		out["replicated throughput"] = f
	}
	return out, nil
}

// writeReplicatedSection writes the comparison; img inserts a plot by key.
func writeReplicatedSection(b *strings.Builder, rr *RunResult, img func(key, alt string)) {
	st := rr.Settings
	b.WriteString("## Replicated: Tandem's pair vs replicated peers\n\n")
	if !replicatedRan(rr) {
		b.WriteString("_No replicated peer ran (nats-r3-always, nats-r3-default, redis-replica; see the skipped peers above)._\n\n")
		return
	}
	fmt.Fprintf(b, "Tandem's sync and async pair (the pair scenario above) beside the replicated peers, every server started by the bench on loopback on this machine: "+
		"`nats-r3-always` and `nats-r3-default` are a 3-node nats-server cluster with an R3 stream (`sync_interval: always`, and the default); **JetStream keeps 3 copies to Tandem's 2**. "+
		"`redis-replica` is a Redis primary with one replica, `appendfsync always` on both and `WAIT 1 0` after each pipeline: its ack means **%s** (Redis 7.0 has no WAITAOF). "+
		"**On %d cores these are comparative figures only**: every server process of a system (Tandem's 2, NATS's 3, Redis's 2) and the load generator share the same cores, so the figures show how the systems compare here, not what each would do on machines of its own.\n\n",
		redisReplicaDurability, rr.Machine.Cores)
	rows := replicatedRows(rr)
	b.WriteString("| system | ack means |")
	for _, size := range st.PairSizes {
		fmt.Fprintf(b, " publish %d B msgs/s, p99 |", size)
	}
	for _, rate := range st.PairRates {
		fmt.Fprintf(b, " ack @ %s p50 / p99 |", fmtRate(float64(rate)))
	}
	b.WriteString("\n|---|---|")
	for range st.PairSizes {
		b.WriteString("---:|")
	}
	for range st.PairRates {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	var notes []string
	for _, w := range rows {
		fmt.Fprintf(b, "| %s | %s |", w.label, w.means)
		for _, size := range st.PairSizes {
			r := w.publish(rr, size)
			c := cell(r)
			if m := measured(r); m != nil && m.Latency != nil {
				c += ", " + fmtUs(m.Latency.P99)
			}
			b.WriteString(" " + c + " |")
			if r != nil && r.Error != "" {
				notes = append(notes, fmt.Sprintf("%s %s: %s", w.label, r.Key, r.Error))
			}
		}
		for _, rate := range st.PairRates {
			r := w.ackLatency(rr, rate)
			switch m := measured(r); {
			case r == nil:
				b.WriteString(" – |")
			case m == nil || m.Latency == nil:
				b.WriteString(" error |")
				if r.Error != "" {
					notes = append(notes, fmt.Sprintf("%s %s: %s", w.label, r.Key, r.Error))
				}
			default:
				c := fmtUs(m.Latency.P50) + " / " + fmtUs(m.Latency.P99)
				if m.Saturated {
					c += fmt.Sprintf(" (saturated: %s msgs/s)", fmtRate(m.MsgsPerSec))
				}
				b.WriteString(" " + c + " |")
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(b, "\nPublish: one publisher, window %d, %s, closed loop, msgs/s and p99 send -> persisted ack. Ack: persisted-ack latency at the fixed offered rate, one publisher, %d-byte messages, corrected for coordinated omission; *saturated*: the system did not keep up. "+
		"Tandem's rows are the pair scenario's steps, the peers' the publish and ack-latency scenarios' (the same measurement code).\n\n", st.Window, st.Duration, st.LatencySize)
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}
	img("replicated throughput", "replicated systems: durable publish by message size")
	for _, rate := range st.PairRates {
		img(fmt.Sprintf("replicated ack-latency %d", rate), fmt.Sprintf("replicated systems: persisted-ack latency at %d msgs/s", rate))
	}
}

// writeNATSFailover adds the NATS R3 failover (nats_failover.go) beside
// Tandem's in the failover section.
func writeNATSFailover(b *strings.Builder, rr *RunResult) {
	var rows []*Result
	for i := range rr.Results {
		r := &rr.Results[i]
		if r.Scenario == ScenFailover && strings.HasPrefix(r.System, "nats-r3-") {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		return
	}
	st := rr.Settings
	b.WriteString("### NATS JetStream R3: killing the stream leader\n\n")
	fmt.Fprintf(b, "The 3-node cluster of `nats-r3-always` / `nats-r3-default` (3 copies), a publisher at %s msgs/s of %d-byte messages (PublishAsync, window %d, a Msg-Id per message; a publish whose PubAck fails or takes over %s is sent again) and a subscriber (a durable push consumer, replicated with the stream, DeliverNew), each on its own connection listing the three servers, the leader's last. "+
		"Each run SIGKILLs the stream leader's nats-server, measures from the kill to **the next acknowledged publish** (the first PubAck of a publish sent after the kill) and to **the next delivery** (the first delivery of a message first published after the kill), then restarts the killed server on its store and waits until it is current. "+
		"JetStream elects a new leader after its raft election timeout (4-9 s in nats-server 2.15); the clients reconnect only when their own server was the one killed. "+
		"Beside it, Tandem's failover above (a sync pair, SIGKILL of the subscriber's instance, %s heartbeat): the next delivery is the first message through the other instance, the next ack the HA publisher's first persisted ack of a message published after the kill. "+
		"On %d cores, comparative figures only.\n\n",
		fmtRate(float64(st.FailoverPeerRate)), st.FailoverSize, natsFoWindow, natsFoAckTimeout, st.FailoverHeartbeat, rr.Machine.Cores)
	b.WriteString("| system | runs | next ack p50 / max | next delivery p50 / p90 / max | acked, never delivered | repeats | clients' server killed | no ack or delivery within 30 s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range rr.Results {
		r := &rr.Results[i]
		if r.Scenario == ScenFailover && r.System == "tandem" && r.Mode == "sync" && r.Failover != nil && r.Latency != nil && r.Error == "" {
			ack := "–"
			if l := r.Failover.PublishLatency; l != nil {
				ack = fmtUs(l.P50) + " / " + fmtUs(l.Max)
			}
			fmt.Fprintf(b, "| tandem sync pair (kill the subscriber's instance) | %d | %s | %s / %s / %s | %d lost or repeated at the switch | %d (dropped by the HA client) | every run | %d |\n",
				len(r.Failover.TimesUs), ack, fmtUs(r.Latency.P50), fmtUs(r.Latency.P90), fmtUs(r.Latency.Max), r.Failover.Violations, r.Failover.Duplicates, r.Failover.Timeouts)
		}
	}
	var notes []string
	for _, r := range rows {
		fs := r.Failover
		if r.Error != "" || fs == nil || r.Latency == nil {
			fmt.Fprintf(b, "| %s | error | | | | | | |\n", r.System)
			notes = append(notes, fmt.Sprintf("%s %s: %s", r.System, r.Key, firstNonEmpty(r.Error, "no figures")))
			continue
		}
		ack := "–"
		if l := fs.PublishLatency; l != nil {
			ack = fmtUs(l.P50) + " / " + fmtUs(l.Max)
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s / %s / %s | %d | %d | %d of %d | %d |\n", r.System, len(fs.TimesUs), ack,
			fmtUs(r.Latency.P50), fmtUs(r.Latency.P90), fmtUs(r.Latency.Max), fs.Lost, fs.Duplicates, fs.ClientNodeKilled, len(fs.TimesUs), fs.Timeouts)
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("%s %s: %s", r.System, r.Key, r.Note))
		}
	}
	b.WriteString("\n")
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}
}
