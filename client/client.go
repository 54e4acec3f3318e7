package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// Client is a connection to one Tandem server. Its methods are safe for
// concurrent use.
type Client struct {
	cfg  config
	conn *conn // fixed for the Client's life today; the HA layer will replace it on reconnect

	// nextSeq is the publisher sequence of the next Publish; guarded by
	// conn.wmu so that sequence order is frame order.
	nextSeq uint64
	// nextFlush is the token of the next Flush; guarded by conn.wmu.
	nextFlush uint64

	acked     atomic.Uint64 // cumulative ack at the requested level
	persisted atomic.Uint64 // cumulative persisted ack
	refusals  atomic.Uint64 // publishes refused by the server

	smu       sync.Mutex
	subs      map[uint32]*Subscription // guarded by smu
	nextSubID uint32                   // guarded by smu
	flushes   map[uint64]chan error    // guarded by smu
	statQueue []chan statResult        // guarded by smu; StatReply has no id: FIFO
	refused   map[uint64]error         // guarded by smu
	firstRef  error                    // guarded by smu: the first refusal

	// msg is the reader goroutine's reusable delivery message.
	msg Message

	closeOnce sync.Once
	done      chan struct{}
	err       error // set before done is closed
}

type statResult struct {
	doc []byte
	err error
}

// Connect dials addr (host:port), logs on and returns a ready Client.
// Logon refusals come back as *ServerError matching ErrNameInUse, ErrAuth,
// ErrVersion, ...
func Connect(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	return connectWith(ctx, addr, cfg)
}

// connectWith is Connect with a built configuration (the HA client makes
// one per attempt).
func connectWith(ctx context.Context, addr string, cfg config) (*Client, error) {
	c := &Client{
		cfg:     cfg,
		subs:    make(map[uint32]*Subscription),
		flushes: make(map[uint64]chan error),
		done:    make(chan struct{}),
	}
	if c.cfg.ack > wire.AckPersisted {
		return nil, fmt.Errorf("client: ack level %d", c.cfg.ack)
	}
	cn, err := dial(ctx, addr, &c.cfg, c)
	if err != nil {
		return nil, err
	}
	c.nextSeq = cn.lastPubSeq + 1
	// The window counts from what the server holds; persisted from what
	// its ack point covers, so that the acks for messages stored but not
	// yet acknowledged (re-published by the HA client) still advance it.
	c.acked.Store(cn.lastPubSeq)
	c.persisted.Store(cn.ackedPubSeq)
	c.conn = cn
	cn.start()
	return c, nil
}

// Instance returns the name of the server instance the client is logged on to.
func (c *Client) Instance() string { return c.conn.instance }

// Heartbeat returns the heartbeat interval the server granted (0: none).
func (c *Client) Heartbeat() time.Duration { return c.conn.heartbeat }

// Name returns the client name used at logon.
func (c *Client) Name() string { return c.cfg.name }

// LastPublished returns the publisher sequence of the last Publish (at logon:
// the last one the server held for this name).
func (c *Client) LastPublished() uint64 {
	c.conn.wmu.Lock()
	defer c.conn.wmu.Unlock()
	return c.nextSeq - 1
}

// PersistedSeq returns the highest publisher sequence up to which every
// message is persisted (cumulative; with AckPersisted). At logon it is the
// server's AckedPubSeq (LastPubSeq from a version 1 server).
func (c *Client) PersistedSeq() uint64 { return c.persisted.Load() }

// AckedSeq returns the cumulative acknowledgement at the level the client
// asks for (WithAck).
func (c *Client) AckedSeq() uint64 { return c.acked.Load() }

// Refused returns how many publishes the server refused to store.
func (c *Client) Refused() uint64 { return c.refusals.Load() }

// Done is closed when the connection has ended, by Close or by failure.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is up, then why it ended: ErrClosed
// after Close, otherwise an error matching ErrDisconnected and its cause.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Publish sends one message on topic and returns its publisher sequence.
// It does not wait for the server: the frame is encoded into the write
// buffer and the writer goroutine sends it with others. It blocks (until
// ctx ends) only while the window of unacknowledged messages or the write
// buffer is full. payload is copied before Publish returns. Publish does not
// allocate.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte) (uint64, error) {
	// AppendPublish only reads topic, so a view of the string's bytes is safe.
	return c.PublishBytes(ctx, unsafe.Slice(unsafe.StringData(topic), len(topic)), payload)
}

