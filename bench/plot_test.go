package bench

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// svgTexts returns each text element's x position (pt) by its content.
func svgTexts(t *testing.T, path string) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, m := range regexp.MustCompile(`(?s)<text x="([-0-9.]+)"[^>]*>([^<]*)</text>`).FindAllStringSubmatch(string(b), -1) {
		x, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		out[m[2]] = x
	}
	return out
}

// The legend is drawn right of the plot (not over the curves), and every
// line of a long title starts inside the image (a one-line title that
// long started left of it: cut).
func TestPlotLegendAndTitle(t *testing.T) {
	dir := t.TempDir()
	curve := &Latency{Count: 10, P50: 100, P99: 900, Curve: []CurvePoint{{0, 50}, {50, 100}, {99, 900}, {99.9, 1500}, {100, 2000}}}
	long := "Persisted-ack latency at knee(80%) = 95.2k msgs/s offered, 128 B"
	ss := []latencySeries{
		{"tandem", &Result{Latency: curve}},
		{"redis-everysec-with-a-long-name", &Result{Latency: curve, Saturated: true}},
		{"missing", nil},
	}
	f, err := plotLatencySeries(dir, "l.svg", long+"\ncorrected for coordinated omission", ss)
	if err != nil || f != "l.svg" {
		t.Fatalf("plot: %q, %v", f, err)
	}
	texts := svgTexts(t, filepath.Join(dir, f))
	plotRight := plotWidth.Points()
	for _, label := range []string{"tandem", "redis-everysec-with-a-long-name (saturated)"} {
		x, ok := texts[label]
		if !ok {
			t.Fatalf("legend lacks %q: %v", label, texts)
		}
		if x < plotRight {
			t.Errorf("legend entry %q at x=%.1f, inside the plot (right edge %.1f)", label, x, plotRight)
		}
	}
	if _, ok := texts["missing"]; ok {
		t.Error("a series without a result is in the legend")
	}
	for _, line := range []string{long, "corrected for coordinated omission"} {
		if x, ok := texts[line]; !ok || x < 0 {
			t.Errorf("title line %q at x=%.1f (present %v)", line, x, ok)
		}
	}
	// Nothing to draw: no file.
	if f, err := plotLatencySeries(dir, "none.svg", "t", []latencySeries{{"x", nil}}); err != nil || f != "" {
		t.Errorf("empty plot: %q, %v", f, err)
	}
}
