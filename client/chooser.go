package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tandemhq/tandem/internal/hasm"
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
// DelayStrategy instead). The rules are internal/hasm's DefaultChooser,
// behind a lock.
type DefaultServerChooser struct {
	mu          sync.Mutex
	d           hasm.DefaultChooser
	auth        Authenticator
	MaxFailures int
}

// NewDefaultServerChooser returns a chooser over uris, in order.
func NewDefaultServerChooser(uris ...string) *DefaultServerChooser {
	return &DefaultServerChooser{d: *hasm.NewDefaultChooser(uris...)}
}

// Add appends a server.
func (d *DefaultServerChooser) Add(uri string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.d.URIs = append(d.d.URIs, uri)
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
	d.d.MaxFailures = d.MaxFailures
	uri, _ := d.d.Current()
	return uri
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
	d.d.ReportSuccess(uri)
}

// ReportFailure implements ServerChooser: the next attempt goes to the next
// server in the list.
func (d *DefaultServerChooser) ReportFailure(uri string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.d.ReportFailure(uri, err, errors.Is(err, ErrAuth) || errors.Is(err, ErrVersion))
}

// ReportStandby implements StandbyReporter: the next attempt goes to the
// next server, and the standby's answer counts neither as a failure (for
// MaxFailures) nor as a logon refusal.
func (d *DefaultServerChooser) ReportStandby(uri string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.d.ReportStandby(uri, err)
}

// Error implements ServerChooser: why CurrentURI returned "".
func (d *DefaultServerChooser) Error() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.d.MaxFailures = d.MaxFailures
	return d.d.Error()
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
var ErrRetryTimeout = hasm.ErrRetryTimeout

// delayClock is the strategies' monotonic clock (their rules, in
// internal/hasm, take logical nanoseconds).
var delayClock = time.Now()

func delayNow() int64 { return int64(time.Since(delayClock)) }

// FixedDelayStrategy waits Delay between attempts (none before the first
// attempt at each server after a success) and gives up once MaxTotal (0: never) has passed
// since the first failed attempt. The rules are internal/hasm's FixedDelay.
type FixedDelayStrategy struct {
	Delay    time.Duration
	MaxTotal time.Duration

	mu sync.Mutex
	d  hasm.FixedDelay
}

// NextDelay implements DelayStrategy: no wait before the first attempt at
// each server since the last success.
func (f *FixedDelayStrategy) NextDelay(uri string) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.d.Delay, f.d.MaxTotal = int64(f.Delay), int64(f.MaxTotal)
	d, err := f.d.NextDelay(uri, delayNow())
	return time.Duration(d), err
}

// Reset implements DelayStrategy.
func (f *FixedDelayStrategy) Reset() {
	f.mu.Lock()
	f.d.Reset()
	f.mu.Unlock()
}

// ExponentialDelayStrategy waits Initial, then Initial*Multiplier, ...
// capped at Max, between attempts (none before the first attempt at each
// server after a success); Jitter (0..1) shortens each delay by a random fraction up to
// it, so clients that lost the same server do not return in lockstep. It
// gives up once MaxTotal (0: never) has passed since the first attempt.
// Zero fields take the defaults: Initial 10ms, Multiplier 2, Max 1s. The
// rules are internal/hasm's ExponentialDelay (the float fields are
// converted to millionths).
type ExponentialDelayStrategy struct {
	Initial    time.Duration
	Multiplier float64
	Max        time.Duration
	MaxTotal   time.Duration
	Jitter     float64

	mu sync.Mutex
	d  hasm.ExponentialDelay
}

// globalRand is math/rand/v2's global source as a hasm.Rand.
type globalRand struct{}

func (globalRand) Uint64() uint64 { return rand.Uint64() }

// NextDelay implements DelayStrategy: no wait before the first attempt at
// each server since the last success (failing over to a live partner costs
// no delay), then the exponential sequence.
func (e *ExponentialDelayStrategy) NextDelay(uri string) (time.Duration, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.d.Initial, e.d.Max, e.d.MaxTotal = int64(e.Initial), int64(e.Max), int64(e.MaxTotal)
	e.d.MultNum, e.d.MultDen = 2, 1
	if e.Multiplier >= 1 {
		e.d.MultNum, e.d.MultDen = uint64(e.Multiplier*1e6+0.5), 1e6
	}
	e.d.JitterPPM = 0
	if e.Jitter > 0 {
		e.d.JitterPPM = uint64(min(e.Jitter, 1)*1e6 + 0.5)
	}
	e.d.Rand = globalRand{}
	d, err := e.d.NextDelay(uri, delayNow())
	return time.Duration(d), err
}

// Reset implements DelayStrategy.
func (e *ExponentialDelayStrategy) Reset() {
	e.mu.Lock()
	e.d.Reset()
	e.mu.Unlock()
}