// PublishBytes is Publish with the topic as bytes (copied before it returns).
func (c *Client) PublishBytes(ctx context.Context, topic, payload []byte) (uint64, error) {
	return c.publish(ctx, 0, topic, payload)
}

// publish sends one message; at, when non-zero, is its publisher sequence
// (the HA client re-publishing from its store), otherwise the next one.
func (c *Client) publish(ctx context.Context, at uint64, topic, payload []byte) (uint64, error) {
	if len(topic) == 0 || len(topic) > record.MaxTopic {
		return 0, ErrBadTopic
	}
	size := wire.PublishOverhead + len(topic) + len(payload)
	if why := c.misfit(len(topic), size); why != "" {
		return 0, fmt.Errorf("%w: %s", ErrTooLarge, why)
	}
	cn := c.conn
	for {
		if err := cn.lock(); err != nil {
			return 0, err
		}
		if at != 0 {
			c.nextSeq = at
		}
		if !c.fullLocked(cn, size) {
			seq := c.nextSeq
			c.nextSeq++
			wasEmpty := len(cn.wbuf) == 0
			cn.wbuf = wire.AppendPublish(cn.wbuf, seq, c.cfg.ack, topic, payload)
			cn.unlock(wasEmpty)
			return seq, nil
		}
		cn.wmu.Unlock()
		if err := c.waitProgress(ctx, cn, func() bool {
			cn.wmu.Lock()
			defer cn.wmu.Unlock()
			return cn.ending || !c.fullLocked(cn, size)
		}); err != nil {
			return 0, err
		}
	}
}

// misfit says why a publish with a topic of topicLen bytes in a frame of
// size bytes exceeds the client's limits or those the server announced at
// logon ("N bytes > max-frame M", "topic of N bytes > max-topic M"), or
// returns "" when it fits (without allocating). The server refuses such a
// message with CodeTooLarge.
func (c *Client) misfit(topicLen, size int) string {
	if m := c.conn.srvMaxTopic; m > 0 && topicLen > m {
		return fmt.Sprintf("topic of %d bytes > max-topic %d", topicLen, m)
	}
	maxFrame := c.cfg.maxFrame
	if m := c.conn.srvMaxFrame; m > 0 {
		maxFrame = min(maxFrame, m)
	}
	if size > maxFrame {
		return fmt.Sprintf("%d bytes > max-frame %d", size, maxFrame)
	}
	return ""
}

// fullLocked reports whether a publish of size bytes must wait: the window
// of unacknowledged messages is full, or the write buffer is (a frame larger
// than the buffer is taken when the buffer is empty).
func (c *Client) fullLocked(cn *conn, size int) bool {
	if acked := c.acked.Load(); c.cfg.ack != wire.AckNone && c.nextSeq > acked && c.nextSeq-acked > uint64(c.cfg.window) {
		return true
	}
	return len(cn.wbuf) > 0 && len(cn.wbuf)+size > c.cfg.writeBuffer
}

