package bench

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette/brewer"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Plots are drawn with gonum.org/v1/plot and written as SVG.

func systemColors(names []string) map[string]color.Color {
	pal, _ := brewer.GetPalette(brewer.TypeQualitative, "Set1", 9)
	cols := pal.Colors()
	m := map[string]color.Color{}
	for i, n := range names {
		m[n] = cols[i%len(cols)]
	}
	return m
}

// plotThroughput draws durable publish msgs/s by message size, one line per
// system, for the given publisher count. It returns the file name.
func plotThroughput(rr *RunResult, dir string, pubs int) (string, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Durable publish throughput, %d publisher(s), persisted acks", pubs)
	p.X.Label.Text = "message size (bytes)"
	p.Y.Label.Text = "msgs/s (log scale)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(rr.Settings.Sizes)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	names := measuredSystems(rr)
	cols := systemColors(names)
	n := 0
	for i, sys := range names {
		var pts plotter.XYs
		for _, size := range rr.Settings.Sizes {
			r := rr.find(fmt.Sprintf("publish size=%d pubs=%d", size, pubs), sys)
			if r == nil || r.Error != "" || r.MsgsPerSec <= 0 {
				continue
			}
			pts = append(pts, plotter.XY{X: float64(size), Y: r.MsgsPerSec})
		}
		if len(pts) == 0 {
			continue
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return "", err
		}
		l.Color, s.Color = cols[sys], cols[sys]
		s.Shape = draw.GlyphDrawer(shapes[i%len(shapes)])
		l.Width = vg.Points(1.5)
		p.Add(l, s)
		p.Legend.Add(sys, l, s)
		n++
	}
	if n == 0 {
		return "", nil
	}
	name := fmt.Sprintf("throughput-pubs%d.svg", pubs)
	return name, p.Save(7*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name))
}

var shapes = []draw.GlyphDrawer{draw.CircleGlyph{}, draw.SquareGlyph{}, draw.TriangleGlyph{}, draw.PlusGlyph{}, draw.CrossGlyph{}, draw.RingGlyph{}, draw.PyramidGlyph{}, draw.BoxGlyph{}}

// plotLatency draws the latency percentile curves of every system for one
// measurement key (a fixed-rate scenario), HdrHistogram style: the x axis
// is the number of nines of the percentile.
func plotLatency(rr *RunResult, dir, key, title, file string) (string, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (µs, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Tick.Marker = nineTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	names := measuredSystems(rr)
	cols := systemColors(names)
	n := 0
	for i, sys := range names {
		r := rr.find(key, sys)
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
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return "", err
		}
		l.Color, s.Color = cols[sys], cols[sys]
		s.Shape = draw.GlyphDrawer(shapes[i%len(shapes)])
		l.Width = vg.Points(1.5)
		if r.Saturated {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, s)
		label := sys
		if r.Saturated {
			label += " (saturated)"
		}
		p.Legend.Add(label, l, s)
		n++
	}
	if n == 0 {
		return "", nil
	}
	return file, p.Save(7*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, file))
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
