package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// handler receives what a conn reads. Its methods run on the conn's reader
// goroutine, one frame at a time; slices in their arguments are views into
// the read buffer, valid only during the call.
type handler interface {
	handleAck(cn *conn, a wire.Ack) error
	handleDeliver(cn *conn, d wire.Deliver) error
	handleStatReply(cn *conn, doc []byte)
	handlePosition(cn *conn, p wire.Position)
	// connEnded is called once, after the reader has stopped and the socket
	// is closed, with the first cause of the end.
	connEnded(cn *conn, err error)
}

// conn is one logged-on connection: the socket, one reader goroutine, one
// writer goroutine and the write buffer they share with publishers. It knows
// nothing of publish windows or subscriptions: inbound frames go to its
// handler. A conn is never reused: when it ends, the owner (today the
// Client, later the HA layer) replaces it with a new one.
type conn struct {
	nc       net.Conn
	h        handler
	maxFrame int
	// idle is how long the reader waits for a byte before declaring the
	// server dead; 0: two granted heartbeat intervals.
	idle time.Duration
	// beforeWrite, if set, runs on the writer before each socket write (the
	// HA client's publish store makes the batch durable there first).
	beforeWrite func() error
	onWriteErr  func(error)

	// From the logon reply.
	version     uint16
	heartbeat   time.Duration // granted interval; 0: none
	lastPubSeq  uint64
	ackedPubSeq uint64 // top of the run the ack point covers (<= lastPubSeq)
	srvMaxFrame int    // the server's limits; 0: not announced (version 1)
	srvMaxTopic int
	instance    string

	wmu    sync.Mutex
	wbuf   []byte // encoded frames waiting for the writer; guarded by wmu
	ending bool   // guarded by wmu: no more frames are accepted
	kick   chan struct{}
	spare  []byte // the writer's second buffer, swapped with wbuf

	// progress is notified when the writer drained a buffer, when acks
	// arrive and when the conn ends: whatever a blocked publisher waits for.
	progress signal

	rbuf     []byte // read buffer; rbuf[rstart:rend] is unparsed input
	rstart   int
	rend     int
	lastRecv atomic.Int64 // unix nanos of the last read; for tests and stats
	closing  chan struct{}
	// closeRequested: Close was called, so the end is ErrClosed whatever
	// the socket reports.
	closeRequested atomic.Bool
	done           chan struct{} // closed when the conn ended (err is set)
	endOnce        sync.Once
	err            error
	readerDone     chan struct{}
	writerDone     chan struct{}
}

// dial connects to addr and logs on; start then starts the conn.
func dial(ctx context.Context, addr string, cfg *config, h handler) (*conn, error) {
	if cfg.dialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.dialTimeout)
		defer cancel()
	}
	d := cfg.dial
	if d == nil {
		var nd net.Dialer
		d = nd.DialContext
	}
	nc, err := d(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true) // the writer batches; no Nagle delay on top
	}
	if cfg.tls != nil {
		if nc, err = startTLS(ctx, nc, addr, cfg.tls); err != nil {
			return nil, err
		}
	}
	cn := &conn{
		nc:          nc,
		h:           h,
		maxFrame:    cfg.maxFrame,
		idle:        cfg.idleTimeout,
		beforeWrite: cfg.beforeWrite,
		onWriteErr:  cfg.errorHandler,
		kick:        make(chan struct{}, 1),
		closing:     make(chan struct{}),
		done:        make(chan struct{}),
		readerDone:  make(chan struct{}),
		writerDone:  make(chan struct{}),
		rbuf:        make([]byte, max(cfg.readBuffer, 4096)),
		wbuf:        make([]byte, 0, cfg.writeBuffer+cfg.writeBuffer/4),
		spare:       make([]byte, 0, cfg.writeBuffer+cfg.writeBuffer/4),
	}
	if err := cn.logon(ctx, cfg); err != nil {
		nc.Close()
		return nil, err
	}
	return cn, nil
}

// start starts the reader and writer; the owner calls it once it has taken
// what it needs from the logon reply.
func (cn *conn) start() {
	go cn.readLoop()
	go cn.writeLoop()
}

