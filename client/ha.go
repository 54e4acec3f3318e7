package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// ErrNoServer: reconnection stopped: the ServerChooser returned no server
// or the DelayStrategy gave up. The error says why (ServerChooser.Error and
// the last attempt's error).
var ErrNoServer = errors.New("client: no server available")

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

// Connection states.
const (
	StateConnected    State = iota + 1 // logged on (first time, or again on the same server)
	StateDisconnected                  // the connection ended (Err says why)
	StateReconnecting                  // an attempt is about to be made (URI)
	StateFailedOver                    // logged on to a different server than before
	StateStopped                       // Close, or reconnection gave up (Err)
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
type HAClient struct {
	cfg     HAConfig
	base    config
	chooser ServerChooser
	delay   DelayStrategy
	store   PublishStore
	bms     BookmarkStore
	subs    SubscriptionManager

	mu      sync.Mutex
	cur     *Client // nil while disconnected
	curURI  string
	lastURI string        // the server of the previous connection
	up      chan struct{} // closed while connected; replaced on disconnect
	closed  bool
	state   State

	pubMu   sync.Mutex
	nextSeq uint64 // guarded by pubMu (with a PublishStore)

	stableAfter time.Duration
	upAt        time.Time                                          // when the current connection logged on (manager goroutine)
	upPersisted uint64                                             // its PersistedSeq then
	failedWrite func(pubSeq uint64, code wire.Code, reason string) // the application's
	subIDs      atomic.Uint64                                      // generated sub ids

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

// NewHA returns an HAClient; Connect makes the first connection.
func NewHA(cfg HAConfig) (*HAClient, error) {
	h := &HAClient{cfg: cfg, base: defaultConfig(), up: make(chan struct{}), mgrDone: make(chan struct{}), stopped: make(chan struct{})}
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
	h.stableAfter = time.Second
	if cfg.StableAfter > 0 {
		h.stableAfter = cfg.StableAfter
	}
	h.failedWrite = h.base.failedWrite
	h.base.failedWrite = h.failed
	h.chooser = cfg.Chooser
	if h.chooser == nil {
		h.chooser = NewDefaultServerChooser(cfg.Servers...)
	}
	h.delay = cfg.Delay
	if h.delay == nil {
		h.delay = &ExponentialDelayStrategy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, MaxTotal: 60 * time.Second, Jitter: 0.2}
	}
	h.store = cfg.PublishStore
	if h.store != nil {
		if h.base.ack != wire.AckPersisted {
			return nil, errors.New("client: a PublishStore needs WithAck(wire.AckPersisted)")
		}
		h.nextSeq = h.store.LastSeq() + 1
		st := h.store
		h.base.persistHook = func(seq uint64) { st.Discard(seq) }
		h.base.beforeWrite = st.Sync
	}
	h.bms = cfg.BookmarkStore
	if h.bms == nil {
		h.bms = NewMemoryBookmarkStore()
	}
	h.subs = cfg.Subscriptions
	if h.subs == nil {
		h.subs = &MemorySubscriptionManager{}
	}
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
	h.mu.Unlock()
	cctx, cancel := context.WithCancel(h.ctx)
	stop := context.AfterFunc(ctx, cancel)
	err := h.connectLoop(cctx, "")
	stop()
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("client: connect: %w (%w)", context.Cause(ctx), err)
		}
		h.stop(err)
		close(h.mgrDone)
		return err
	}
	go h.manage()
	return nil
}

