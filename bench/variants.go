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

func (r *runner) runEngine() error {
	t, ok := r.sys.(*Tandem)
	if !ok {
		return nil
	}
	uringErr := uring.Available()
	// each runs one step per backend, the two back to back.
	each := func(base Result, f func(rv *runner, res *Result) error) {
		for _, eng := range engines {
			res := base
			res.Key = fmt.Sprintf("%s engine=%s", base.Key, eng)
			res.Engine = eng
			if eng == "uring" && uringErr != nil {
				res.Skipped = uringErr.Error()
				r.prog.begin(r.sys.Name(), res.Key)
				r.prog.end(&res)
				r.add(res)
				continue
			}
			rv := r.on(t.variant("", eng))
			rv.step(res, func(res *Result) error { return f(rv, res) })
		}
	}
	for _, size := range r.set.EngineSizes {
		for _, pubs := range r.set.EnginePublishers {
			res := r.result(ScenEngine, fmt.Sprintf("engine publish size=%d pubs=%d", size, pubs))
			res.Size, res.Publishers = size, pubs
			each(res, func(rv *runner, res *Result) error { return rv.measurePublish(res, size, pubs, 0) })
		}
	}
	for _, n := range r.set.EngineFanout {
		res := r.result(ScenEngine, fmt.Sprintf("engine fanout size=%d subs=%d", r.set.FanoutSize, n))
		res.Size, res.Publishers, res.Subscribers = r.set.FanoutSize, 1, n
		each(res, func(rv *runner, res *Result) error { return rv.measureFanout(res, n) })
	}
	return nil
}
