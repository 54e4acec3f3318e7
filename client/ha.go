package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemhq/tandem/internal/hasm"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// ErrNoServer: reconnection stopped: the ServerChooser returned no server
// or the DelayStrategy gave up. The error says why (ServerChooser.Error and
// the last attempt's error).
var ErrNoServer = hasm.ErrNoServer

// MostRecent starts an HA subscription (WithSubID) right after what the
// BookmarkStore says it processed, or at Epoch if the store has never seen
// it. Reconnects always resume this way.
var MostRecent = Start{kind: startMostRecent}

// WithSubID names an HA subscription so that its progress is kept in the
// BookmarkStore under id: it resumes across reconnects and failover, and,
// with a file-backed store, across restarts of the process (use the same
// id). Only for HAClient.Subscribe.
func WithSubID(id string) SubOption { return func(c *subConfig) { c.subName = id } }

// State is a connection state reported to the HAConfig.OnState listener.
type State int

// Connection states: the machine's (internal/hasm), which the driver
// converts with State(e.State).
const (
	StateConnected    = State(hasm.StateConnected)    // logged on (first time, or again on the same server)
	StateDisconnected = State(hasm.StateDisconnected) // the connection ended (Err says why)
	StateReconnecting = State(hasm.StateReconnecting) // an attempt is about to be made (URI)
	StateFailedOver   = State(hasm.StateFailedOver)   // logged on to a different server than before
	StateStopped      = State(hasm.StateStopped)      // Close, or reconnection gave up (Err)
)

func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateReconnecting:
		return "reconnecting"
	case StateFailedOver:
		return "failed over"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Event is one connection state change.
type Event struct {
	State    State
	URI      string // the server concerned
	Instance string // its instance name (Connected, FailedOver)
	From     string // FailedOver: the previous server
	Err      error  // Disconnected, Stopped
	Time     time.Time
}

// HAConfig configures an HAClient. Zero fields take the defaults.
type HAConfig struct {
	// Name is the client name: the publisher identity the server
	// de-duplicates on. It must be stable across runs when a file-backed
	// PublishStore is used, and only one process may use it at a time.
	Name string
	// Servers builds a DefaultServerChooser when Chooser is nil.
	Servers []string
	Chooser ServerChooser
	// Delay defaults to ExponentialDelayStrategy{Initial: 10ms,
	// Multiplier: 2, Max: 1s, MaxTotal: 60s, Jitter: 0.2}.
	Delay DelayStrategy
	// PublishStore keeps messages until persisted; nil: none (a message
	// published on a connection that dies before it is persisted may be
	// lost, nothing is re-published, and Publish blocks while
	// disconnected). NewMemoryBackedHA fills in a MemoryPublishStore.
	PublishStore PublishStore
	// BookmarkStore keeps the progress of WithSubID subscriptions;
	// default a MemoryBookmarkStore.
	BookmarkStore BookmarkStore
	// Subscriptions defaults to a MemorySubscriptionManager.
	Subscriptions SubscriptionManager
	// Heartbeat is the interval asked of the server (default 5s; 0 is the
	// default, use a negative value to disable). Silence for IdleTimeout
	// (default two granted intervals) is a disconnect.
	Heartbeat   time.Duration
	IdleTimeout time.Duration
	// ConnectTimeout bounds one attempt's dial and logon (default 5s).
	ConnectTimeout time.Duration
	// StableAfter is how long a connection must stay up, unless a message
	// was persisted through it, before the DelayStrategy is Reset (default
	// 1s): a server that accepts the logon and then drops the connection
	// does not restart the DelayStrategy's MaxTotal budget each time.
	StableAfter time.Duration
	// OnState receives connection state changes, OnError errors (failed
	// attempts, connections' ends, resubscriptions refused, messages
	// refused for good when no WithFailedWriteHandler is given, store
	// failures, the final error).
	// Both run on one goroutine of their own, in order; they never block the
	// client's I/O (events queue up while they run).
	OnState func(Event)
	OnError func(error)
	// Options are applied to every connection (WithWindow, WithWriteBuffer,
	// WithDialer, WithMaxFrame, ...).
	Options []Option
}

// SubscriptionManager remembers the HA client's subscriptions so that they
// are re-entered after every reconnect.
type SubscriptionManager interface {
	Add(s *HASubscription)
	Remove(s *HASubscription)
	All() []*HASubscription
}

// MemorySubscriptionManager is the default SubscriptionManager.
type MemorySubscriptionManager struct {
	mu   sync.Mutex
	subs []*HASubscription
}

// Add implements SubscriptionManager.
func (m *MemorySubscriptionManager) Add(s *HASubscription) {
	m.mu.Lock()
	m.subs = append(m.subs, s)
	m.mu.Unlock()
}

// Remove implements SubscriptionManager.
func (m *MemorySubscriptionManager) Remove(s *HASubscription) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, x := range m.subs {
		if x == s {
			m.subs = append(m.subs[:i], m.subs[i+1:]...)
			return
		}
	}
}

// All implements SubscriptionManager.
func (m *MemorySubscriptionManager) All() []*HASubscription {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*HASubscription(nil), m.subs...)
}