// connectLoop runs the reconnect sequence until logged on. standbyURI,
// if set, is a server that just said it is a standby.
func (h *HAClient) connectLoop(ctx context.Context, standbyURI string) error {
	var lastErr error
	// standby holds the servers that answered "standby" since the last
	// other outcome: the next server is tried at once, without asking the
	// DelayStrategy (neither a failure nor a delayed attempt), until the
	// round comes back to one of them.
	standby := map[string]bool{}
	if standbyURI != "" {
		standby[standbyURI] = true
	}
	for {
		if err := ctx.Err(); err != nil {
			if h.isClosed() {
				return ErrClosed
			}
			return fmt.Errorf("%w: %w (last error: %w)", ErrNoServer, context.Cause(ctx), orNone(lastErr))
		}
		uri := h.chooser.CurrentURI()
		if uri == "" {
			return fmt.Errorf("%w: %s (last error: %w)", ErrNoServer, h.chooser.Error(), orNone(lastErr))
		}
		auth := h.chooser.CurrentAuthenticator()
		var d time.Duration
		if len(standby) == 0 || standby[uri] {
			clear(standby)
			var err error
			if d, err = h.delay.NextDelay(uri); err != nil {
				return fmt.Errorf("%w: %w; %s (last error: %w)", ErrNoServer, err, h.chooser.Error(), orNone(lastErr))
			}
		}
		h.ev.state(Event{State: StateReconnecting, URI: uri})
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				continue
			}
		}
		c, err := h.dialOne(ctx, uri, auth)
		if errors.Is(err, ErrTLSRequired) { // a configuration error: no retry can succeed
			return fmt.Errorf("%w: %s: %w", ErrNoServer, uri, err)
		}
		if err != nil {
			lastErr = err
			if errors.Is(err, ErrStandby) {
				standby[uri] = true
				h.reportStandby(uri, err)
			} else {
				clear(standby)
				h.chooser.ReportFailure(uri, err)
			}
			h.ev.error(fmt.Errorf("client: connect to %s: %w", uri, err))
			continue
		}
		h.chooser.ReportSuccess(uri)
		// The DelayStrategy is Reset only once this connection proves
		// stable (see manage), so a server that accepts the logon and
		// drops the connection cannot keep MaxTotal from running out.
		if err := h.attach(c, uri); err != nil {
			lastErr = err
			c.Close()
			continue
		}
		h.resubscribe(ctx, c)
		return nil
	}
}

// errNoAttempt stands for the last attempt's error before any attempt.
var errNoAttempt = errors.New("none")

func orNone(err error) error {
	if err == nil {
		return errNoAttempt
	}
	return err
}

func (h *HAClient) dialOne(ctx context.Context, uri string, auth Authenticator) (*Client, error) {
	cfg := h.base
	if auth != nil {
		cred, err := auth.Credentials(ctx, uri, cfg.name)
		if err != nil {
			return nil, fmt.Errorf("authenticator: %w", err)
		}
		cfg.credentials = cred
	}
	return connectWith(ctx, uri, cfg)
}

