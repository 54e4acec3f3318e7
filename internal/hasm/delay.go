package hasm

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// ErrRetryTimeout: the delay strategy's total retry time is spent.
var ErrRetryTimeout = errors.New("client: reconnect time limit reached")

// Rand is the machine's source of randomness (delay jitter, generated
// subscription ids). A simulator passes a seeded one (math/rand/v2's PCG
// satisfies it).
type Rand interface{ Uint64() uint64 }

// Delay says how long to wait before each connection attempt, in
// nanoseconds of logical time: NextDelay is asked before every attempt
// (the first one included) with the current time, and an error ends
// reconnection. Reset is called once a connection has proved stable (see
// Config.StableAfter).
type Delay interface {
	NextDelay(uri string, now int64) (int64, error)
	Reset()
}

// FixedDelay is the client's FixedDelayStrategy: Delay between attempts,
// none before the first attempt at each server since the last Reset, and
// ErrRetryTimeout once MaxTotal (0: never) would be passed since the first
// attempt.
type FixedDelay struct {
	Delay    int64
	MaxTotal int64

	start int64
	n     int
	tried []string
}

// NextDelay implements Delay.
func (f *FixedDelay) NextDelay(uri string, now int64) (int64, error) {
	f.n++
	if f.n == 1 {
		f.start = now
		f.tried = f.tried[:0]
	}
	if !contains(f.tried, uri) {
		f.tried = append(f.tried, uri)
		return 0, nil
	}
	if f.MaxTotal > 0 && now-f.start+f.Delay > f.MaxTotal {
		return 0, fmt.Errorf("%w (%v)", ErrRetryTimeout, time.Duration(f.MaxTotal))
	}
	return f.Delay, nil
}

// Reset implements Delay.
func (f *FixedDelay) Reset() { f.n = 0 }

// ExponentialDelay is the client's ExponentialDelayStrategy: no wait before
// the first attempt at each server since the last Reset, then Initial,
// Initial*Mult, ... capped at Max; each delay shortened by a random
// fraction below JitterPPM/1e6 of it; ErrRetryTimeout once MaxTotal (0:
// never) has passed since the first attempt (a delay never reaches past
// it). The multiplier is the fraction MultNum/MultDen (no floats). Zero
// fields take the defaults: Initial 10ms, Mult 2/1, Max 1s. Rand is needed
// only with jitter.
type ExponentialDelay struct {
	Initial          int64
	MultNum, MultDen uint64
	Max              int64
	MaxTotal         int64
	JitterPPM        uint64 // 0..1e6
	Rand             Rand

	start int64
	n     int
	cur   int64
	tried []string
}

// NextDelay implements Delay.
func (e *ExponentialDelay) NextDelay(uri string, now int64) (int64, error) {
	e.n++
	if e.n == 1 {
		e.start = now
		e.cur = 0
		e.tried = e.tried[:0]
	}
	if !contains(e.tried, uri) {
		e.tried = append(e.tried, uri)
		return 0, nil
	}
	initial, maxd := e.Initial, e.Max
	num, den := e.MultNum, e.MultDen
	if initial <= 0 {
		initial = int64(10 * time.Millisecond)
	}
	if den == 0 || num < den {
		num, den = 2, 1
	}
	if maxd <= 0 {
		maxd = int64(time.Second)
	}
	if e.cur == 0 {
		e.cur = initial
	} else {
		e.cur = min(mulDiv(e.cur, num, den), maxd)
	}
	d := e.cur
	if j := min(e.JitterPPM, 1e6); j > 0 && e.Rand != nil {
		span := mulDiv(d, j, 1e6) // the largest cut
		cut, _ := bits.Mul64(e.Rand.Uint64(), uint64(span))
		d -= int64(cut)
	}
	if e.MaxTotal > 0 {
		left := e.MaxTotal - (now - e.start)
		if left <= 0 {
			return 0, fmt.Errorf("%w (%v)", ErrRetryTimeout, time.Duration(e.MaxTotal))
		}
		d = min(d, left)
	}
	return d, nil
}

// Reset implements Delay.
func (e *ExponentialDelay) Reset() {
	e.n = 0
	e.cur = 0
}

// mulDiv is x*num/den for x >= 0, saturating at the largest int64.
func mulDiv(x int64, num, den uint64) int64 {
	hi, lo := bits.Mul64(uint64(x), num)
	if hi >= den {
		return 1<<63 - 1
	}
	q, _ := bits.Div64(hi, lo, den)
	if q > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(q)
}