// logon sends Logon and reads LogonReply (or an Error) under ctx.
func (cn *conn) logon(ctx context.Context, cfg *config) error {
	if dl, ok := ctx.Deadline(); ok {
		cn.nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { cn.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	hb := cfg.heartbeat.Milliseconds()
	if cfg.heartbeat > 0 && hb == 0 {
		hb = 1
	}
	req := wire.AppendLogon(nil, &wire.Logon{
		MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion,
		HeartbeatMillis: uint32(min(hb, 1<<32-1)),
		Name:            []byte(cfg.name), Credentials: cfg.credentials,
	})
	if _, err := cn.nc.Write(req); err != nil {
		return cn.logonErr(ctx, err)
	}
	for {
		f, n, err := wire.Split(cn.rbuf[cn.rstart:cn.rend], cn.maxFrame)
		if err != nil {
			return fmt.Errorf("%w: logon reply: %w", ErrProtocol, err)
		}
		if n == 0 {
			if err := cn.fill(); err != nil {
				return cn.logonErr(ctx, err)
			}
			continue
		}
		cn.rstart += n
		switch f.Type {
		case wire.TypeHeartbeat:
			continue
		case wire.TypeError:
			var e wire.Error
			if err := wire.DecodeError(f.Body, &e); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			return serverError(e.Code, e.Text)
		case wire.TypeLogonReply:
			var r wire.LogonReply
			if err := wire.DecodeLogonReply(f.Body, &r); err != nil {
				return fmt.Errorf("%w: %w", ErrProtocol, err)
			}
			if r.Version < wire.MinVersion || r.Version > wire.MaxVersion {
				return fmt.Errorf("%w: server chose version %d", ErrVersion, r.Version)
			}
			cn.version = r.Version
			cn.heartbeat = time.Duration(r.HeartbeatMillis) * time.Millisecond
			cn.lastPubSeq = r.LastPubSeq
			cn.ackedPubSeq = min(r.AckedPubSeq, r.LastPubSeq)
			cn.srvMaxFrame, cn.srvMaxTopic = int(r.MaxFrame), int(r.MaxTopic)
			cn.instance = string(r.Instance)
			if !stop() {
				return cn.logonErr(ctx, context.Cause(ctx))
			}
			cn.nc.SetDeadline(time.Time{})
			return nil
		default:
			return fmt.Errorf("%w: %s frame before logon reply", ErrProtocol, f.Type)
		}
	}
}

func (cn *conn) logonErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("client: logon: %w", context.Cause(ctx))
	}
	return fmt.Errorf("client: logon: %w", err)
}

// fill reads more input into rbuf, first making room: unparsed bytes move to
// the front, and the buffer grows to hold a frame larger than itself.
func (cn *conn) fill() error {
	if cn.rstart == cn.rend {
		cn.rstart, cn.rend = 0, 0
	}
	if need := wire.Need(cn.rbuf[cn.rstart:cn.rend]); need > len(cn.rbuf)-cn.rstart {
		if need > len(cn.rbuf) {
			nb := make([]byte, need)
			copy(nb, cn.rbuf[cn.rstart:cn.rend])
			cn.rbuf = nb
		} else {
			copy(cn.rbuf, cn.rbuf[cn.rstart:cn.rend])
		}
		cn.rend -= cn.rstart
		cn.rstart = 0
	} else if cn.rend == len(cn.rbuf) {
		copy(cn.rbuf, cn.rbuf[cn.rstart:cn.rend])
		cn.rend -= cn.rstart
		cn.rstart = 0
	}
	n, err := cn.nc.Read(cn.rbuf[cn.rend:])
	cn.rend += n
	if n > 0 {
		cn.lastRecv.Store(time.Now().UnixNano())
		return nil
	}
	return err
}

// readLoop is the reader goroutine: it decodes frames in place and hands
// them to the handler until the socket fails or the conn ends.
func (cn *conn) readLoop() {
	defer func() {
		close(cn.readerDone)
		cn.h.connEnded(cn, cn.err)
	}()
	for {
		for {
			f, n, err := wire.Split(cn.rbuf[cn.rstart:cn.rend], cn.maxFrame)
			if err != nil {
				cn.end(fmt.Errorf("%w: %w", ErrProtocol, err))
				return
			}
			if n == 0 {
				break
			}
			cn.rstart += n
			if err := cn.dispatch(f); err != nil {
				cn.end(err)
				return
			}
		}
		idle := cn.idleLimit()
		if idle > 0 {
			cn.nc.SetReadDeadline(time.Now().Add(idle))
		}
		err := cn.fill()
		if err != nil && idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			// The deadline timer can fire before a starved reader sees
			// bytes that did arrive: look once more before declaring the
			// server dead (a read with a live deadline tries the socket).
			cn.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
			if err = cn.fill(); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w: nothing from the server for %v", ErrHeartbeatTimeout, idle)
			}
		}
		if err != nil {
			cn.end(err)
			return
		}
	}
}

// idleLimit is the silence after which the server is considered dead.
func (cn *conn) idleLimit() time.Duration {
	if cn.heartbeat <= 0 {
		return 0
	}
	if cn.idle > 0 {
		return cn.idle
	}
	return 2 * cn.heartbeat
}

func (cn *conn) dispatch(f wire.Frame) error {
	switch f.Type {
	case wire.TypeAck:
		var a wire.Ack
		if err := wire.DecodeAck(f.Body, &a); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return cn.h.handleAck(cn, a)
	case wire.TypeDeliver:
		var d wire.Deliver
		if err := wire.DecodeDeliver(f.Body, &d); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return cn.h.handleDeliver(cn, d)
	case wire.TypeHeartbeat:
		return nil
	case wire.TypePosition:
		// A subscription's starting progress per origin: the HA client's
		// bookmark store keeps it for resuming on another instance.
		var p wire.Position
		if err := wire.DecodePosition(f.Body, &p); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		cn.h.handlePosition(cn, p)
		return nil
	case wire.TypeStatReply:
		cn.h.handleStatReply(cn, f.Body)
		return nil
	case wire.TypeError:
		var e wire.Error
		if err := wire.DecodeError(f.Body, &e); err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return serverError(e.Code, e.Text)
	}
	return fmt.Errorf("%w: unexpected %s frame", ErrProtocol, f.Type)
}