// attach makes c the current connection: the store drops what the server
// holds and re-publishes the rest, in order, before any new publish.
func (h *HAClient) attach(c *Client, uri string) error {
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	last, acked := c.conn.lastPubSeq, c.conn.ackedPubSeq
	if h.store != nil {
		// Only what the server's ack point covers may leave the store:
		// (acked, last] is stored there but may not be on its sync peers
		// yet, so it is re-published (the server acks a duplicate once it
		// is durable) rather than trusted.
		h.store.Discard(acked)
		h.nextSeq = max(h.nextSeq, h.store.LastSeq()+1, last+1)
		err := h.store.Replay(func(seq uint64, topic, payload []byte) error {
			if seq <= acked {
				return nil
			}
			if why := c.misfit(len(topic), wire.PublishOverhead+len(topic)+len(payload)); why != "" {
				h.failed(seq, wire.CodeTooLarge, why)
				return nil
			}
			_, err := c.publish(context.Background(), seq, topic, payload)
			return err
		})
		if err != nil {
			return err
		}
		c.conn.wmu.Lock()
		c.nextSeq = h.nextSeq
		c.conn.wmu.Unlock()
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	prev := h.lastURI
	h.cur, h.curURI, h.lastURI = c, uri, uri
	h.upAt, h.upPersisted = time.Now(), c.PersistedSeq()
	close(h.up)
	h.mu.Unlock()
	ev := Event{State: StateConnected, URI: uri, Instance: c.Instance()}
	if prev != "" && prev != uri {
		ev.State, ev.From = StateFailedOver, prev
		h.failovers.Add(1)
	}
	h.setState(ev.State)
	h.ev.state(ev)
	return nil
}

// failed handles a message refused permanently (by the server, or locally
// because it cannot fit the server's limits): it leaves the store, and the
// application hears of it once, on the event goroutine.
func (h *HAClient) failed(seq uint64, code wire.Code, reason string) {
	if h.store != nil {
		if err := h.store.Remove(seq); err != nil {
			h.ev.error(fmt.Errorf("client: publish store: remove %d: %w", seq, err))
		}
	}
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

// reportStandby tells the chooser that uri is a standby: a
// StandbyReporter moves on without counting a failure; another chooser
// gets a failure report (its only way to move on).
func (h *HAClient) reportStandby(uri string, err error) {
	if sr, ok := h.chooser.(StandbyReporter); ok {
		sr.ReportStandby(uri, err)
		return
	}
	h.chooser.ReportFailure(uri, err)
}

func (h *HAClient) setState(s State) {
	h.mu.Lock()
	h.state = s
	h.mu.Unlock()
}

// resubscribe re-enters every subscription on c.
func (h *HAClient) resubscribe(ctx context.Context, c *Client) {
	for _, s := range h.subs.All() {
		if err := s.enter(ctx, c); err != nil && c.Err() == nil {
			var se *ServerError
			if errors.As(err, &se) {
				// Refused by the server: the subscription ends with the
				// error (Done, Err, C closed) rather than stay open and
				// dead.
				h.subs.Remove(s)
				s.end(err)
			}
			h.ev.error(fmt.Errorf("client: re-subscribe %q: %w", s.Topic, err))
		}
	}
}

// manage watches the current connection and reconnects when it ends.
func (h *HAClient) manage() {
	defer close(h.mgrDone)
	for {
		h.mu.Lock()
		c, uri := h.cur, h.curURI
		h.mu.Unlock()
		select {
		case <-c.Done():
		case <-h.ctx.Done():
			return
		}
		err := c.Err()
		h.mu.Lock()
		upAt, upPersisted := h.upAt, h.upPersisted
		h.cur = nil
		h.up = make(chan struct{})
		closed := h.closed
		h.mu.Unlock()
		if closed {
			return
		}
		h.setState(StateDisconnected)
		h.ev.state(Event{State: StateDisconnected, URI: uri, Err: err})
		if time.Since(upAt) >= h.stableAfter || c.PersistedSeq() > upPersisted {
			h.delay.Reset() // a connection that worked: a fresh budget
		}
		standbyURI := ""
		var se *ServerError
		switch {
		case errors.As(err, &se) && se.Code == wire.CodeStandby:
			// Demoted to passive: the next server now, not counted.
			standbyURI = uri
			h.reportStandby(uri, err)
		case errors.As(err, &se) && (se.Code == wire.CodeStorageFailed || se.Code == wire.CodeShutdown),
			errors.Is(err, ErrHeartbeatTimeout):
			// The server is going away or unresponsive, not merely
			// disconnected: fail over rather than wait for it again first.
			h.chooser.ReportFailure(uri, err)
		}
		h.reconnects.Add(1)
		if err := h.connectLoop(h.ctx, standbyURI); err != nil {
			if !errors.Is(err, ErrClosed) {
				h.stop(err)
			}
			return
		}
	}
}

func (h *HAClient) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

// stop ends the client for good with err: waiting publishers and
// subscribers are released.
func (h *HAClient) stop(err error) {
	h.mu.Lock()
	select {
	case <-h.stopped:
		h.mu.Unlock()
		return
	default:
	}
	h.stopErr = err
	h.state = StateStopped
	close(h.stopped)
	h.mu.Unlock()
	h.ev.state(Event{State: StateStopped, Err: err})
	if err != nil && !errors.Is(err, ErrClosed) {
		h.ev.error(err)
	}
	for _, s := range h.subs.All() {
		s.end(err)
	}
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
		h.stop(ErrClosed)
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
		c, up := h.current()
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
		seq := h.nextSeq
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
		h.nextSeq++
		if c != nil {
			if why := c.misfit(len(topic), size); why != "" {
				// Beyond this server's limits: it would refuse it (or end
				// the connection), so it is not sent but reported.
				h.failed(seq, wire.CodeTooLarge, why)
			} else {
				// An error means the connection is gone: the store
				// re-publishes the message on the next one. The send is
				// not abandoned on ctx: a message stored must go out in
				// order.
				c.publish(context.Background(), seq, topic, payload)
			}
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

	h         *HAClient
	sc        subConfig
	resumable bool
	ch        chan *Message

	mu      sync.Mutex
	on      *Client       // the connection it is entered on
	inner   *Subscription // its subscription there
	entered bool          // entered at least once (later entries resume)
	ended   bool

	// delivered is the set of publisher sequences handed to the
	// application, per publisher (resumable subscriptions): a message in
	// it, or discarded in the BookmarkStore, sent again after a resume, is
	// dropped; a late one below a sequence delivered but not itself
	// delivered is delivered. Bounded to MaxProgressRanges ranges (past
	// it the oldest are forgotten: at-least-once). Touched only by the
	// reader goroutine of the connection the subscription is on.
	delivered    *seqFilter
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
		sc.subName = h.generateSubID()
		hasFrom = true // a generated id starts where asked (default Now)
	}
	s := &HASubscription{Name: sc.subName, Topic: topic, h: h, sc: sc, resumable: true,
		stop: make(chan struct{}), done: make(chan struct{}), started: make(chan struct{})}
	if s.resumable {
		if !hasFrom {
			s.sc.start = MostRecent
		}
		s.delivered = newSeqFilter()
	}
	if sc.handler == nil {
		s.ch = make(chan *Message, sc.buffer)
		s.C = s.ch
	}
	if err := h.Err(); err != nil {
		return nil, err
	}
	h.subs.Add(s)
	c, _ := h.current()
	if c == nil {
		return s, nil
	}
	if err := s.enter(ctx, c); err != nil {
		if c.Err() != nil {
			return s, nil // the connection died: entered on the next one
		}
		h.subs.Remove(s)
		s.end(err)
		return nil, err
	}
	return s, nil
}

// generateSubID returns a sub id for a subscription made without
// WithSubID: "auto-" + the client name + a random part + a counter, unique
// in the bookmark store for the life of this HAClient.
func (h *HAClient) generateSubID() string {
	return fmt.Sprintf("auto-%s-%08x-%d", h.base.name, rand.Uint32(), h.subIDs.Add(1))
}

// enter subscribes s on c (once per connection).
func (s *HASubscription) enter(ctx context.Context, c *Client) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.on == c {
		return nil
	}
	start := s.sc.start
	setPos := false
	if s.resumable {
		if s.entered || start.kind == startMostRecent {
			if entries, ok := s.h.bms.MostRecent(s.Name); ok {
				start = Start{kind: wire.StartResume, resume: entries}
			} else if start.kind == startMostRecent {
				start, setPos = Epoch, true
			} else {
				setPos = true
			}
		} else {
			setPos = true // Now or Epoch: start afresh
		}
	} else if s.entered {
		start = Now
	}
	sc := s.sc
	sc.start = start
	sc.handler = s.deliverFunc(c.Done())
	sc.onPosition = nil
	if setPos {
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
		if s.resumable && (s.delivered.contains(pub, pubSeq) || s.h.bms.IsDiscarded(m)) {
			s.dups.Add(1)
			return
		}
		if s.sc.handler != nil {
			if s.resumable {
				s.markDelivered(pub, pubSeq)
			}
			s.sc.handler(m)
			return
		}
		cp := m.clone()
		select {
		case s.ch <- cp:
			if s.resumable {
				s.markDelivered(pub, pubSeq)
			}
		case <-s.stop:
		case <-connDone:
		}
	}
}

// markDelivered adds a delivered message to the filter; forgetting a range
// to stay within the bound is reported (OnError) and counted.
func (s *HASubscription) markDelivered(pub, pubSeq uint64) {
	if s.delivered.add(pub, pubSeq) {
		n := s.delivered.forgotten
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
		if closed && len(items) == 0 {
			return
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
