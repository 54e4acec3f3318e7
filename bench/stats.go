package bench

import (
	"math"
	"sort"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds in an HdrHistogram with 3
// significant digits (relative error <= 0.1%) from 1 ns to 100 s.
const (
	histMin    = 1
	histMax    = int64(100 * time.Second)
	histDigits = 3
)

// newHist returns an empty latency histogram (nanoseconds).
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// recordClamped records v (ns) in h, clamping it into the histogram's range
// so a value outside it is never silently dropped.
func recordClamped(h *hdrhistogram.Histogram, v int64) {
	if v < histMin {
		v = histMin
	}
	if v > histMax {
		v = histMax
	}
	_ = h.RecordValue(v)
}

// Percentiles reported by every latency figure, and the points of the
// percentile curves drawn in the plots.
var (
	summaryQuantiles = []float64{50, 90, 99, 99.9}
	curveQuantiles   = []float64{0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100}
)

// Latency is a latency distribution, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p99_9_us"`
	Max   float64 `json:"max_us"`
	// Curve is the value at each quantile of curveQuantiles (for plots).
	Curve []CurvePoint `json:"curve,omitempty"`
}

// CurvePoint is one point of a percentile curve.
type CurvePoint struct {
	Percentile float64 `json:"percentile"`
	Micros     float64 `json:"us"`
}

// summarize turns a histogram (ns) into a Latency (µs); nil when empty.
func summarize(h *hdrhistogram.Histogram) *Latency {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	l := &Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1e3,
		P50:   us(h.ValueAtQuantile(50)),
		P90:   us(h.ValueAtQuantile(90)),
		P99:   us(h.ValueAtQuantile(99)),
		P999:  us(h.ValueAtQuantile(99.9)),
		Max:   us(h.Max()),
	}
	for _, q := range curveQuantiles {
		v := h.ValueAtQuantile(q)
		if q == 100 {
			v = h.Max()
		}
		l.Curve = append(l.Curve, CurvePoint{Percentile: q, Micros: us(v)})
	}
	return l
}

// percentile returns the q-th percentile (0 < q <= 100) of sorted values by
// the nearest-rank method: the smallest value such that at least q% of the
// values are <= it. It is the reference the HdrHistogram figures are tested
// against (they agree within the histogram's precision).
func percentile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	if q <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(q / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// sortedCopy returns vs sorted ascending.
func sortedCopy(vs []int64) []int64 {
	s := append([]int64(nil), vs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

// Coordinated omission.
//
// A load generator that sends the next message only after the previous one
// went out (or was acknowledged) stops sending while the system stalls, so
// the stall is recorded once instead of once per message that should have
// been sent meanwhile: the percentiles look far better than what users at
// that offered rate experience. Two corrections, both used here:
//
//   - open-loop schedule (what the fixed-rate scenarios do): message i is
//     due at start + i/rate, and its latency is measured from that intended
//     time, not from when the generator managed to send it. A stall delays
//     every message scheduled during it, and each one carries the delay.
//     See scheduledLatencies.
//   - HdrHistogram's RecordCorrectedValue, for closed-loop measurements
//     with a known expected interval: a value v larger than the interval
//     also records v-interval, v-2*interval, ... down to the interval
//     (the samples the stalled generator omitted). See correctedHist.

// intendedTime is when message i of a schedule at rate msgs/s starting at
// start (ns) is due.
func intendedTime(start int64, i int64, rate float64) int64 {
	return start + int64(math.Round(float64(i)*1e9/rate))
}

// scheduledLatencies returns, for messages scheduled at rate from start, the
// latency of each measured from its intended time: done[i] - intended(i).
func scheduledLatencies(start int64, rate float64, done []int64) []int64 {
	out := make([]int64, len(done))
	for i, d := range done {
		out[i] = d - intendedTime(start, int64(i), rate)
	}
	return out
}

// correctedHist records closed-loop latencies (ns) with HdrHistogram's
// coordinated-omission correction for the expected interval (ns).
func correctedHist(values []int64, expectedInterval int64) *hdrhistogram.Histogram {
	h := newHist()
	for _, v := range values {
		_ = h.RecordCorrectedValue(v, expectedInterval)
	}
	return h
}
