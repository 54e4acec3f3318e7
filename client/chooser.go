package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Authenticator supplies the credentials for one logon. The HA client asks
// for them on every connection attempt, so a token can be refreshed per
// attempt and per server.
type Authenticator interface {
	Credentials(ctx context.Context, uri, name string) ([]byte, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context, uri, name string) ([]byte, error)

// Credentials implements Authenticator.
func (f AuthenticatorFunc) Credentials(ctx context.Context, uri, name string) ([]byte, error) {
	return f(ctx, uri, name)
}

// StaticCredentials is an Authenticator that always sends the same bytes.
type StaticCredentials []byte

// Credentials implements Authenticator.
func (s StaticCredentials) Credentials(context.Context, string, string) ([]byte, error) {
	return s, nil
}

// ServerChooser tells the HA client where to connect. The client calls
// CurrentURI and CurrentAuthenticator before every attempt, then
// ReportSuccess or ReportFailure with the outcome. When CurrentURI returns
// "", reconnection stops and the client's error includes Error(). A
// ServerChooser must not call the client; its methods are called from the
// client's connection manager goroutine, one at a time.
type ServerChooser interface {
	CurrentURI() string
	CurrentAuthenticator() Authenticator
	ReportSuccess(uri string)
	ReportFailure(uri string, err error)
	Error() string
}

// DefaultServerChooser rotates through a list of equivalent servers
// (host:port): it stays on a server while it works and moves to the next
// one after a failure. It gives up (CurrentURI returns "") when the list is
// empty, when every server refused the logon itself (credentials, protocol
// version: retrying cannot help), or when MaxFailures consecutive attempts
// failed across the list (0, the default: never; bound the time with the
// DelayStrategy instead).
type DefaultServerChooser struct {
	mu          sync.Mutex
	uris        []string
	auth        Authenticator
	cur         int
	failures    int               // consecutive, over the whole list
	refused     map[string]error  // servers whose last failure was a logon refusal
	last        map[string]string // last failure per server, for Error
	MaxFailures int
}

// NewDefaultServerChooser returns a chooser over uris, in order.
func NewDefaultServerChooser(uris ...string) *DefaultServerChooser {
	d := &DefaultServerChooser{refused: map[string]error{}, last: map[string]string{}}
	for _, u := range uris {
		if u = strings.TrimSpace(u); u != "" {
			d.uris = append(d.uris, u)
		}
	}
	return d
}

// Add appends a server.
func (d *DefaultServerChooser) Add(uri string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.uris = append(d.uris, uri)
}

// SetAuthenticator sets the Authenticator used for every server (default:
// no credentials).
func (d *DefaultServerChooser) SetAuthenticator(a Authenticator) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.auth = a
}

// CurrentURI implements ServerChooser.
func (d *DefaultServerChooser) CurrentURI() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.uris) == 0 {
		return ""
	}
	if len(d.refused) == len(d.uris) {
		return ""
	}
	if d.MaxFailures > 0 && d.failures >= d.MaxFailures {
		return ""
	}
	return d.uris[d.cur%len(d.uris)]
}

// CurrentAuthenticator implements ServerChooser.
func (d *DefaultServerChooser) CurrentAuthenticator() Authenticator {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.auth
}

// ReportSuccess implements ServerChooser.
func (d *DefaultServerChooser) ReportSuccess(uri string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures = 0
	clear(d.refused)
	clear(d.last)
}

// ReportFailure implements ServerChooser: the next attempt goes to the next
// server in the list.
func (d *DefaultServerChooser) ReportFailure(uri string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failures++
	if err != nil {
		d.last[uri] = err.Error()
	}
	if errors.Is(err, ErrAuth) || errors.Is(err, ErrVersion) {
		d.refused[uri] = err
	} else {
		delete(d.refused, uri)
	}
	if len(d.uris) > 0 && d.uris[d.cur%len(d.uris)] == uri {
		d.cur = (d.cur + 1) % len(d.uris)
	}
}

// ReportStandby implements StandbyReporter: the next attempt goes to the
// next server, and the standby's answer counts neither as a failure (for
// MaxFailures) nor as a logon refusal.
func (d *DefaultServerChooser) ReportStandby(uri string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.last[uri] = err.Error()
	}
	delete(d.refused, uri)
	if len(d.uris) > 0 && d.uris[d.cur%len(d.uris)] == uri {
		d.cur = (d.cur + 1) % len(d.uris)
	}
}

