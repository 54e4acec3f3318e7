package bench

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// figure is one comparable number of a result.
type figure struct {
	name           string
	higherIsBetter bool
	get            func(r *Result) (float64, bool)
}

var figures = []figure{
	{"msgs/s", true, func(r *Result) (float64, bool) { return r.MsgsPerSec, r.MsgsPerSec > 0 }},
	{"p50 µs", false, latFig(func(l *Latency) float64 { return l.P50 })},
	{"p99 µs", false, latFig(func(l *Latency) float64 { return l.P99 })},
	{"p99.9 µs", false, latFig(func(l *Latency) float64 { return l.P999 })},
	{"max µs", false, latFig(func(l *Latency) float64 { return l.Max })},
	{"server CPU s/M", false, resFig(func(u *Resources) float64 { return u.ServerCPUPerM })},
	{"server ctxsw/M", false, resFig(func(u *Resources) float64 { return u.ServerCtxPerM })},
}

func resFig(f func(*Resources) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Resources == nil || r.Resources.Messages <= 0 {
			return 0, false
		}
		return f(r.Resources), true
	}
}

func latFig(f func(*Latency) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Latency == nil {
			return 0, false
		}
		return f(r.Latency), true
	}
}

// Compare prints, for every (system, measurement) present in both runs,
// the change of each figure from old to new, marking changes beyond
// threshold (e.g. 0.1 = 10%) in the bad direction as REGRESSION. It
// returns the number of regressions.
func Compare(w io.Writer, old, new *RunResult, threshold float64) int {
	fmt.Fprintf(w, "old: %s  %s  (%s)\n", old.Tandem.Short(), old.Started.Format("2006-01-02 15:04"), old.Machine.CPU)
	fmt.Fprintf(w, "new: %s  %s  (%s)\n", new.Tandem.Short(), new.Started.Format("2006-01-02 15:04"), new.Machine.CPU)
	if old.Machine.CPU != new.Machine.CPU || old.Machine.Cores != new.Machine.Cores {
		fmt.Fprintln(w, "warning: the runs are from different machines")
	}
	if old.Settings.Quick != new.Settings.Quick || old.Settings.Duration != new.Settings.Duration {
		fmt.Fprintln(w, "warning: the runs used different settings (quick or duration)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "system\tmeasurement\tfigure\told\tnew\tchange\t")
	regressions := 0
	for i := range new.Results {
		nr := &new.Results[i]
		or := old.find(nr.Key, nr.System)
		if or == nil || nr.Error != "" || or.Error != "" {
			continue
		}
		for _, f := range figures {
			ov, ok1 := f.get(or)
			nv, ok2 := f.get(nr)
			if !ok1 || !ok2 || ov == 0 {
				continue
			}
			ch := (nv - ov) / ov
			mark := ""
			worse := ch < 0
			if !f.higherIsBetter {
				worse = ch > 0
			}
			if worse && math.Abs(ch) > threshold {
				mark = "REGRESSION"
				regressions++
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%+.1f%%\t%s\n", nr.System, nr.Key, f.name, fmtFig(ov), fmtFig(nv), ch*100, mark)
		}
	}
	tw.Flush()
	for i := range old.Results {
		or := &old.Results[i]
		if new.find(or.Key, or.System) == nil {
			fmt.Fprintf(w, "only in old: %s %s\n", or.System, or.Key)
		}
	}
	for i := range new.Results {
		nr := &new.Results[i]
		if old.find(nr.Key, nr.System) == nil {
			fmt.Fprintf(w, "only in new: %s %s\n", nr.System, nr.Key)
		}
	}
	fmt.Fprintf(w, "\n%d regressions beyond %.0f%%\n", regressions, threshold*100)
	return regressions
}

func fmtFig(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}