// HAClient is a client that stays connected: it reconnects and fails over
// between equivalent servers, re-publishes what was not persisted (from its
// PublishStore) and re-enters its subscriptions (resuming WithSubID ones
// from the BookmarkStore). See docs/client.md. Its methods are safe for
// concurrent use.
//
// The decisions are internal/hasm's Machine; HAClient is its driver: it
// feeds the machine what happened (under mu, with the time since epoch as
// logical time) and carries out the actions it returns. Actions that wait
// (dial, timer, attach with its replay, subscribe, a subscription's end)
// are carried out after mu is released by the goroutine whose input
// produced them: the connection manager (Connect, then manage), a
// Subscribe caller, or Close.
type HAClient struct {
	cfg     HAConfig
	base    config
	chooser ServerChooser
	delay   DelayStrategy
	store   PublishStore
	bms     BookmarkStore
	subs    SubscriptionManager
	ca      *chooserAdapter
	epoch   time.Time // logical time 0

	mu      sync.Mutex
	m       *hasm.Machine
	att     *Client // the connection of the last ActDial that logged on
	attID   hasm.ConnID
	cur     *Client // nil while disconnected
	curID   hasm.ConnID
	curURI  string
	lastURI string        // the server of the previous connection
	up      chan struct{} // closed while connected; replaced on disconnect
	closed  bool
	state   State
	byID    map[hasm.SubID]*HASubscription

	pubMu sync.Mutex // publishes, and the replay of ActAttach, in sequence order
	// waitingFirst counts publishes waiting for the first logon (tests).
	waitingFirst atomic.Int32

	failedWrite func(pubSeq uint64, code wire.Code, reason string) // the application's

	ctx       context.Context
	cancel    context.CancelFunc
	started   bool
	mgrDone   chan struct{}
	stopped   chan struct{} // closed when the client stopped for good
	stopErr   error         // set before stopped is closed
	closeOnce sync.Once

	ev         *eventQueue
	reconnects atomic.Uint64
	failovers  atomic.Uint64
}

// chooserAdapter is a ServerChooser as a hasm.Chooser; it keeps the
// Authenticator of the last CurrentURI for the dial.
type chooserAdapter struct {
	c    ServerChooser
	auth Authenticator
}

func (a *chooserAdapter) Current() (string, bool) {
	uri := a.c.CurrentURI()
	if uri == "" {
		return "", false
	}
	a.auth = a.c.CurrentAuthenticator()
	return uri, a.auth != nil
}
func (a *chooserAdapter) ReportSuccess(uri string) { a.c.ReportSuccess(uri) }
func (a *chooserAdapter) ReportFailure(uri string, err error, _ bool) {
	a.c.ReportFailure(uri, err)
}

// ReportStandby: a StandbyReporter moves on without counting a failure;
// another chooser gets a failure report (its only way to move on).
func (a *chooserAdapter) ReportStandby(uri string, err error) {
	if sr, ok := a.c.(StandbyReporter); ok {
		sr.ReportStandby(uri, err)
		return
	}
	a.c.ReportFailure(uri, err)
}
func (a *chooserAdapter) Error() string { return a.c.Error() }

// delayAdapter is a DelayStrategy as a hasm.Delay (the strategy keeps its
// own clock).
type delayAdapter struct{ d DelayStrategy }

func (a delayAdapter) NextDelay(uri string, _ int64) (int64, error) {
	d, err := a.d.NextDelay(uri)
	return int64(d), err
}
func (a delayAdapter) Reset() { a.d.Reset() }

// NewHA returns an HAClient; Connect makes the first connection.
func NewHA(cfg HAConfig) (*HAClient, error) {
	h := &HAClient{cfg: cfg, base: defaultConfig(), up: make(chan struct{}), mgrDone: make(chan struct{}), stopped: make(chan struct{}),
		byID: map[hasm.SubID]*HASubscription{}, epoch: time.Now()}
	for _, o := range cfg.Options {
		o(&h.base)
	}
	if cfg.Name != "" {
		h.base.name = cfg.Name
	}
	switch {
	case cfg.Heartbeat > 0:
		h.base.heartbeat = cfg.Heartbeat
	case cfg.Heartbeat < 0:
		h.base.heartbeat = 0
	}
	if cfg.IdleTimeout > 0 {
		h.base.idleTimeout = cfg.IdleTimeout
	}
	h.base.dialTimeout = 5 * time.Second
	if cfg.ConnectTimeout > 0 {
		h.base.dialTimeout = cfg.ConnectTimeout
	}
	h.base.errorHandler = nil
	h.base.ackHandler = nil
	stableAfter := time.Second
	if cfg.StableAfter > 0 {
		stableAfter = cfg.StableAfter
	}
	h.failedWrite = h.base.failedWrite
	h.base.failedWrite = nil // per connection (dialOne)
	h.chooser = cfg.Chooser
	if h.chooser == nil {
		h.chooser = NewDefaultServerChooser(cfg.Servers...)
	}
	h.delay = cfg.Delay
	if h.delay == nil {
		h.delay = &ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, MaxTotal: 60 * time.Second, Jitter: 0.2}
	}
	h.store = cfg.PublishStore
	var nextSeq uint64
	if h.store != nil {
		if h.base.ack != wire.AckPersisted {
			return nil, errors.New("client: a PublishStore needs WithAck(wire.AckPersisted)")
		}
		nextSeq = h.store.LastSeq() + 1
		h.base.beforeWrite = h.store.Sync
	}
	h.bms = cfg.BookmarkStore
	if h.bms == nil {
		h.bms = NewMemoryBookmarkStore()
	}
	h.subs = cfg.Subscriptions
	if h.subs == nil {
		h.subs = &MemorySubscriptionManager{}
	}
	h.ca = &chooserAdapter{c: h.chooser}
	h.m = hasm.New(hasm.Config{
		Name: h.base.name, Chooser: h.ca, Delay: delayAdapter{h.delay}, Bookmarks: h.bms, Rand: globalRand{},
		StableAfter: int64(stableAfter), Store: h.store != nil, NextPubSeq: nextSeq, MaxFrame: h.base.maxFrame,
	})
	h.ev = newEventQueue(cfg.OnState, cfg.OnError)
	for _, err := range storeRecoveryErrors(cfg.PublishStore, cfg.BookmarkStore) {
		h.ev.error(err) // torn tails the file stores dropped on open
	}
	h.base.errorHandler = h.ev.error // store write errors reported by the writer
	h.ctx, h.cancel = context.WithCancel(context.Background())
	return h, nil
}