// writeLoop is the writer goroutine: it swaps the shared write buffer for
// its spare one and writes the whole batch with one call, and sends a
// heartbeat when it has written nothing for half an interval.
func (cn *conn) writeLoop() {
	defer close(cn.writerDone)
	var tick <-chan time.Time
	if cn.heartbeat > 0 {
		t := time.NewTicker(max(cn.heartbeat/2, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	wrote := false
	draining := false
	for {
		select {
		case <-cn.kick:
		case <-tick:
			if !wrote {
				cn.wmu.Lock()
				if len(cn.wbuf) == 0 {
					cn.wbuf = wire.AppendHeartbeat(cn.wbuf)
				}
				cn.wmu.Unlock()
			}
			wrote = false
		case <-cn.closing:
			draining = true
		case <-cn.done:
			return
		}
		cn.wmu.Lock()
		buf := cn.wbuf
		cn.wbuf = cn.spare[:0]
		cn.wmu.Unlock()
		if len(buf) > 0 {
			if cn.beforeWrite != nil {
				if err := cn.beforeWrite(); err != nil && cn.onWriteErr != nil {
					cn.onWriteErr(err)
				}
			}
			if _, err := cn.nc.Write(buf); err != nil {
				cn.end(err)
				return
			}
			wrote = true
		}
		cn.spare = buf[:0]
		cn.progress.notify()
		if draining {
			return
		}
	}
}

// lock takes the write lock if the conn still accepts frames. On success the
// caller appends to wbuf and calls unlock.
func (cn *conn) lock() error {
	cn.wmu.Lock()
	if cn.ending {
		cn.wmu.Unlock()
		return cn.endErr()
	}
	return nil
}

// unlock releases the write lock and wakes the writer if the buffer was
// empty before the caller appended (a non-empty buffer already has a wake-up
// pending or the writer is busy and will look again).
func (cn *conn) unlock(wasEmpty bool) {
	cn.wmu.Unlock()
	if wasEmpty {
		select {
		case cn.kick <- struct{}{}:
		default:
		}
	}
}

// endErr is the error for an operation on an ending or ended conn.
func (cn *conn) endErr() error {
	if !cn.closeRequested.Load() {
		// The connection is ending on its own (peer gone, protocol error):
		// end() is about to publish the cause; report that, not ErrClosed.
		<-cn.done
		return cn.err
	}
	select {
	case <-cn.done:
		return cn.err
	default:
		return ErrClosed // Close in progress
	}
}

// end records the first cause of the conn's end, closes the socket (which
// stops the reader and the writer) and wakes every waiter.
func (cn *conn) end(err error) {
	cn.endOnce.Do(func() {
		cn.wmu.Lock()
		cn.ending = true
		cn.wmu.Unlock()
		if cn.closeRequested.Load() {
			err = ErrClosed // whatever the socket said after we closed it
		}
		cn.err = disconnected(err)
		close(cn.done)
		cn.nc.Close()
		cn.progress.notify()
	})
}

// close ends the conn gracefully: no more frames are accepted, the writer
// sends what is buffered, the write side is shut so the server sees the end
// of the stream, and the reader keeps handling acks until the server closes
// its side (by then it has released the client name). timeout bounds it all.
func (cn *conn) close(timeout time.Duration) {
	cn.closeRequested.Store(true)
	cn.wmu.Lock()
	already := cn.ending
	cn.ending = true
	cn.wmu.Unlock()
	if !already {
		deadline := time.Now().Add(timeout)
		cn.nc.SetWriteDeadline(deadline)
		close(cn.closing)
		<-cn.writerDone
		if cw, ok := cn.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			t := time.NewTimer(time.Until(deadline))
			select {
			case <-cn.readerDone:
			case <-t.C:
			}
			t.Stop()
		}
	}
	cn.end(ErrClosed)
	<-cn.readerDone
	<-cn.writerDone
}

// signal is a broadcast for waiters that re-check a condition: a waiter
// arms it, re-checks, then waits on the channel; notify closes the channel.
// notify costs one atomic load when nobody waits.
type signal struct {
	waiters atomic.Int32
	mu      sync.Mutex
	ch      chan struct{}
}

func (s *signal) arm() <-chan struct{} {
	s.mu.Lock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	ch := s.ch
	s.waiters.Add(1)
	s.mu.Unlock()
	return ch
}

func (s *signal) disarm() { s.waiters.Add(-1) }

func (s *signal) notify() {
	if s.waiters.Load() == 0 {
		return
	}
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}
