package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// Message is one delivered message. A Message passed to a WithHandler
// function is reused: it and its Topic and Payload are valid only during
// the call (they are views into the read buffer); copy what you keep. A
// Message received from Subscription.C is the application's own.
type Message struct {
	SubID    uint32
	Topic    []byte
	Payload  []byte
	Time     time.Time       // when the origin instance stored it
	Bookmark record.Bookmark // names this message; resume after it with From(Bookmark(b))
	Seq      uint64          // position in the delivering instance's journal (= Bookmark.Seq)
	// Origin and OriginSeq name the message's place in the stream of the
	// instance it was first published to: the same on every instance.
	Origin    uint64
	OriginSeq uint64
	// SubName is the HA subscription's id (WithSubID) for BookmarkStore.Discard;
	// empty for other subscriptions.
	SubName string
}

func (m *Message) fill(subID uint32, v record.View) {
	m.SubID = subID
	m.Topic = v.Topic()
	m.Payload = v.Payload()
	m.Time = time.Unix(0, v.Time())
	m.Bookmark = v.Bookmark()
	m.Seq = m.Bookmark.Seq
	m.Origin = v.Origin()
	m.OriginSeq = v.OriginSeq()
}

// clone returns a copy whose slices share one new allocation.
func (m *Message) clone() *Message {
	buf := make([]byte, len(m.Topic)+len(m.Payload))
	n := copy(buf, m.Topic)
	copy(buf[n:], m.Payload)
	cp := *m
	cp.Topic = buf[:n:n]
	cp.Payload = buf[n:]
	return &cp
}

// Start says where a subscription begins: Epoch, Now, Bookmark(b) or
// Time(t).
type Start struct {
	kind     wire.StartKind
	bookmark record.Bookmark
	at       int64              // StartTime: Unix nanoseconds
	resume   []wire.ResumeEntry // StartResume (set by the HA client)
}

// startMostRecent is MostRecent's kind: resolved by the HA client.
const startMostRecent wire.StartKind = 255

// Subscription starting points.
var (
	// Epoch replays the whole journal, then continues live.
	Epoch = Start{kind: wire.StartEpoch}
	// Now delivers only messages stored after the subscription (the default).
	Now = Start{kind: wire.StartNow}
)

// Bookmark starts right after the message b names.
func Bookmark(b record.Bookmark) Start { return Start{kind: wire.StartBookmark, bookmark: b} }

// Time starts at the first message, in the serving instance's journal
// order, stored at or after t, and delivers everything after it (see
// docs/wire.md 10.3: a position, not a filter).
func Time(t time.Time) Start { return Start{kind: wire.StartTime, at: t.UnixNano()} }

// SubOption configures Subscribe.
type SubOption func(*subConfig)

type subConfig struct {
	start      Start
	match      wire.MatchKind
	handler    func(*Message)
	buffer     int
	fromSet    bool
	subName    string              // WithSubID (HA client)
	onPosition func(wire.Position) // set by the HA client
}

// From sets where the subscription starts (default Now).
func From(s Start) SubOption { return func(c *subConfig) { c.start, c.fromSet = s, true } }

// Prefix matches every topic that starts with the subscription topic.
func Prefix() SubOption { return func(c *subConfig) { c.match = wire.MatchPrefix } }

// Regex matches topics against the subscription topic as a Go RE2 regular
// expression (unanchored unless it says ^...$).
func Regex() SubOption { return func(c *subConfig) { c.match = wire.MatchRegex } }

// WithHandler delivers messages by calling f on the client's reader
// goroutine instead of through Subscription.C. The *Message and its slices
// are valid only during the call. f must not block for long: while it runs
// the connection reads nothing (acks and heartbeats included), and it must
// not call Subscribe, Unsubscribe (use a goroutine), Flush or Stats on the
// same client, which wait for the reader.
func WithHandler(f func(m *Message)) SubOption { return func(c *subConfig) { c.handler = f } }

// WithBuffer sets the capacity of Subscription.C (default 1024). When it is
// full the reader waits, and the server stops sending: a slow consumer is
// served from the server's journal, not from memory.
func WithBuffer(n int) SubOption {
	return func(c *subConfig) {
		if n >= 0 {
			c.buffer = n
		}
	}
}