// NewMemoryBackedHA is NewHA with a MemoryPublishStore (default limits)
// and a MemoryBookmarkStore where cfg has none, as the AMPS clients'
// memory-backed constructors: publishing continues into the store while
// disconnected and everything unpersisted is re-published after a
// reconnect, but nothing survives the process.
func NewMemoryBackedHA(cfg HAConfig) (*HAClient, error) {
	if cfg.PublishStore == nil {
		cfg.PublishStore = NewMemoryPublishStore(StoreLimits{})
	}
	if cfg.BookmarkStore == nil {
		cfg.BookmarkStore = NewMemoryBookmarkStore()
	}
	return NewHA(cfg)
}

// now is the machine's logical time: nanoseconds since NewHA (monotonic).
func (h *HAClient) now() int64 { return int64(time.Since(h.epoch)) }

// stepLocked feeds in to the machine (h.mu held) and carries out the
// resulting actions; those that wait are appended to todo for the caller
// to carry out once it has released h.mu (drive).
func (h *HAClient) stepLocked(in hasm.Input, todo []hasm.Action) []hasm.Action {
	in.Now = h.now()
	h.m.Step(in) // an error only for a misuse: InStart is guarded by started
	return h.runLocked(todo)
}

// runLocked carries out the machine's ready actions that do not wait.
func (h *HAClient) runLocked(todo []hasm.Action) []hasm.Action {
	for h.m.HasReady() {
		rd := h.m.Ready()
		for i := range rd.Actions {
			a := &rd.Actions[i]
			switch a.Kind {
			case hasm.ActNextSeq:
				if c := h.att; c != nil && h.attID == a.Conn {
					c.conn.wmu.Lock()
					c.nextSeq = a.Seq
					c.conn.wmu.Unlock()
				}
			case hasm.ActUp:
				h.cur, h.curID, h.curURI, h.lastURI = h.att, a.Conn, a.URI, a.URI
				close(h.up)
			case hasm.ActDown:
				h.cur, h.curID = nil, 0
				h.up = make(chan struct{})
			case hasm.ActStoreDiscard:
				h.store.Discard(a.Seq) // a failed write is the store's own sticky error
			case hasm.ActStoreRemove:
				if err := h.store.Remove(a.Seq); err != nil {
					h.ev.error(fmt.Errorf("client: publish store: remove %d: %w", a.Seq, err))
				}
			case hasm.ActFailedWrite:
				h.reportFailed(a.Seq, a.Code, a.Reason)
			case hasm.ActEvent:
				h.event(a.Event)
			case hasm.ActError:
				h.ev.error(a.Err)
			case hasm.ActStopped:
				select {
				case <-h.stopped:
				default:
					h.stopErr = a.Err
					h.state = StateStopped
					close(h.stopped)
				}
			default: // dial, timer, attach, close, subscribe, sub-ended
				todo = append(todo, *a)
			}
		}
		h.m.Advance()
	}
	return todo
}

// event reports a machine event (h.mu held).
func (h *HAClient) event(e hasm.Event) {
	ev := Event{State: State(e.State), URI: e.URI, Instance: e.Instance, From: e.From, Err: e.Err}
	switch ev.State {
	case StateConnected, StateFailedOver:
		h.state = ev.State
		if ev.State == StateFailedOver {
			h.failovers.Add(1)
		}
	case StateDisconnected:
		h.state = ev.State
		h.reconnects.Add(1)
	}
	h.ev.state(ev)
}

// reportFailed tells the application, once, on the event goroutine, that a
// message was refused for good (by the server, or locally because it
// cannot fit the server's limits).
func (h *HAClient) reportFailed(seq uint64, code wire.Code, reason string) {
	if f := h.failedWrite; f != nil {
		h.ev.push(func() { f(seq, code, reason) })
		return
	}
	h.ev.push(func() {
		if h.ev.onError != nil {
			h.ev.onError(fmt.Errorf("client: pubSeq %d refused: %w", seq, &ServerError{Code: code, Text: reason}))
		}
	})
}

// Connect makes the first connection, following the reconnect sequence
// (see docs/client.md), and returns once logged on, or with an error
// matching ErrNoServer when the ServerChooser or DelayStrategy gives up, or
// ctx's error. After it succeeds the client keeps itself connected until
// Close.
func (h *HAClient) Connect(ctx context.Context) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	if h.started {
		h.mu.Unlock()
		return errors.New("client: HAClient.Connect called twice")
	}
	h.started = true
	todo := h.stepLocked(hasm.Input{Kind: hasm.InStart}, nil)
	h.mu.Unlock()
	cctx, cancel := context.WithCancel(h.ctx)
	stop := context.AfterFunc(ctx, cancel)
	err := h.drive(cctx, ctx, todo)
	stop()
	cancel()
	if err != nil {
		if errors.Is(err, ErrClosed) && ctx.Err() != nil {
			err = fmt.Errorf("client: connect: %w (%w)", context.Cause(ctx), err)
		}
		close(h.mgrDone)
		return err
	}
	go h.manage()
	return nil
}

// drive carries out the waiting actions in todo, in order, feeding their
// outcomes back to the machine, until none is left: the machine is then up
// (nil) or stopped (its error). When ctx ends (Close, or Connect's ctx,
// whose cause userCtx gives) before an attempt, the client is closed
// (ErrClosed, Close does the rest) or the machine is told to give up.
func (h *HAClient) drive(ctx, userCtx context.Context, todo []hasm.Action) error {
	for len(todo) > 0 {
		a := todo[0]
		todo = todo[1:]
		switch a.Kind {
		case hasm.ActTimer:
			if d := time.Duration(a.At - h.now()); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			if ctx.Err() != nil {
				return h.cancelled(ctx, userCtx, todo)
			}
			h.mu.Lock()
			h.m.Tick(h.now())
			todo = h.runLocked(todo)
			h.mu.Unlock()
		case hasm.ActDial:
			if ctx.Err() != nil {
				return h.cancelled(ctx, userCtx, todo)
			}
			c, err := h.dialOne(ctx, a)
			h.mu.Lock()
			if err != nil {
				last := ctx.Err() != nil
				todo = h.stepLocked(hasm.Input{Kind: hasm.InDialFailed, Conn: a.Conn, Err: err, Cause: dialCause(err), Last: last}, todo)
				if last {
					h.mu.Unlock()
					return h.cancelled(ctx, userCtx, todo)
				}
			} else {
				h.att, h.attID = c, a.Conn
				todo = h.stepLocked(hasm.Input{Kind: hasm.InDialed, Conn: a.Conn, Logon: hasm.Logon{
					LastPubSeq: c.conn.lastPubSeq, AckedPubSeq: c.conn.ackedPubSeq,
					MaxFrame: c.conn.srvMaxFrame, MaxTopic: c.conn.srvMaxTopic, Instance: c.conn.instance,
				}}, todo)
			}
			h.mu.Unlock()
		case hasm.ActAttach:
			var err error
			if todo, err = h.attach(a, todo); err != nil {
				return err
			}
		case hasm.ActClose:
			h.closeConn(a.Conn)
		case hasm.ActSubscribe:
			todo = h.enterSub(ctx, a, todo)
		case hasm.ActSubEnded:
			h.endSub(a.Sub, a.Err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m.Phase() == hasm.PhaseStopped {
		return h.m.Err()
	}
	return nil
}

// cancelled handles ctx's end before an attempt: Close (which stops the
// machine itself), or Connect's context (the machine gives up).
func (h *HAClient) cancelled(ctx, userCtx context.Context, todo []hasm.Action) error {
	if h.isClosed() {
		return ErrClosed
	}
	in := hasm.Input{Kind: hasm.InCancel, Err: context.Cause(ctx)}
	if userCtx != nil && userCtx.Err() != nil {
		in.Wrap = context.Cause(userCtx)
	}
	h.mu.Lock()
	todo = h.stepLocked(in, todo[:0])
	h.mu.Unlock()
	h.finish(todo)
	return h.Err()
}

// finish carries out the actions left once the machine stopped (closing
// a connection, ending subscriptions).
func (h *HAClient) finish(todo []hasm.Action) {
	for _, a := range todo {
		switch a.Kind {
		case hasm.ActClose:
			h.closeConn(a.Conn)
		case hasm.ActSubEnded:
			h.endSub(a.Sub, a.Err)
		}
	}
}

// dialCause classifies a failed attempt for the machine.
func dialCause(err error) hasm.Cause {
	switch {
	case errors.Is(err, ErrTLSRequired): // a configuration error: no retry can succeed
		return hasm.CauseFatal
	case errors.Is(err, ErrStandby):
		return hasm.CauseStandby
	case errors.Is(err, ErrAuth), errors.Is(err, ErrVersion):
		return hasm.CauseLogonRefused
	}
	return hasm.CauseOther
}

// lostCause classifies a connection's end for the machine.
func lostCause(err error) hasm.Cause {
	var se *ServerError
	switch {
	case errors.As(err, &se) && se.Code == wire.CodeStandby:
		return hasm.CauseStandby
	case errors.As(err, &se) && (se.Code == wire.CodeStorageFailed || se.Code == wire.CodeShutdown):
		return hasm.CauseGoingAway
	case errors.Is(err, ErrHeartbeatTimeout):
		return hasm.CauseSilent
	}
	return hasm.CauseOther
}

// dialOne connects and logs on for ActDial a. The connection's persisted
// acks and permanent refusals go to the machine as inputs about a.Conn.
func (h *HAClient) dialOne(ctx context.Context, a hasm.Action) (*Client, error) {
	cfg := h.base
	if a.Credentials {
		cred, err := h.ca.auth.Credentials(ctx, a.URI, cfg.name)
		if err != nil {
			return nil, fmt.Errorf("authenticator: %w", err)
		}
		cfg.credentials = cred
	}
	id := a.Conn
	if h.store != nil { // without one, InLost carries the persisted ack
		cfg.persistHook = func(seq uint64) {
			h.mu.Lock()
			h.stepLocked(hasm.Input{Kind: hasm.InAcked, Conn: id, Seq: seq}, nil)
			h.mu.Unlock()
		}
	}
	cfg.failedWrite = func(seq uint64, code wire.Code, reason string) {
		h.mu.Lock()
		h.stepLocked(hasm.Input{Kind: hasm.InRefused, Conn: id, Seq: seq, Code: code, Reason: reason}, nil)
		h.mu.Unlock()
	}
	return connectWith(ctx, a.URI, cfg)
}

// attach carries out ActAttach: with a store, what the server's ack point
// covers leaves it and the rest is re-published, in order, before any new
// publish (publishers wait on pubMu), each as the machine's Replayed says.
func (h *HAClient) attach(a hasm.Action, todo []hasm.Action) ([]hasm.Action, error) {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	h.mu.Lock()
	c := h.att
	h.mu.Unlock()
	var err error
	var last uint64
	if h.store != nil {
		h.store.Discard(a.Seq)
		err = h.store.Replay(func(seq uint64, topic, payload []byte) error {
			h.mu.Lock()
			v := h.m.Replayed(a.Conn, seq, len(topic), wire.PublishOverhead+len(topic)+len(payload))
			todo = h.runLocked(todo)
			h.mu.Unlock()
			if v != hasm.VerdictSend {
				return nil
			}
			_, err := c.publish(context.Background(), seq, topic, payload)
			return err
		})
		last = h.store.LastSeq()
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.Close()
		return todo, ErrClosed
	}
	todo = h.stepLocked(hasm.Input{Kind: hasm.InAttached, Conn: a.Conn, Err: err, Seq: last}, todo)
	h.mu.Unlock()
	return todo, nil
}

// closeConn closes connection id if it is the last one dialed.
func (h *HAClient) closeConn(id hasm.ConnID) {
	h.mu.Lock()
	c := h.att
	if h.attID != id {
		c = nil
	}
	h.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// enterSub carries out ActSubscribe and feeds back the answer.
func (h *HAClient) enterSub(ctx context.Context, a hasm.Action, todo []hasm.Action) []hasm.Action {
	h.mu.Lock()
	s := h.byID[a.Sub]
	c := h.att
	if h.attID != a.Conn {
		c = nil
	}
	h.mu.Unlock()
	in := hasm.Input{Kind: hasm.InSubscribed, Conn: a.Conn, Sub: a.Sub, Initial: a.Initial}
	switch {
	case s == nil:
		return todo
	case c == nil:
		in.Err, in.Cause = ErrDisconnected, hasm.CauseConnGone
	default:
		if in.Err = s.enter(ctx, c, a); in.Err != nil {
			var se *ServerError
			switch {
			case c.Err() != nil:
				in.Cause = hasm.CauseConnGone
			case errors.As(in.Err, &se):
				in.Cause = hasm.CauseServerRefused
			}
		}
	}
	h.mu.Lock()
	todo = h.stepLocked(in, todo)
	h.mu.Unlock()
	return todo
}

// endSub carries out ActSubEnded.
func (h *HAClient) endSub(id hasm.SubID, err error) {
	h.mu.Lock()
	s := h.byID[id]
	delete(h.byID, id)
	h.mu.Unlock()
	if s != nil {
		h.subs.Remove(s)
		s.end(err)
	}
}

// manage watches the current connection and, when it ends, drives the
// machine through the reconnect sequence.
func (h *HAClient) manage() {
	defer close(h.mgrDone)
	for {
		h.mu.Lock()
		c, id := h.cur, h.curID
		h.mu.Unlock()
		if c == nil {
			return // stopped
		}
		select {
		case <-c.Done():
		case <-h.ctx.Done():
			return
		}
		err := c.Err()
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return
		}
		todo := h.stepLocked(hasm.Input{Kind: hasm.InLost, Conn: id, Err: err, Cause: lostCause(err), Seq: c.PersistedSeq()}, nil)
		h.mu.Unlock()
		if err := h.drive(h.ctx, nil, todo); err != nil {
			return
		}
	}
}

func (h *HAClient) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// Close stops reconnecting, closes the connection gracefully (see
// Client.Close), writes the publish store and flushes the bookmark store
// (it does not close them: they belong to the application) and ends the
// subscriptions. Messages still unpersisted stay in the PublishStore.
func (h *HAClient) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		c := h.cur
		started := h.started
		h.mu.Unlock()
		h.cancel()
		if c != nil {
			c.Close()
		}
		if started {
			<-h.mgrDone
		}
		h.mu.Lock()
		if h.cur != nil {
			c = h.cur
		}
		h.mu.Unlock()
		if c != nil {
			c.Close()
		}
		if h.store != nil {
			if err := h.store.Sync(); err != nil {
				h.ev.error(err)
			}
		}
		if err := h.bms.Flush(); err != nil {
			h.ev.error(err)
		}
		h.mu.Lock()
		todo := h.stepLocked(hasm.Input{Kind: hasm.InClose, Err: ErrClosed}, nil)
		h.mu.Unlock()
		h.finish(todo)
		h.ev.close()
	})
	return nil
}

// Done is closed when the client has stopped: after Close, or when
// reconnection gave up (Err says why).
func (h *HAClient) Done() <-chan struct{} { return h.stopped }

// Err returns nil while the client runs, then ErrClosed or the error that
// stopped reconnection (matching ErrNoServer).
func (h *HAClient) Err() error {
	select {
	case <-h.stopped:
		return h.stopErr
	default:
		return nil
	}
}

// State returns the current connection state.
func (h *HAClient) State() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

// Server returns the address and instance name of the current connection
// ("" while disconnected).
func (h *HAClient) Server() (uri, instance string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil {
		return "", ""
	}
	return h.curURI, h.cur.Instance()
}

// Reconnects and Failovers count connections lost and new servers.
func (h *HAClient) Reconnects() uint64 { return h.reconnects.Load() }

// Failovers counts connections made to a different server than the
// previous one.
func (h *HAClient) Failovers() uint64 { return h.failovers.Load() }

// Name returns the client name.
func (h *HAClient) Name() string { return h.base.name }

// BookmarkStore returns the store WithSubID subscriptions use.
func (h *HAClient) BookmarkStore() BookmarkStore { return h.bms }

// PublishStore returns the publish store (nil if none).
func (h *HAClient) PublishStore() PublishStore { return h.store }