// waitProgress waits until ready() holds or something changed (an ack, a
// write, the end of the connection), or ctx ends.
func (c *Client) waitProgress(ctx context.Context, cn *conn, ready func() bool) error {
	ch := cn.progress.arm()
	defer cn.progress.disarm()
	if ready() {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-cn.done:
		return cn.err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// WaitPersisted waits until the message with publisher sequence seq is
// persisted, and returns an error matching ErrNotPersisted if the server
// refused it. It needs WithAck(wire.AckPersisted), the default.
func (c *Client) WaitPersisted(ctx context.Context, seq uint64) error {
	if c.cfg.ack != wire.AckPersisted {
		return errors.New("client: WaitPersisted needs WithAck(wire.AckPersisted); use Flush")
	}
	cn := c.conn
	for {
		if err := c.waitProgress(ctx, cn, func() bool { return c.persisted.Load() >= seq || c.refusedErr(seq) != nil }); err != nil {
			return err
		}
		if err := c.refusedErr(seq); err != nil {
			return err
		}
		if c.persisted.Load() >= seq {
			return nil
		}
	}
}

func (c *Client) refusedErr(seq uint64) error {
	if c.refusals.Load() == 0 {
		return nil
	}
	c.smu.Lock()
	defer c.smu.Unlock()
	return c.refused[seq]
}

// Flush sends a Flush and waits until the server answers that everything
// this connection sent before it is persisted. It returns an error matching
// ErrNotPersisted if the server refused the flush or has refused any message
// of this client (see Refused and WithAckHandler for which).
func (c *Client) Flush(ctx context.Context) error {
	cn := c.conn
	ch := make(chan error, 1)
	if err := cn.lock(); err != nil {
		return err
	}
	c.nextFlush++
	token := c.nextFlush
	c.smu.Lock()
	c.flushes[token] = ch
	c.smu.Unlock()
	wasEmpty := len(cn.wbuf) == 0
	cn.wbuf = wire.AppendFlush(cn.wbuf, token)
	cn.unlock(wasEmpty)

	select {
	case err := <-ch:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		c.smu.Lock()
		delete(c.flushes, token)
		c.smu.Unlock()
		return context.Cause(ctx)
	}
	if c.refusals.Load() > 0 {
		c.smu.Lock()
		err := c.firstRef
		c.smu.Unlock()
		return fmt.Errorf("%w: %d messages refused, first: %w", ErrNotPersisted, c.refusals.Load(), err)
	}
	return nil
}

// Stats asks the server for its statistics document.
func (c *Client) Stats(ctx context.Context) (*wire.Stats, error) {
	doc, err := c.StatsJSON(ctx)
	if err != nil {
		return nil, err
	}
	var s wire.Stats
	if err := json.Unmarshal(doc, &s); err != nil {
		return nil, fmt.Errorf("%w: stat reply: %w", ErrProtocol, err)
	}
	return &s, nil
}

// StatsJSON returns the server's statistics document as sent.
func (c *Client) StatsJSON(ctx context.Context) ([]byte, error) {
	cn := c.conn
	ch := make(chan statResult, 1)
	if err := cn.lock(); err != nil {
		return nil, err
	}
	c.smu.Lock()
	c.statQueue = append(c.statQueue, ch)
	c.smu.Unlock()
	wasEmpty := len(cn.wbuf) == 0
	cn.wbuf = wire.AppendStatRequest(cn.wbuf)
	cn.unlock(wasEmpty)
	select {
	case r := <-ch:
		return r.doc, r.err
	case <-ctx.Done():
		// The entry stays queued so later replies pair with later requests.
		return nil, context.Cause(ctx)
	}
}

// Close ends the connection gracefully: frames already buffered are sent,
// then the socket is closed. Messages not yet acknowledged are reported to
// the ack handler as not persisted; call Flush first to make sure they are.
// Close is idempotent and returns nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() { c.conn.close(5 * time.Second) })
	<-c.done
	return nil
}

// handleAck implements handler (reader goroutine).
func (c *Client) handleAck(cn *conn, a wire.Ack) error {
	switch a.Kind {
	case wire.AckKindReceived, wire.AckKindPersisted:
		if a.Code != wire.CodeOK {
			err := fmt.Errorf("%w: pubSeq %d: %w", ErrNotPersisted, a.Seq, serverError(a.Code, a.Text))
			if f := c.cfg.ackInfo; f != nil && a.Kind == wire.AckKindPersisted {
				f(a.Seq, 0, err)
			}
			if f := c.cfg.failedWrite; f != nil && a.Code.Permanent() {
				f(a.Seq, a.Code, string(a.Text))
			}
			c.refuse(a.Seq, err)
			cn.progress.notify()
			return nil
		}
		if f := c.cfg.ackInfo; f != nil && a.Kind == wire.AckKindPersisted {
			f(a.Seq, int(a.SyncPeers), nil)
		}
		if a.Kind == wire.AckKindPersisted && a.Seq > c.persisted.Load() {
			c.persisted.Store(a.Seq)
			if f := c.cfg.persistHook; f != nil {
				f(a.Seq)
			}
		}
		if wire.AckWanted(a.Kind) >= c.cfg.ack && c.cfg.ack != wire.AckNone {
			prev := c.acked.Load()
			if a.Seq > prev {
				c.acked.Store(a.Seq)
				if f := c.cfg.ackHandler; f != nil {
					c.reportAcked(f, prev+1, a.Seq, nil)
				}
			}
		}
		cn.progress.notify()
	case wire.AckKindFlushed:
		c.smu.Lock()
		ch, ok := c.flushes[a.Seq]
		delete(c.flushes, a.Seq)
		c.smu.Unlock()
		if ok {
			var err error
			if a.Code != wire.CodeOK {
				err = fmt.Errorf("%w: flush: %w", ErrNotPersisted, serverError(a.Code, a.Text))
			}
			ch <- err
		}
	case wire.AckKindSubscribed:
		c.smu.Lock()
		sub := c.subs[uint32(a.Seq)]
		if sub != nil && a.Code != wire.CodeOK {
			delete(c.subs, sub.ID)
		}
		c.smu.Unlock()
		if sub == nil {
			return nil
		}
		var err error
		if a.Code != wire.CodeOK {
			err = serverError(a.Code, a.Text)
		}
		select {
		case sub.ready <- err:
		default:
		}
		if err != nil {
			sub.finish(err)
		}
	case wire.AckKindUnsubscribed:
		c.smu.Lock()
		sub := c.subs[uint32(a.Seq)]
		delete(c.subs, uint32(a.Seq))
		c.smu.Unlock()
		if sub != nil {
			sub.finish(nil)
		}
	default:
		return fmt.Errorf("%w: ack kind %d", ErrProtocol, a.Kind)
	}
	return nil
}

// reportAcked calls the ack handler for from..to, skipping refused ones
// (already reported).
func (c *Client) reportAcked(f func(uint64, error), from, to uint64, err error) {
	check := c.refusals.Load() > 0
	for s := from; s <= to; s++ {
		if check && c.refusedErr(s) != nil {
			continue
		}
		f(s, err)
	}
}

func (c *Client) refuse(seq uint64, err error) {
	c.smu.Lock()
	if c.refused == nil {
		c.refused = make(map[uint64]error)
	}
	_, dup := c.refused[seq]
	if !dup {
		c.refused[seq] = err
		if c.firstRef == nil {
			c.firstRef = err
		}
	}
	c.smu.Unlock()
	if dup {
		return
	}
	c.refusals.Add(1)
	if f := c.cfg.ackHandler; f != nil {
		f(seq, err)
	}
}

// handlePosition implements handler (reader goroutine): a subscription's
// starting progress, for the HA layer's bookmark store.
func (c *Client) handlePosition(cn *conn, p wire.Position) {
	c.smu.Lock()
	s := c.subs[p.SubID]
	c.smu.Unlock()
	if s != nil && s.onPosition != nil {
		s.onPosition(p)
	}
}

// handleStatReply implements handler (reader goroutine).
func (c *Client) handleStatReply(cn *conn, doc []byte) {
	c.smu.Lock()
	if len(c.statQueue) == 0 {
		c.smu.Unlock()
		return
	}
	ch := c.statQueue[0]
	c.statQueue = c.statQueue[1:]
	c.smu.Unlock()
	ch <- statResult{doc: append([]byte(nil), doc...)}
}

// connEnded implements handler: it fails everything still waiting on the
// connection (reader goroutine, after the socket closed).
func (c *Client) connEnded(cn *conn, err error) {
	cn.wmu.Lock()
	last := c.nextSeq - 1 // stable: the conn accepts no more publishes
	cn.wmu.Unlock()
	if f := c.cfg.ackHandler; f != nil && c.cfg.ack != wire.AckNone {
		if prev := c.acked.Load(); last > prev {
			c.reportAcked(f, prev+1, last, err)
		}
	}
	c.smu.Lock()
	subs := c.subs
	c.subs = map[uint32]*Subscription{}
	flushes := c.flushes
	c.flushes = map[uint64]chan error{}
	stats := c.statQueue
	c.statQueue = nil
	c.smu.Unlock()
	for _, ch := range flushes {
		ch <- err
	}
	for _, ch := range stats {
		ch <- statResult{err: err}
	}
	for _, s := range subs {
		select {
		case s.ready <- err:
		default:
		}
		s.finish(err)
	}
	if f := c.cfg.errorHandler; f != nil && !errors.Is(err, ErrClosed) {
		f(err)
	}
	c.err = err
	close(c.done)
}
