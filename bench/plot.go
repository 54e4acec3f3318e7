package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/brewer"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plots are drawn with gonum.org/v1/plot and written as SVG.

func systemColors(names []string) map[string]color.Color {
	pal, _ := brewer.GetPalette(brewer.TypeQualitative, "Set1", 9)
	var cols []color.Color
	for i, c := range pal.Colors() {
		if i != 5 { // Set1's yellow: unreadable on white
			cols = append(cols, c)
		}
	}
	m := map[string]color.Color{}
	for i, n := range names {
		m[n] = cols[i%len(cols)]
	}
	return m
}

// plotThroughput draws durable publish msgs/s by message size, one line per
// system, for the given publisher count. It returns the file name.
func plotThroughput(rr *RunResult, dir string, pubs int) (string, error) {
	var ss []throughputSeries
	for _, sys := range measuredSystems(rr) {
		t := throughputSeries{label: sys}
		for _, size := range rr.Settings.Sizes {
			t.points = append(t.points, sizePoint{size, rr.find(fmt.Sprintf("publish size=%d pubs=%d", size, pubs), sys)})
		}
		ss = append(ss, t)
	}
	name := fmt.Sprintf("throughput-pubs%d.svg", pubs)
	return plotThroughputSeries(dir, name, fmt.Sprintf("Durable publish throughput, %d publisher(s)\npersisted acks, window %d", pubs, rr.Settings.Window), rr.Settings.Sizes, ss)
}

// throughputSeries is one line of a throughput plot: a result per size.
type throughputSeries struct {
	label  string
	points []sizePoint
}

type sizePoint struct {
	size int
	r    *Result
}

// plotThroughputSeries draws msgs/s by message size, one line per series
// (results missing or failed are left out); "" when nothing to draw.
func plotThroughputSeries(dir, file, title string, sizes []int, ss []throughputSeries) (string, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "message size (bytes)"
	p.Y.Label.Text = "msgs/s (log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(sizes)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	labels := make([]string, len(ss))
	for i, t := range ss {
		labels[i] = t.label
	}
	cols := systemColors(labels)
	var legend []legendEntry
	for i, t := range ss {
		var pts plotter.XYs
		for _, sp := range t.points {
			if sp.r == nil || sp.r.Error != "" || sp.r.MsgsPerSec <= 0 {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(sp.size), Y: sp.r.MsgsPerSec})
		}
		if len(pts) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return "", err
		}
		l.Color, s.Color = cols[t.label], cols[t.label]
		s.Shape = draw.GlyphDrawer(shapes[i%len(shapes)])
		l.Width = vg.Points(1.5)
		p.Add(l, s)
		legend = append(legend, legendEntry{t.label, []plot.Thumbnailer{l, s}})
	}
	if len(legend) == 0 {
		return "", nil
	}
	return file, savePlot(p, legend, filepath.Join(dir, file))
}

var shapes = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PlusGlyph{}, draw.CrossGlyph{}, draw.RingGlyph{}, draw.PyramidGlyph{}, draw.BoxGlyph{}}

// plotLatency draws the latency percentile curves of every system for one
// measurement key (a fixed-rate scenario), HdrHistogram style: the x axis
// is the number of nines of the percentile.
func plotLatency(rr *RunResult, dir, key, title, file string) (string, error) {
	var ss []latencySeries
	for _, sys := range measuredSystems(rr) {
		ss = append(ss, latencySeries{label: sys, r: rr.find(key, sys)})
	}
	return plotLatencySeries(dir, file, title, ss)
}

// latencySeries is one curve of a latency plot.
type latencySeries struct {
	label string
	r     *Result
}