// UnpersistedCount returns how many published messages the server has not
// yet persisted (0 without a PublishStore).
func (h *HAClient) UnpersistedCount() int {
	if h.store == nil {
		return 0
	}
	return h.store.UnpersistedCount()
}

// current returns the connection, or nil and a channel closed when one is up.
func (h *HAClient) current() (*Client, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur, h.up
}

// waitUp waits until a connection is up, the client stopped, or ctx ends.
func (h *HAClient) waitUp(ctx context.Context, up <-chan struct{}) error {
	select {
	case <-up:
		return nil
	case <-h.stopped:
		return h.stopErr
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Publish publishes one message and returns its publisher sequence.
//
// With a PublishStore the message goes into the store first, then onto the
// current connection if there is one; while disconnected it waits in the
// store and is published, in order, once a connection is up. When the store
// is full Publish blocks until the server persists enough (or ctx ends),
// or returns ErrStoreFull (StoreLimits.ErrorWhenFull). Without a store,
// Publish waits (until ctx ends) while disconnected. It does not allocate.
func (h *HAClient) Publish(ctx context.Context, topic string, payload []byte) (uint64, error) {
	return h.PublishBytes(ctx, unsafe.Slice(unsafe.StringData(topic), len(topic)), payload)
}

// PublishBytes is Publish with the topic as bytes.
func (h *HAClient) PublishBytes(ctx context.Context, topic, payload []byte) (uint64, error) {
	if len(topic) == 0 || len(topic) > record.MaxTopic {
		return 0, ErrBadTopic
	}
	size := wire.PublishOverhead + len(topic) + len(payload)
	if size > h.base.maxFrame {
		return 0, fmt.Errorf("%w: %d bytes > max-frame %d", ErrTooLarge, size, h.base.maxFrame)
	}
	for {
		if err := h.Err(); err != nil {
			return 0, err
		}
		h.pubMu.Lock()
		h.mu.Lock()
		c, up, seq, numbered := h.cur, h.up, h.m.NextPubSeq(), h.m.Numbered()
		h.mu.Unlock()
		if h.store != nil && !numbered {
			// Before the first logon the store cannot number the message
			// (hasm.Machine.Numbered): wait for it.
			h.pubMu.Unlock()
			h.waitingFirst.Add(1)
			err := h.waitUp(ctx, up)
			h.waitingFirst.Add(-1)
			if err != nil {
				return 0, err
			}
			continue
		}
		if h.store == nil {
			if c == nil {
				h.pubMu.Unlock()
				if err := h.waitUp(ctx, up); err != nil {
					return 0, err
				}
				continue
			}
			seq, err := c.publish(ctx, 0, topic, payload)
			h.pubMu.Unlock()
			return seq, err
		}
		if err := h.store.Store(seq, topic, payload); err != nil {
			h.pubMu.Unlock()
			if errors.Is(err, errWouldBlock) {
				if err := h.store.WaitSpace(ctx); err != nil {
					return 0, err
				}
				continue
			}
			return 0, err
		}
		h.mu.Lock()
		v := h.m.Stored(seq, len(topic), size)
		c = h.cur
		h.runLocked(nil) // a local refusal: store removal, failed-write report
		h.mu.Unlock()
		if v == hasm.VerdictSend {
			// An error means the connection is gone: the store
			// re-publishes the message on the next one. The send is not
			// abandoned on ctx: a message stored must go out in order.
			c.publish(context.Background(), seq, topic, payload)
		}
		h.pubMu.Unlock()
		return seq, nil
	}
}

// Flush waits until every message published so far is persisted by the
// server (with a PublishStore: until UnpersistedCount is 0, across
// reconnects; without: a Flush on the current connection, which fails if
// the connection is lost meanwhile).
func (h *HAClient) Flush(ctx context.Context) error {
	if h.store != nil {
		if err := h.store.Sync(); err != nil {
			return err
		}
		done := make(chan error, 1)
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { done <- h.store.Flush(fctx) }()
		select {
		case err := <-done:
			return err
		case <-h.stopped:
			if h.store.UnpersistedCount() == 0 {
				return nil
			}
			return h.stopErr
		}
	}
	for {
		c, up := h.current()
		if c == nil {
			if err := h.waitUp(ctx, up); err != nil {
				return err
			}
			continue
		}
		return c.Flush(ctx)
	}
}

// HASubscription is a subscription of an HAClient: it survives reconnects.
type HASubscription struct {
	// Name is the WithSubID id, or the one generated without it
	// ("auto-<client name>-<random>-<n>"; see docs/client.md).
	Name  string
	Topic string
	// C delivers messages unless WithHandler was given. It is closed when
	// the subscription ends (Unsubscribe, Close, the client stopped, or the
	// server refused it on a reconnect; see Err).
	C <-chan *Message

	h  *HAClient
	id hasm.SubID
	sc subConfig
	ch chan *Message

	mu      sync.Mutex
	on      *Client       // the connection it is entered on
	inner   *Subscription // its subscription there
	entered bool          // entered at least once
	ended   bool

	// filter is the duplicate filter (hasm.SubFilter): the publisher
	// sequences handed to the application, per publisher; a message in
	// it, or discarded in the BookmarkStore (dq asks), sent again after a
	// resume, is dropped. Touched only by the reader goroutine of the
	// connection the subscription is on.
	filter       hasm.SubFilter
	dq           discardQuery
	dups         atomic.Uint64
	forgotten    atomic.Uint64 // bookmark store ranges forgotten, last seen by Discard
	filterForgot atomic.Uint64 // delivered filter ranges forgotten

	stop    chan struct{}
	stopMu  sync.Once
	done    chan struct{}
	doneMu  sync.Once
	err     error
	started chan struct{} // closed once entered the first time
}

// discardQuery asks the bookmark store about the message being offered to
// a subscription's filter (hasm.Discards).
type discardQuery struct {
	bms BookmarkStore
	m   *Message
}

func (q *discardQuery) IsDiscarded() bool { return q.bms.IsDiscarded(q.m) }

// Subscribe starts a subscription that the client re-enters after every
// reconnect. With WithSubID the subscription is resumable: its progress
// (what the application passed to Discard) is kept in the BookmarkStore;
// From(MostRecent) (or no From) resumes from there; From(Now) and
// From(Epoch) start afresh. Without WithSubID an id is generated (Name),
// so the subscription resumes the same way for the life of this HAClient;
// From defaults to Now then, and MostRecent needs WithSubID. A
// re-subscription the server refuses after a reconnect ends it (Err).
// Options as for Client.Subscribe (From, Prefix, Regex, WithHandler,
// WithBuffer). If the client is connected Subscribe waits for the server
// to accept it; if not, the subscription is entered once connected.
func (h *HAClient) Subscribe(ctx context.Context, topic string, opts ...SubOption) (*HASubscription, error) {
	sc := subConfig{start: Now, buffer: 1024}
	for _, o := range opts {
		o(&sc)
	}
	hasFrom := sc.fromSet
	if topic == "" || len(topic) > record.MaxTopic {
		return nil, ErrBadTopic
	}
	if sc.subName == "" {
		if sc.start.kind == startMostRecent {
			return nil, errors.New("client: From(MostRecent) needs WithSubID")
		}
		hasFrom = true // a generated id starts where asked (default Now)
	}
	if !hasFrom {
		sc.start = MostRecent
	}
	if err := h.Err(); err != nil {
		return nil, err
	}
	s := &HASubscription{Topic: topic, h: h, sc: sc,
		stop: make(chan struct{}), done: make(chan struct{}), started: make(chan struct{})}
	s.dq.bms = h.bms
	if sc.handler == nil {
		s.ch = make(chan *Message, sc.buffer)
		s.C = s.ch
	}
	h.mu.Lock()
	s.id, s.Name = h.m.AddSub(sc.subName, topic, startKind(sc.start))
	h.byID[s.id] = s
	todo := h.runLocked(nil) // the subscribe, if connected
	h.mu.Unlock()
	h.subs.Add(s)
	for _, a := range todo {
		if a.Kind != hasm.ActSubscribe {
			continue
		}
		h.mu.Lock()
		c := h.att
		if h.attID != a.Conn {
			c = nil
		}
		h.mu.Unlock()
		in := hasm.Input{Kind: hasm.InSubscribed, Conn: a.Conn, Sub: a.Sub, Initial: true}
		if c == nil {
			in.Err, in.Cause = ErrDisconnected, hasm.CauseConnGone
		} else if in.Err = s.enter(ctx, c, a); in.Err != nil && c.Err() != nil {
			in.Cause = hasm.CauseConnGone
		}
		h.mu.Lock()
		ended := h.stepLocked(in, nil)
		h.mu.Unlock()
		h.finish(ended)
		if in.Err != nil && in.Cause != hasm.CauseConnGone {
			return nil, in.Err
		}
	}
	return s, nil
}

// startKind is how the machine sees a Start.
func startKind(s Start) hasm.StartKind {
	switch s.kind {
	case startMostRecent:
		return hasm.StartMostRecent
	case wire.StartNow:
		return hasm.StartNow
	case wire.StartEpoch:
		return hasm.StartEpoch
	}
	return hasm.StartOther
}

// enter subscribes s on c as the machine's ActSubscribe a says.
func (s *HASubscription) enter(ctx context.Context, c *Client, a hasm.Action) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.on == c {
		return nil
	}
	start := s.sc.start
	switch a.Start {
	case hasm.ModeResume:
		start = Start{kind: wire.StartResume, resume: a.Resume}
	case hasm.ModeEpoch:
		start = Epoch
	}
	sc := s.sc
	sc.start = start
	sc.handler = s.deliverFunc(c.Done())
	sc.onPosition = nil
	if a.SetPosition {
		name, bms := s.Name, s.h.bms
		sc.onPosition = func(p wire.Position) {
			pos := make([]wire.PositionEntry, p.Count())
			for i := range pos {
				pos[i] = p.Entry(i)
			}
			if err := bms.SetPosition(name, pos); err != nil {
				s.h.ev.error(err)
			}
		}
	}
	inner, err := c.Subscribe(ctx, s.Topic, func(x *subConfig) { *x = sc })
	if err != nil {
		return err
	}
	s.on, s.inner = c, inner
	if !s.entered {
		s.entered = true
		close(s.started)
	}
	return nil
}

// deliverFunc returns the handler for s on one connection (its reader
// goroutine calls it).
func (s *HASubscription) deliverFunc(connDone <-chan struct{}) func(*Message) {
	return func(m *Message) {
		pub, pubSeq := m.Bookmark.Publisher, m.Bookmark.PubSeq
		m.SubName = s.Name
		s.dq.m = m
		ok := s.filter.Admit(pub, pubSeq, &s.dq)
		s.dq.m = nil
		if !ok {
			s.dups.Add(1)
			return
		}
		if s.sc.handler != nil {
			s.markDelivered(pub, pubSeq)
			s.sc.handler(m)
			return
		}
		cp := m.clone()
		select {
		case s.ch <- cp:
			s.markDelivered(pub, pubSeq)
		case <-s.stop:
		case <-connDone:
		}
	}
}

// markDelivered adds a delivered message to the filter; forgetting a range
// to stay within the bound is reported (OnError) and counted.
func (s *HASubscription) markDelivered(pub, pubSeq uint64) {
	if n := s.filter.Delivered(pub, pubSeq); n != 0 {
		s.filterForgot.Store(n)
		if n&(n-1) == 0 { // the 1st, 2nd, 4th, ... time
			s.h.ev.error(fmt.Errorf("client: subscription %q: %w: delivered filter past %d ranges, %d forgotten (messages in them may be delivered twice)",
				s.Name, ErrProgressBound, MaxProgressRanges, n))
		}
	}
}

// Discard marks m processed in the client's BookmarkStore (m must come
// from this subscription). If the store had to forget progress ranges to
// stay within MaxProgressRanges (see BookmarkStore), it is reported
// through OnError (the 1st, 2nd, 4th, ... time).
func (s *HASubscription) Discard(m *Message) error {
	err := s.h.bms.Discard(m)
	if f, ok := s.h.bms.(interface{ Forgotten() uint64 }); ok {
		if n := f.Forgotten(); n != s.forgotten.Load() {
			s.forgotten.Store(n)
			if n&(n-1) == 0 {
				s.h.ev.error(fmt.Errorf("client: subscription %q: %w: bookmark store past %d ranges, %d forgotten (messages in them may be delivered again after a resume)",
					s.Name, ErrProgressBound, MaxProgressRanges, n))
			}
		}
	}
	return err
}

// ForgottenRanges counts the ranges the delivered filter forgot to stay
// within MaxProgressRanges.
func (s *HASubscription) ForgottenRanges() uint64 { return s.filterForgot.Load() }

// Duplicates counts messages dropped because they had been delivered
// already (sent again by a server after a resume).
func (s *HASubscription) Duplicates() uint64 { return s.dups.Load() }

// Done is closed when the subscription has ended.
func (s *HASubscription) Done() <-chan struct{} { return s.done }

// Err says why the subscription ended (nil after Unsubscribe).
func (s *HASubscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Unsubscribe ends the subscription.
func (s *HASubscription) Unsubscribe(ctx context.Context) error {
	s.h.mu.Lock()
	s.h.m.RemoveSub(s.id)
	delete(s.h.byID, s.id)
	s.h.mu.Unlock()
	s.h.subs.Remove(s)
	s.end(nil)
	return nil
}

// end stops s: no more deliveries, no more re-entries; C is closed once no
// connection can deliver to it.
func (s *HASubscription) end(err error) {
	s.stopMu.Do(func() { close(s.stop) })
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	inner, on := s.inner, s.on
	s.mu.Unlock()
	if inner != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		inner.Unsubscribe(ctx) // returns when the reader has finished it, or the conn ended
		cancel()
		select {
		case <-inner.Done():
		case <-on.Done(): // its reader has returned
		}
	}
	s.doneMu.Do(func() {
		s.err = err
		if errors.Is(err, ErrClosed) {
			s.err = nil
		}
		if s.ch != nil {
			close(s.ch)
		}
		close(s.done)
	})
}

// eventQueue runs the state listener and error handler on a goroutine of
// their own, in order, so that they never block the client's I/O.
type eventQueue struct {
	onState func(Event)
	onError func(error)
	mu      sync.Mutex
	items   []func()
	wake    chan struct{}
	closed  bool
	done    chan struct{}
}

func newEventQueue(onState func(Event), onError func(error)) *eventQueue {
	q := &eventQueue{onState: onState, onError: onError, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go q.run()
	return q
}

func (q *eventQueue) push(f func()) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *eventQueue) state(e Event) {
	if q.onState == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	q.push(func() { q.onState(e) })
}

func (q *eventQueue) error(err error) {
	if q.onError == nil || err == nil {
		return
	}
	q.push(func() { q.onError(err) })
}

func (q *eventQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		closed := q.closed
		q.mu.Unlock()
		for _, f := range items {
			f()
		}
		if closed {
			if len(items) == 0 {
				return
			}
			continue // close's wake-up may have folded into a push's: look again
		}
		<-q.wake
	}
}

// close runs what is queued, then stops the goroutine.
func (q *eventQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	<-q.done
}

// publishWaiting reports whether a publish waits for the first logon.
func (h *HAClient) publishWaiting() bool { return h.waitingFirst.Load() > 0 }
