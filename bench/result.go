package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// resultFormat is the version of the JSON result file.
const resultFormat = 1

// RunResult is one run: written as JSON (one file per run) and rendered
// into the markdown report.
type RunResult struct {
	Format      int           `json:"format"`
	Started     time.Time     `json:"started"`
	Elapsed     float64       `json:"elapsed_s"`
	Command     []string      `json:"command,omitempty"`
	Tandem      Commit        `json:"tandem_commit"`
	Machine     Machine       `json:"machine"`
	Settings    Settings      `json:"settings"`
	Systems     []SystemInfo  `json:"systems"`
	Results     []Result      `json:"results"`
	NotMeasured []NotMeasured `json:"not_measured,omitempty"`
}

// NotMeasured is a scenario of the issue that this build cannot run yet.
type NotMeasured struct {
	Scenario string `json:"scenario"`
	Title    string `json:"title"`
	Reason   string `json:"reason"`
}

// Result is one measurement of one system.
type Result struct {
	Scenario string `json:"scenario"`
	System   string `json:"system"`
	// Key names the measurement independently of the system, e.g.
	// "publish size=64 pubs=1"; (Key, System) is unique in a run and is
	// what --compare matches.
	Key string `json:"key"`

	Size        int     `json:"size,omitempty"`
	Publishers  int     `json:"publishers,omitempty"`
	Subscribers int     `json:"subscribers,omitempty"`
	Rate        float64 `json:"offered_rate,omitempty"` // fixed-rate scenarios: total offered msgs/s
	RateLabel   string  `json:"rate_label,omitempty"`
	Messages    int64   `json:"messages,omitempty"` // replay: journal size

	// Mode: pair scenario: single, sync or async. Engine: engine scenario:
	// the backend asked for (uring, epoll). EngineInUse: Tandem: the
	// backend the server reported (stat) during the step.
	Mode        string `json:"mode,omitempty"`
	Engine      string `json:"engine,omitempty"`
	EngineInUse string `json:"engine_in_use,omitempty"`
	// Pair scenario: destination B's lag behind A (messages) at the end of
	// the step and the largest seen while it ran (polled every 250 ms).
	ReplLagEnd uint64 `json:"repl_lag_end,omitempty"`
	ReplLagMax uint64 `json:"repl_lag_max,omitempty"`

	// Engine scenario: CPU and context switches of the server process(es)
	// over the step, and per million messages (resources.go).
	Resources *Resources `json:"resources,omitempty"`
	// Engine scenario with more than one run per backend
	// (Settings.EngineRuns): each run's result (Run: 1-based; latency
	// curves left out), of which this result's figures are the medians,
	// each figure separately; its counters (sent, acked, received, bad,
	// errors) are the sums.
	Runs []Result `json:"runs,omitempty"`
	Run  int      `json:"run,omitempty"`

	// Failover scenario: the runs' details; Latency is the distribution
	// of the failover times (kill -> first message through the other
	// instance).
	Failover *FailoverStats `json:"failover,omitempty"`

	DurationSec float64 `json:"duration_s,omitempty"`
	// MsgsPerSec: publish and fixed-rate: acknowledged msgs/s within the
	// measured interval; fan-out: deliveries/s summed over subscribers;
	// replay: replayed msgs/s.
	MsgsPerSec  float64 `json:"msgs_per_s"`
	MBPerSec    float64 `json:"mb_per_s,omitempty"` // payload bytes, 10^6
	PublishRate float64 `json:"publish_rate,omitempty"`

	Sent     int64 `json:"sent,omitempty"`
	Acked    int64 `json:"acked,omitempty"`
	Unacked  int64 `json:"unacked,omitempty"`  // sent, not acknowledged by the end of the drain
	Unsent   int64 `json:"unsent,omitempty"`   // scheduled, never sent (window full until the end)
	Received int64 `json:"received,omitempty"` // sum over subscribers
	Bad      int64 `json:"bad,omitempty"`      // out of order, duplicate or malformed deliveries
	Errors   int64 `json:"errors,omitempty"`   // refused or failed publishes

	// Latency: publish: send -> persisted ack (closed loop, as sent);
	// ack-latency: intended send time -> persisted ack (corrected for
	// coordinated omission); e2e-latency: intended send time -> received;
	// engine fan-out: send -> delivered (closed loop, all subscribers).
	Latency *Latency `json:"latency,omitempty"`
	// RawLatency: fixed-rate scenarios, from the actual send instead
	// (not corrected; for comparison only).
	RawLatency *Latency `json:"raw_latency,omitempty"`
	// AckLatency: e2e-latency: the publisher's corrected ack latency;
	// engine fan-out: the publisher's send -> persisted ack.
	AckLatency  *Latency `json:"ack_latency,omitempty"`
	PacerLagP99 float64  `json:"pacer_lag_p99_us,omitempty"` // how late the generator sent (p99, µs)

	// Stages: Tandem: the server-side per-stage latency breakdown sampled
	// during the step (bench/stages.go), p50/p99 per stage.
	Stages []StageLatency `json:"stages,omitempty"`

	Saturated bool   `json:"saturated,omitempty"` // could not keep up with the offered load
	Note      string `json:"note,omitempty"`
	Skipped   string `json:"skipped,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Summary is a one-line description for the progress display.
func (r *Result) Summary() string {
	if r.Error != "" {
		return "ERROR: " + r.Error
	}
	if r.Skipped != "" {
		return "skipped: " + r.Skipped
	}
	if f := r.Failover; f != nil && r.Latency != nil && f.PublishLatency != nil && strings.HasPrefix(r.System, "nats-r3-") {
		// A replicated NATS peer (nats_failover.go).
		return fmt.Sprintf("stream leader killed %d times: next ack p50 %s max %s, next delivery p50 %s max %s  %d acked never delivered  %d timeouts",
			len(f.TimesUs), fmtUs(f.PublishLatency.P50), fmtUs(f.PublishLatency.Max), fmtUs(r.Latency.P50), fmtUs(r.Latency.Max), f.Lost, f.Timeouts)
	}
	if f := r.Failover; f != nil && r.Latency != nil {
		s := fmt.Sprintf("failover over %d runs: p50 %s p90 %s p99 %s max %s  %d lost/repeated at the switch", len(f.TimesUs),
			fmtUs(r.Latency.P50), fmtUs(r.Latency.P90), fmtUs(r.Latency.P99), fmtUs(r.Latency.Max), f.Violations)
		if f.Timeouts > 0 {
			s += fmt.Sprintf("  %d TIMEOUTS", f.Timeouts)
		}
		if r.Bad > 0 {
			s += fmt.Sprintf("  %d BAD deliveries", r.Bad)
		}
		return s
	}
	s := fmt.Sprintf("%s msgs/s", fmtRate(r.MsgsPerSec))
	if r.MBPerSec > 0 {
		s += fmt.Sprintf(" (%.1f MB/s)", r.MBPerSec)
	}
	if r.Latency != nil {
		s += fmt.Sprintf("  p50 %s p99 %s p99.9 %s max %s", fmtUs(r.Latency.P50), fmtUs(r.Latency.P99), fmtUs(r.Latency.P999), fmtUs(r.Latency.Max))
	}
	if u := r.Resources; u != nil {
		s += fmt.Sprintf("  server %.2f CPU-s/M, %s ctxsw/M", u.ServerCPUPerM, fmtRate(u.ServerCtxPerM))
	}
	if r.Saturated {
		s += "  SATURATED"
	}
	if r.Bad > 0 {
		s += fmt.Sprintf("  %d BAD deliveries", r.Bad)
	}
	if r.Errors > 0 {
		s += fmt.Sprintf("  %d errors", r.Errors)
	}
	return s
}

// fmtUs formats microseconds with a unit.
func fmtUs(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2f s", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2f ms", us/1e3)
	default:
		return fmt.Sprintf("%.0f µs", us)
	}
}

// WriteJSON writes the run to path.
func (rr *RunResult) WriteJSON(path string) error {
	b, err := json.MarshalIndent(rr, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadJSON reads a run written by WriteJSON.
func ReadJSON(path string) (*RunResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rr RunResult
	if err := json.Unmarshal(b, &rr); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rr, nil
}

// find returns the result of system for key, or nil.
func (rr *RunResult) find(key, system string) *Result {
	for i := range rr.Results {
		if rr.Results[i].Key == key && rr.Results[i].System == system {
			return &rr.Results[i]
		}
	}
	return nil
}