// plotLatencySeries draws one percentile curve per series with a result
// (missing or failed ones are left out); "" when nothing to draw.
func plotLatencySeries(dir, file, title string, ss []latencySeries) (string, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (µs, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Tick.Marker = nineTicks{}
	p.Add(plotter.NewGrid())
	labels := make([]string, len(ss))
	for i, s := range ss {
		labels[i] = s.label
	}
	cols := systemColors(labels)
	var legend []legendEntry
	for i, sr := range ss {
		r := sr.r
		if r == nil || r.Latency == nil || r.Error != "" {
			continue
		}
		var pts plotter.XYs
		for _, c := range r.Latency.Curve {
			if c.Percentile >= 100 {
				continue
			}
			y := c.Micros
			if y < 1 {
				y = 1
			}
			pts = append(pts, plotter.XY{X: nines(c.Percentile), Y: y})
		}
		if len(pts) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return "", err
		}
		l.Color, s.Color = cols[sr.label], cols[sr.label]
		s.Shape = draw.GlyphDrawer(shapes[i%len(shapes)])
		l.Width = vg.Points(1.5)
		if r.Saturated {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, s)
		label := sr.label
		if r.Saturated {
			label += " (saturated)"
		}
		legend = append(legend, legendEntry{label, []plot.Thumbnailer{l, s}})
	}
	if len(legend) == 0 {
		return "", nil
	}
	return file, savePlot(p, legend, filepath.Join(dir, file))
}

// legendEntry is one line of a plot's legend.
type legendEntry struct {
	label  string
	thumbs []plot.Thumbnailer
}

// Plot size: the plot itself; the legend gets a column of its own to the
// right, as wide as its longest label, so it never covers a curve.
const (
	plotWidth  = 7 * vg.Inch
	plotHeight = 4.5 * vg.Inch
)

// savePlot writes p to path (SVG for .svg, PNG for .png) with the legend beside it (not inside
// the data area, where it hid curves) and the title on as many lines as
// it has (a long one-line title was cut at the image's edges).
func savePlot(p *plot.Plot, entries []legendEntry, path string) error {
	p.Title.Padding = vg.Points(6)
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, true
	var textW vg.Length
	for _, e := range entries {
		leg.Add(e.label, e.thumbs...)
		textW = max(textW, leg.TextStyle.Width(e.label))
	}
	pad := vg.Points(8)
	legW := pad + leg.ThumbnailWidth + leg.TextStyle.Width(" ") + textW + pad
	c, err := draw.NewFormattedCanvas(plotWidth+legW, plotHeight, strings.TrimPrefix(filepath.Ext(path), "."))
	if err != nil {
		return err
	}
	dc := draw.New(c)
	pc := draw.Crop(dc, 0, -legW, 0, 0)
	p.Draw(pc)
	// The legend's column, its top level with the top of the data area.
	top := dc.Max.Y - p.DataCanvas(pc).Max.Y
	leg.XOffs = pad
	leg.Draw(draw.Crop(dc, plotWidth, 0, 0, -top))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// nines maps a percentile to -log10(1 - q/100): 90 -> 1, 99 -> 2, ...
func nines(q float64) float64 { return -math.Log10(1 - q/100) }

type nineTicks struct{}

func (nineTicks) Ticks(min, max float64) []plot.Tick {
	var t []plot.Tick
	for _, q := range []float64{0, 50, 90, 99, 99.9, 99.99, 99.999} {
		x := nines(q)
		if x >= min-1e-9 && x <= max+1e-9 {
			t = append(t, plot.Tick{Value: x, Label: strconv.FormatFloat(q, 'f', -1, 64)})
		}
	}
	return t
}

type sizeTicksT []int

func sizeTicks(s []int) plot.Ticker { return sizeTicksT(s) }

func (s sizeTicksT) Ticks(min, max float64) []plot.Tick {
	var t []plot.Tick
	for _, v := range s {
		label := strconv.Itoa(v) + " B"
		if v >= 1024 && v%1024 == 0 {
			label = strconv.Itoa(v/1024) + " KiB"
		}
		t = append(t, plot.Tick{Value: float64(v), Label: label})
	}
	return t
}

// measuredSystems lists the systems that ran, in run order.
func measuredSystems(rr *RunResult) []string {
	var out []string
	for _, s := range rr.Systems {
		if s.Skipped == "" {
			out = append(out, s.Name)
		}
	}
	return out
}

// rateTitle is a rate label for a plot title: "10k", or "knee(80%) =
// 95.2k" with the knee's rate (the first result of scen that has it).
func rateTitle(rr *RunResult, scen, label string) string {
	if v, err := strconv.Atoi(label); err == nil {
		return fmtRate(float64(v))
	}
	for _, r := range rr.Results {
		if r.Scenario == scen && r.RateLabel == label && r.System == "tandem" && r.Rate > 0 {
			return label + " = " + fmtRate(r.Rate)
		}
	}
	return label
}