// Subscription is an active subscription.
type Subscription struct {
	ID    uint32
	Topic string
	// C delivers copied messages in journal order, unless WithHandler was
	// given (then it is nil). It is closed when the subscription ends:
	// after Unsubscribe, or when the connection ends (see Err).
	C <-chan *Message

	c          *Client
	ch         chan *Message
	handler    func(*Message)
	onPosition func(wire.Position)
	ready      chan error    // the Subscribed ack (or refusal)
	stopping   atomic.Bool   // deliveries from now on are dropped
	stop       chan struct{} // closed with stopping: unblocks the reader
	stopOnce   sync.Once
	done       chan struct{} // closed by finish
	err        error         // set before done is closed
}

// Subscribe starts a subscription to topic and waits until the server has
// accepted it. Refusals come back as *ServerError (ErrBadPattern,
// ErrBadBookmark, ...).
func (c *Client) Subscribe(ctx context.Context, topic string, opts ...SubOption) (*Subscription, error) {
	sc := subConfig{start: Now, buffer: 1024}
	for _, o := range opts {
		o(&sc)
	}
	if topic == "" || len(topic) > record.MaxTopic {
		return nil, ErrBadTopic
	}
	if sc.start.kind == startMostRecent {
		return nil, errors.New("client: From(MostRecent) needs the HA client and WithSubID")
	}
	s := &Subscription{
		Topic:      topic,
		c:          c,
		handler:    sc.handler,
		onPosition: sc.onPosition,
		ready:      make(chan error, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if sc.handler == nil {
		s.ch = make(chan *Message, sc.buffer)
		s.C = s.ch
	}
	cn := c.conn
	if err := cn.lock(); err != nil {
		return nil, err
	}
	c.smu.Lock()
	c.nextSubID++
	s.ID = c.nextSubID
	c.subs[s.ID] = s
	c.smu.Unlock()
	wasEmpty := len(cn.wbuf) == 0
	switch sc.start.kind {
	case wire.StartBookmark:
		cn.wbuf = wire.AppendSubscribe(cn.wbuf, s.ID, sc.start.kind, sc.match, []byte(topic), sc.start.bookmark)
	case wire.StartResume:
		cn.wbuf = wire.AppendSubscribeResume(cn.wbuf, s.ID, sc.match, []byte(topic), sc.start.resume)
	case wire.StartTime:
		cn.wbuf = wire.AppendSubscribeTime(cn.wbuf, s.ID, sc.match, []byte(topic), sc.start.at)
	default:
		cn.wbuf = wire.AppendSubscribe(cn.wbuf, s.ID, sc.start.kind, sc.match, []byte(topic))
	}
	cn.unlock(wasEmpty)

	select {
	case err := <-s.ready:
		if err != nil {
			return nil, err
		}
		return s, nil
	case <-ctx.Done():
		s.cancel()
		return nil, context.Cause(ctx)
	}
}

// Unsubscribe ends the subscription and waits for the server to confirm
// (or the connection to end). Deliveries that arrive meanwhile are dropped.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	s.cancel()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// cancel stops deliveries and sends Unsubscribe once.
func (s *Subscription) cancel() {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.stop)
		cn := s.c.conn
		if cn.lock() != nil {
			return // the connection is ending: connEnded finishes s
		}
		wasEmpty := len(cn.wbuf) == 0
		cn.wbuf = wire.AppendUnsubscribe(cn.wbuf, s.ID)
		cn.unlock(wasEmpty)
	})
}

// Done is closed when the subscription has ended.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended: nil while active and after
// Unsubscribe, the refusal or the connection's error otherwise.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// finish ends s; called on the reader goroutine only (the only sender on
// s.ch), by whoever removed s from Client.subs.
func (s *Subscription) finish(err error) {
	s.err = err
	if s.ch != nil {
		close(s.ch)
	}
	close(s.done)
}

// handleDeliver implements handler (reader goroutine). It does not allocate
// for WithHandler subscriptions.
func (c *Client) handleDeliver(cn *conn, d wire.Deliver) error {
	c.smu.Lock()
	s := c.subs[d.SubID]
	c.smu.Unlock()
	if s == nil || s.stopping.Load() {
		return nil // unknown, or unsubscribing: a late delivery
	}
	m := &c.msg
	m.fill(d.SubID, d.Record)
	if s.handler != nil {
		s.handler(m)
		*m = Message{}
		return nil
	}
	cp := m.clone()
	*m = Message{}
	select {
	case s.ch <- cp:
	case <-s.stop:
	case <-cn.done:
	}
	return nil
}
