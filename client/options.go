package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// Option configures Connect.
type Option func(*config)

// Dialer opens the byte stream to a server; net.Dialer.DialContext fits.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

type config struct {
	name         string
	credentials  []byte
	heartbeat    time.Duration
	window       int
	ack          wire.AckWanted
	ackHandler   func(pubSeq uint64, err error)
	errorHandler func(error)
	dial         Dialer
	dialTimeout  time.Duration
	maxFrame     int
	readBuffer   int
	writeBuffer  int
	idleTimeout  time.Duration
	ackInfo      func(pubSeq uint64, syncPeers int, err error)
	failedWrite  func(pubSeq uint64, code wire.Code, reason string)
	tls          *tls.Config // nil: plaintext (security.go)

	// Set by the HA client.
	persistHook func(pubSeq uint64) // the persisted ack advanced to pubSeq (reader goroutine)
	beforeWrite func() error        // runs on the writer before each socket write
}

// Defaults.
const (
	DefaultHeartbeat   = 5 * time.Second
	DefaultWindow      = 65536
	DefaultDialTimeout = 10 * time.Second
	defaultReadBuffer  = 256 << 10
	defaultWriteBuffer = 256 << 10
)

func defaultConfig() config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "tandem-client"
	}
	return config{
		name:        fmt.Sprintf("%s-%d", host, os.Getpid()),
		heartbeat:   DefaultHeartbeat,
		window:      DefaultWindow,
		ack:         wire.AckPersisted,
		dialTimeout: DefaultDialTimeout,
		maxFrame:    wire.DefaultMaxFrame,
		readBuffer:  defaultReadBuffer,
		writeBuffer: defaultWriteBuffer,
	}
}

// WithName sets the client name, which is also the publisher identity the
// server de-duplicates on. Default: hostname-pid. Two live connections must
// not share a name (the second is refused with ErrNameInUse).
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithCredentials sets the credentials sent at logon.
func WithCredentials(cred []byte) Option {
	return func(c *config) { c.credentials = append([]byte(nil), cred...) }
}

// WithHeartbeat sets the heartbeat interval asked of the server (the server
// may grant another). Zero disables heartbeats. Default 5s.
func WithHeartbeat(d time.Duration) Option { return func(c *config) { c.heartbeat = d } }

// WithWindow bounds the messages published but not yet acknowledged at the
// requested ack level; Publish blocks while the window is full. Default 65536.
// It does not apply with AckNone.
func WithWindow(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.window = n
		}
	}
}

// WithAck sets the acknowledgement every publish asks for:
// wire.AckPersisted (default), wire.AckReceived or wire.AckNone.
func WithAck(level wire.AckWanted) Option { return func(c *config) { c.ack = level } }

// WithAckHandler registers a function called once for every published
// message with AckPersisted or AckReceived: err == nil when the server
// acknowledged it at that level, otherwise the reason it was not (a refusal
// matching ErrNotPersisted, or the connection's end matching ErrDisconnected).
// Calls come in pubSeq order from the client's reader goroutine: the function
// must not block, and must not call Publish with a full window.
func WithAckHandler(f func(pubSeq uint64, err error)) Option {
	return func(c *config) { c.ackHandler = f }
}

// WithAckInfoHandler registers a function called for every persisted Ack
// frame the server sends (with WithAck(wire.AckPersisted), the default):
// pubSeq is the ack's cumulative sequence (everything up to it is
// persisted) and syncPeers how many sync replication destinations held all
// of it when the server sent the ack (0: this server's disk only; always 0
// from a version 1 server), err nil; for a refused publish, pubSeq is the
// refused message, syncPeers 0 and err the refusal (matching
// ErrNotPersisted). A publisher that needs "on two disks" waits for an ack
// at or past its message with syncPeers >= 1. Calls come in order from the
// connection's reader goroutine and must not block. With the HA client,
// pass it in HAConfig.Options; it then sees the acks of every connection.
func WithAckInfoHandler(f func(pubSeq uint64, syncPeers int, err error)) Option {
	return func(c *config) { c.ackInfo = f }
}

// WithFailedWriteHandler registers a function called once for each message
// refused permanently: by the server with a code for which
// wire.Code.Permanent is true (too-large, bad topic, sequence-reused,
// not-permitted), or, by the HA client, before sending, when the message
// cannot fit the limits the server announced at logon (code
// wire.CodeTooLarge or wire.CodeBadTopic, reason "N bytes > max-frame M").
// Retrying such a message cannot succeed: the HA client removes it from
// its PublishStore and goes on with the rest on the same connection. The
// single-connection Client calls it from its reader goroutine (it must not
// block); the HA client from its event goroutine (see HAConfig.OnState).
// Without a handler, the HA client reports each one to HAConfig.OnError.
func WithFailedWriteHandler(f func(pubSeq uint64, code wire.Code, reason string)) Option {
	return func(c *config) { c.failedWrite = f }
}

// WithErrorHandler registers a function called once, from the reader
// goroutine, with the error that ended the connection (not after Close).
func WithErrorHandler(f func(error)) Option { return func(c *config) { c.errorHandler = f } }

// WithDialer replaces the TCP dialer.
func WithDialer(d Dialer) Option { return func(c *config) { c.dial = d } }

// WithDialTimeout bounds dialing and logon when ctx has no earlier deadline.
// Default 10s.
func WithDialTimeout(d time.Duration) Option { return func(c *config) { c.dialTimeout = d } }

// WithMaxFrame sets the largest frame the client sends or accepts. It must
// not exceed the server's. Default wire.DefaultMaxFrame.
func WithMaxFrame(n int) Option {
	return func(c *config) {
		if n >= wire.HeaderSize+64 {
			c.maxFrame = n
		}
	}
}

// WithWriteBuffer sets how many encoded bytes may wait for the writer before
// Publish blocks (the writer sends them in one write). Default 256 KiB; a
// single larger frame is always accepted.
func WithWriteBuffer(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.writeBuffer = n
		}
	}
}

// WithIdleTimeout sets how long the client waits without a byte from the
// server before it declares the connection dead (ErrHeartbeatTimeout).
// Default: two granted heartbeat intervals. It needs heartbeats (the server
// sends one after an interval without other output).
func WithIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }
