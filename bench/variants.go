package bench

import (
	"fmt"

	"github.com/tandemhq/tandem/uring"
)

// The Tandem-only scenarios: the same measurements (measurePublish,
// measureFanout) against other configurations of Tandem, each step on
// fresh servers, so the variants of a scenario are side by side in one
// run. Peers have no counterpart here and skip them.

// pairModes are the pair scenario's variants, in report order: the single
// instance is the baseline.
var pairModes = []string{"single", "sync", "async"}

// engines are the engine scenario's backends (tandem serve --engine).
var engines = []string{"uring", "epoll"}

// variant returns a Tandem adapter like t with another pair mode ("" or
// "single": one instance) and engine ("": the server's default).
func (t *Tandem) variant(pair, eng string) *Tandem {
	if pair == "single" {
		pair = ""
	}
	return &Tandem{Cmd: t.Cmd, Commit: t.Commit, Engine: eng, Pair: pair}
}

// on returns a runner like r for another system (a variant of r.sys).
func (r *runner) on(sys System) *runner {
	rv := *r
	rv.sys = sys
	return &rv
}

func (r *runner) runPair() error {
	t, ok := r.sys.(*Tandem)
	if !ok {
		return nil
	}
	measure := func(res *Result, mode string, f func(rv *runner, res *Result) error) {
		v := t.variant(mode, t.Engine)
		rv := r.on(v)
		rv.step(*res, func(res *Result) error {
			if v.Pair == "" {
				return f(rv, res)
			}
			w, err := v.watchRepl(r.ctx)
			if err != nil {
				return err
			}
			err = f(rv, res)
			w.finish(r.ctx, res)
			return err
		})
	}
	for _, size := range r.set.PairSizes {
		for _, mode := range pairModes {
			res := r.result(ScenPair, fmt.Sprintf("pair publish size=%d pubs=1 mode=%s", size, mode))
			res.Size, res.Publishers, res.Mode = size, 1, mode
			measure(&res, mode, func(rv *runner, res *Result) error { return rv.measurePublish(res, size, 1, 0) })
		}
	}
	for _, rate := range r.set.PairRates {
		for _, mode := range pairModes {
			res := r.result(ScenPair, fmt.Sprintf("pair ack-latency size=%d rate=%d mode=%s", r.set.LatencySize, rate, mode))
			res.Size, res.Publishers, res.Mode, res.RateLabel = r.set.LatencySize, 1, mode, fmt.Sprint(rate)
			measure(&res, mode, func(rv *runner, res *Result) error {
				return rv.measurePublish(res, r.set.LatencySize, 1, float64(rate))
			})
		}
	}
	return nil
}

// runEngine runs each measurement of the engine scenario with both
// backends, EngineRuns times, alternating which goes first (io_uring in
// odd runs, epoll in even ones) so a drift of the machine does not favour
// one; every run on fresh servers, with the server processes' CPU and
// context switches sampled around it (resources.go). Each backend's runs
// make one result (aggregateRuns: the medians), io_uring's then epoll's.
func (r *runner) runEngine() error {
	t, ok := r.sys.(*Tandem)
	if !ok {
		return nil
	}
	uringErr := uring.Available()
	runs := max(1, r.set.EngineRuns)
	// each runs one measurement (f on a server of pair mode pair, "" for
	// one instance) per backend and run; messages is what its figures
	// per million divide by.
	each := func(base Result, pair string, f func(rv *runner, res *Result) error, messages func(*Result) int64) {
		got := map[string][]Result{}
		for run := 1; run <= runs; run++ {
			order := engines
			if run%2 == 0 {
				order = []string{engines[1], engines[0]}
			}
			for _, eng := range order {
				if eng == "uring" && uringErr != nil {
					continue
				}
				res := base
				res.Key = fmt.Sprintf("%s engine=%s", base.Key, eng)
				if runs > 1 {
					res.Key += fmt.Sprintf(" run=%d/%d", run, runs) // progress display only
				}
				res.Engine = eng
				v := t.variant(pair, eng)
				rv := r.on(v)
				rv.add = func(res Result) { got[eng] = append(got[eng], res) }
				rv.step(res, func(res *Result) error {
					return measureUsage(v, res, func() error { return f(rv, res) }, messages)
				})
			}
		}
		for _, eng := range engines {
			key := fmt.Sprintf("%s engine=%s", base.Key, eng)
			if eng == "uring" && uringErr != nil {
				res := base
				res.Key, res.Engine, res.Skipped = key, eng, uringErr.Error()
				r.prog.begin(r.sys.Name(), res.Key)
				r.prog.end(&res)
				r.add(res)
				continue
			}
			rs := got[eng]
			for i := range rs {
				rs[i].Key = key
			}
			agg := aggregateRuns(rs)
			if runs > 1 {
				r.prog.say("%s %s: median of %d runs: %s", r.sys.Name(), key, runs, agg.Summary())
			}
			r.add(agg)
		}
	}
	acked := func(res *Result) int64 { return res.Acked }
	for _, size := range r.set.EngineSizes {
		for _, pubs := range r.set.EnginePublishers {
			res := r.result(ScenEngine, fmt.Sprintf("engine publish size=%d pubs=%d", size, pubs))
			res.Size, res.Publishers = size, pubs
			each(res, "", func(rv *runner, res *Result) error { return rv.measurePublish(res, size, pubs, 0) }, acked)
		}
	}
	for _, n := range r.set.EngineFanout {
		res := r.result(ScenEngine, fmt.Sprintf("engine fanout size=%d subs=%d", r.set.FanoutSize, n))
		res.Size, res.Publishers, res.Subscribers = r.set.FanoutSize, 1, n
		each(res, "", func(rv *runner, res *Result) error { return rv.measureFanout(res, n, true) },
			func(res *Result) int64 { return res.Received })
	}
	for _, size := range r.set.EnginePairSizes {
		res := r.result(ScenEngine, fmt.Sprintf("engine sync-pair publish size=%d pubs=1", size))
		res.Size, res.Publishers, res.Mode = size, 1, "sync"
		each(res, "sync", func(rv *runner, res *Result) error {
			w, err := rv.sys.(*Tandem).watchRepl(r.ctx)
			if err != nil {
				return err
			}
			err = rv.measurePublish(res, size, 1, 0)
			w.finish(r.ctx, res)
			return err
		}, acked)
	}
	return nil
}