// Error implements ServerChooser: why CurrentURI returned "".
func (d *DefaultServerChooser) Error() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.uris) == 0 {
		return "the server list is empty"
	}
	var parts []string
	for _, u := range d.uris {
		if e, ok := d.last[u]; ok {
			parts = append(parts, u+": "+e)
		}
	}
	detail := strings.Join(parts, "; ")
	switch {
	case len(d.refused) == len(d.uris):
		return "every server refused the logon: " + detail
	case d.MaxFailures > 0 && d.failures >= d.MaxFailures:
		return fmt.Sprintf("%d consecutive connection failures: %s", d.failures, detail)
	}
	return detail
}

// StandbyReporter is implemented by a ServerChooser that tells a server
// answering "standby" (a passive instance: wire.CodeStandby, ErrStandby),
// at logon or by an Error frame, from a failed one. The HA client calls
// ReportStandby instead of ReportFailure for it, then tries the chooser's
// next server at once without asking the DelayStrategy; only when the
// round comes back to a server that already answered standby does it ask
// the DelayStrategy again, so a set of standbys alone is retried at its
// pace and ends with its MaxTotal. A chooser without it gets ReportFailure.
type StandbyReporter interface {
	ReportStandby(uri string, err error)
}

// DelayStrategy says how long to wait before each connection attempt.
// NextDelay is called before every attempt (the first one included) and
// returns an error, ending reconnection, when the strategy gives up. Reset
// is called after a successful logon.
type DelayStrategy interface {
	NextDelay(uri string) (time.Duration, error)
	Reset()
}

// ErrRetryTimeout: the DelayStrategy's total retry time is spent.
var ErrRetryTimeout = errors.New("client: reconnect time limit reached")

// FixedDelayStrategy waits Delay between attempts (none before the first
// attempt at each server after a success) and gives up once MaxTotal (0: never) has passed
// since the first failed attempt.
type FixedDelayStrategy struct {
	Delay    time.Duration
	MaxTotal time.Duration

	mu    sync.Mutex
	start time.Time
	n     int
	tried map[string]bool
}

// NextDelay implements DelayStrategy: no wait before the first attempt at
// each server since the last success.
func (f *FixedDelayStrategy) NextDelay(uri string) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.n == 1 {
		f.start = time.Now()
		f.tried = map[string]bool{}
	}
	if !f.tried[uri] {
		f.tried[uri] = true
		return 0, nil
	}
	if f.MaxTotal > 0 && time.Since(f.start)+f.Delay > f.MaxTotal {
		return 0, fmt.Errorf("%w (%v)", ErrRetryTimeout, f.MaxTotal)
	}
	return f.Delay, nil
}

// Reset implements DelayStrategy.
func (f *FixedDelayStrategy) Reset() {
	f.mu.Lock()
	f.n = 0
	f.mu.Unlock()
}

// ExponentialDelayStrategy waits Initial, then Initial*Multiplier, ...
// capped at Max, between attempts (none before the first attempt at each
// server after a success); Jitter (0..1) shortens each delay by a random fraction up to
// it, so clients that lost the same server do not return in lockstep. It
// gives up once MaxTotal (0: never) has passed since the first attempt.
// Zero fields take the defaults: Initial 10ms, Multiplier 2, Max 1s.
type ExponentialDelayStrategy struct {
	Initial    time.Duration
	Multiplier float64
	Max        time.Duration
	MaxTotal   time.Duration
	Jitter     float64

	mu    sync.Mutex
	start time.Time
	n     int
	cur   time.Duration
	tried map[string]bool
}

// NextDelay implements DelayStrategy: no wait before the first attempt at
// each server since the last success (failing over to a live partner costs
// no delay), then the exponential sequence.
func (e *ExponentialDelayStrategy) NextDelay(uri string) (time.Duration, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if e.n == 1 {
		e.start = time.Now()
		e.cur = 0
		e.tried = map[string]bool{}
	}
	if !e.tried[uri] {
		e.tried[uri] = true
		return 0, nil
	}
	initial, mult, maxd := e.Initial, e.Multiplier, e.Max
	if initial <= 0 {
		initial = 10 * time.Millisecond
	}
	if mult < 1 {
		mult = 2
	}
	if maxd <= 0 {
		maxd = time.Second
	}
	if e.cur == 0 {
		e.cur = initial
	} else {
		e.cur = min(time.Duration(float64(e.cur)*mult), maxd)
	}
	d := e.cur
	if e.Jitter > 0 {
		d -= time.Duration(rand.Float64() * min(e.Jitter, 1) * float64(d))
	}
	if e.MaxTotal > 0 {
		left := e.MaxTotal - time.Since(e.start)
		if left <= 0 {
			return 0, fmt.Errorf("%w (%v)", ErrRetryTimeout, e.MaxTotal)
		}
		d = min(d, left)
	}
	return d, nil
}

// Reset implements DelayStrategy.
func (e *ExponentialDelayStrategy) Reset() {
	e.mu.Lock()
	e.n = 0
	e.cur = 0
	e.mu.Unlock()
}
