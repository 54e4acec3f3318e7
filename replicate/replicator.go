package replicate

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/internal/rsm"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/uring"
	"github.com/tandemhq/tandem/wire"
)

// Store is what a Replicator needs from the server: storing records that a
// peer shipped, with exact de-duplication on (publisher, publisher
// sequence). It returns the local seq whose durability covers the batch.
type Store interface {
	StoreReplicated(recs []record.View, via uint64) (waitFor uint64, err error)
}

// Replicator runs every replication link of one instance.
//
// Lock order: Replicator.mu, then destination.mu, then source.mu.
type Replicator struct {
	cfg       Config
	log       *slog.Logger
	j         *journal.Journal
	store     Store
	onAdvance func()
	self      uint64
	hooks     StageHooks // set before Start (SetStageHooks)

	dests   []*destination
	byName  map[string]*destination
	sources sync.Map // peer name -> *source

	mu    sync.Mutex
	links map[string]*link // the active link per peer name

	// allowed: the peer names accepted (Destinations, ReceiveOnly ones
	// included). handshakes: accepted connections not yet proven.
	allowed    map[string]bool
	handshakes atomic.Int32
	limit      logLimiter
	// refusals counts handshakes that failed, either side (tests, stat).
	refusals atomic.Int64

	ln        net.Listener
	addr      atomic.Pointer[net.Addr] // ln's address, for Addr from any goroutine
	syncPoint atomic.Uint64
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	// evaluator's view of when each synced position appeared (for lag)
	samples []sample
	// saved: the positions last written per file (evaluator only), so an
	// unchanged position is not rewritten; saveErr: a failure was logged.
	saved   map[string]position
	saveErr bool
	// holdSamples: (synced seq, record bytes written) every hold check,
	// for estimating the bytes a destination has not acknowledged.
	holdSamples []holdSample

	// ioMode is the link I/O in effect: cfg.IO, or IONet when io_uring
	// cannot be used here. zcOK: ring links may use SENDMSG_ZC. keepZC
	// (tests, benchmarks) keeps zero copy on where the kernel copies.
	ioMode string
	zcOK   bool
	keepZC bool
	io     ioStats
}

type sample struct {
	seq uint64
	at  time.Time
}

// New validates cfg and prepares a Replicator; Start begins.
func New(cfg Config, j *journal.Journal, store Store, onAdvance func(), log *slog.Logger) (*Replicator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	if onAdvance == nil {
		onAdvance = func() {}
	}
	r := &Replicator{
		cfg: cfg, log: log.With("component", "replication"), j: j, store: store, onAdvance: onAdvance,
		self: record.OriginEpochID(cfg.Self, cfg.JournalID, cfg.Epoch), byName: map[string]*destination{}, links: map[string]*link{},
		saved: map[string]position{}, allowed: map[string]bool{},
	}
	for _, d := range cfg.Destinations {
		r.allowed[d.Name] = true
		if d.ReceiveOnly {
			continue
		}
		ds := newDestination(r, d)
		r.dests = append(r.dests, ds)
		r.byName[d.Name] = ds
	}
	r.chooseIO()
	st := j.Stats()
	r.holdSamples = append(r.holdSamples, holdSample{seq: st.SyncedSeq, written: st.WrittenBytes})
	r.loadPositions()
	r.recomputeSyncPoint()
	return r, nil
}

// chooseIO resolves cfg.IO: IORing needs io_uring (uring.Available) with
// SENDMSG; zero copy needs SENDMSG_ZC (Linux >= 6.1) as well.
func (r *Replicator) chooseIO() {
	r.ioMode = r.cfg.IO
	if r.ioMode != IORing {
		return
	}
	if err := uring.Available(); err != nil {
		r.log.Warn("replication links use net I/O", "reason", err)
		r.ioMode = IONet
		return
	}
	ring, err := uring.New(uring.Options{Entries: 2})
	if err != nil {
		r.log.Warn("replication links use net I/O", "reason", err)
		r.ioMode = IONet
		return
	}
	defer ring.Close()
	p, err := ring.Probe()
	if err != nil || !p.Supports(uring.OpSendmsg) {
		r.log.Warn("replication links use net I/O: the kernel lacks IORING_OP_SENDMSG", "err", err)
		r.ioMode = IONet
		return
	}
	r.zcOK = r.cfg.ZeroCopyMin >= 0 && p.Supports(uring.OpSendmsgZC)
	r.log.Info("replication links use io_uring", "zero_copy", r.zcOK, "zero_copy_min", r.cfg.ZeroCopyMin)
}

// Start opens the replication listener and starts dialing destinations.
func (r *Replicator) Start() error {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if r.cfg.Listen != "" {
		var lc net.ListenConfig
		if r.ioMode == IORing {
			// Go listens with MPTCP where the kernel has it, and an MPTCP
			// socket (even one fallen back to plain TCP) refuses zero-copy
			// sends with EOPNOTSUPP.
			lc.SetMultipathTCP(false)
		}
		ln, err := lc.Listen(context.Background(), "tcp", r.cfg.Listen)
		if err != nil {
			return fmt.Errorf("replicate: listen %s: %w", r.cfg.Listen, err)
		}
		if r.cfg.TLS != nil {
			ln = tls.NewListener(ln, r.cfg.TLS)
		}
		r.ln = ln
		a := ln.Addr()
		r.addr.Store(&a)
		r.wg.Add(1)
		go r.acceptLoop()
		r.log.Info("replication listening", "addr", ln.Addr().String())
	}
	for _, d := range r.dests {
		if d.cfg.Addr != "" {
			r.wg.Add(1)
			go r.dialLoop(d)
		}
	}
	r.wg.Add(1)
	go r.evaluateLoop()
	return nil
}

// Addr returns the replication listener's address (nil if none).
func (r *Replicator) Addr() net.Addr {
	if a := r.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Close stops every link and goroutine and saves positions.
func (r *Replicator) Close() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	if r.ln != nil {
		r.ln.Close()
	}
	r.mu.Lock()
	links := make([]*link, 0, len(r.links))
	for _, l := range r.links {
		links = append(links, l)
	}
	r.mu.Unlock()
	for _, l := range links {
		l.close(errors.New("replicator closing"))
	}
	for _, d := range r.dests {
		d.stopSender()
	}
	r.wg.Wait()
	r.savePositions()
	return nil
}

// StageHooks are called at points of the replication path, for the
// engine's latency breakdown (engine/stages.go). Each gets a local seq of
// the instance that calls it; each must be cheap and not block. Nil hooks
// are not called.
type StageHooks struct {
	// Shipped: a sender wrote a batch ending at local seq through to its
	// link (any destination).
	Shipped func(through uint64)
	// PeerAck: a destination's acknowledgment of everything up to local
	// seq through arrived (any destination).
	PeerAck func(through uint64)
	// AckSent: this instance, as a destination, wrote a batch
	// acknowledgment once the records it stored up to local seq local were
	// durable here.
	AckSent func(local uint64)
}

// SetStageHooks installs the stage hooks; call it before Start.
func (r *Replicator) SetStageHooks(h StageHooks) { r.hooks = h }

// Notify tells senders that the journal has new durable records. Called
// by the server after every sync; it never blocks.
func (r *Replicator) Notify() {
	for _, d := range r.dests {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// SyncPoint is the highest local seq every sync destination (not
// downgraded) holds durably; math.MaxUint64 when there is none. A
// publisher's persisted ack for local seq L waits until L <= SyncPoint().
func (r *Replicator) SyncPoint() uint64 { return r.syncPoint.Load() }

func (r *Replicator) recomputeSyncPoint() {
	p := rsm.SyncPoint(len(r.dests), func(i int) (State, uint64) {
		d := r.dests[i]
		return d.State(), d.acked.Load()
	})
	if old := r.syncPoint.Swap(p); old != p {
		r.onAdvance()
	}
}

// SyncedPeers returns how many sync-mode destinations hold durably every
// record up to local seq seq (their acknowledged position is at or beyond
// it), whatever their state; a destination whose link is refused (a fork)
// never counts. Lock-free and allocation-free: the event loops call it on
// every persisted ack.
func (r *Replicator) SyncedPeers(seq uint64) int {
	return rsm.SyncedPeers(len(r.dests), seq, func(i int) (bool, bool, uint64) {
		d := r.dests[i]
		return d.cfg.Mode == Sync, d.forked.Load(), d.acked.Load()
	})
}

// MaxRecord returns the largest record every sync destination can take
// (the smallest of their frame limits, less a batch header), 0 when no sync
// destination's limit is known yet. The engine refuses publishes larger
// than this (too-large) before storing them; a record that still exceeds a
// destination's limit is skipped for it (Stats.SkippedTooLarge).
func (r *Replicator) MaxRecord() int {
	m := int64(0)
	for _, d := range r.dests {
		if d.cfg.Mode != Sync {
			continue
		}
		if v := d.maxRecord.Load(); v > 0 && (m == 0 || v < m) {
			m = v
		}
	}
	return int(m)
}

// crcAt returns the CRC of our journal's record at seq.
func (r *Replicator) crcAt(seq uint64) (uint32, error) {
	c, err := r.j.NewCursor(seq)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	v, ok := c.Next()
	if !ok {
		if err := c.Err(); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("replicate: seq %d is not durable", seq)
	}
	return v.CRC(), nil
}

// Hold is the lowest local seq some destination still needs: journal
// retention keeps every segment holding a seq at or above it.
func (r *Replicator) Hold() uint64 {
	h := uint64(math.MaxUint64)
	for _, d := range r.dests {
		h = min(h, d.acked.Load()+1)
	}
	return h
}

func (r *Replicator) source(peer string) *source {
	if s, ok := r.sources.Load(peer); ok {
		return s.(*source)
	}
	s, _ := r.sources.LoadOrStore(peer, &source{name: peer, id: record.ID(peer), m: rsm.NewSource(position{})})
	return s.(*source)
}

// ---- connection set-up ----

func (r *Replicator) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if r.ctx.Err() == nil {
				r.log.Warn("replication accept failed", "err", err)
			}
			return
		}
		if n := r.handshakes.Add(1); int(n) > r.cfg.MaxHandshakes {
			r.handshakes.Add(-1)
			if n := r.limit.allow("handshake-cap", time.Now()); n >= 0 {
				r.log.Warn("replication connection closed: too many handshakes in progress (repl-max-handshakes)",
					"remote", c.RemoteAddr().String(), "max", r.cfg.MaxHandshakes, "suppressed", n)
			}
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			err := r.handshakeAccept(c)
			r.handshakes.Add(-1)
			if err != nil {
				r.refusals.Add(1)
				if n := r.limit.allow("refused "+remoteHost(c), time.Now()); n >= 0 {
					r.log.Warn("replication link refused", "remote", c.RemoteAddr().String(), "err", err, "suppressed", n)
				}
				c.Close()
			}
		}()
	}
}

func (r *Replicator) dialLoop(d *destination) {
	defer r.wg.Done()
	backoff := 50 * time.Millisecond
	addrs, next := d.cfg.Addrs(), 0
	for r.ctx.Err() == nil {
		if l := r.activeLink(d.cfg.Name); l != nil {
			select {
			case <-l.closed:
			case <-r.ctx.Done():
				return
			}
			continue
		}
		// An instance with several addresses (H1:P|H2:P): try the next
		// one after each failure.
		addr := addrs[next%len(addrs)]
		c, err := r.dial(addr)
		if err == nil {
			err = r.handshakeDial(c, d.cfg.Name)
			if err != nil {
				c.Close()
				r.refusals.Add(1)
				if r.ctx.Err() == nil {
					// Reached something that is not the peer we expect, or
					// that does not know the secret: the operator must see it.
					if n := r.limit.allow("dial-refused "+d.cfg.Name+" "+addr, time.Now()); n >= 0 {
						r.log.Warn("replication link refused", "peer", d.cfg.Name, "addr", addr, "err", err, "suppressed", n)
					}
				}
			}
		} else if r.ctx.Err() == nil {
			r.log.Debug("replication dial failed", "peer", d.cfg.Name, "addr", addr, "err", err)
		}
		if err == nil {
			backoff = 50 * time.Millisecond
			continue
		}
		next++
		if r.ctx.Err() != nil {
			return
		}
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// dial connects to a peer's replication address, over TLS when
// configured (the TLS handshake within the handshake deadline).
func (r *Replicator) dial(addr string) (net.Conn, error) {
	dialer := net.Dialer{Timeout: 2 * time.Second}
	c, err := dialer.DialContext(r.ctx, "tcp", addr)
	if err != nil || r.cfg.TLS == nil {
		return c, err
	}
	tc := r.cfg.TLS
	if tc.ServerName == "" {
		tc = tc.Clone()
		tc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	t := tls.Client(c, tc)
	ctx, cancel := context.WithTimeout(r.ctx, r.handshakeTimeout())
	defer cancel()
	if err := t.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS with %s: %w", addr, err)
	}
	return t, nil
}

func remoteHost(c net.Conn) string {
	h, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return h
}

// logLimiter rate-limits repeating log lines: a key logs at most
// logBurst times per logEvery; allow reports how many were suppressed
// before this one (-1: suppress this one).
type logLimiter struct {
	mu   sync.Mutex
	last map[string]*limitEntry
}

type limitEntry struct {
	at         time.Time // start of the window
	n          int       // logged in the window
	suppressed int
}

const (
	logEvery = 10 * time.Second
	logBurst = 3
)

func (l *logLimiter) allow(key string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]*limitEntry{}
	}
	e := l.last[key]
	if e != nil && now.Sub(e.at) < logEvery {
		if e.n >= logBurst {
			e.suppressed++
			return -1
		}
		e.n++
		return 0
	}
	if len(l.last) > 1024 { // bound the keys an attacker's addresses make
		for k, v := range l.last {
			if now.Sub(v.at) >= logEvery {
				delete(l.last, k)
			}
		}
	}
	n := 0
	if e != nil {
		n = e.suppressed
	}
	l.last[key] = &limitEntry{at: now, n: 1}
	return n
}

func (r *Replicator) activeLink(peer string) *link {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.links[peer]
}

func newNonce() [nonceSize]byte {
	var n [nonceSize]byte
	rand.Read(n[:])
	return n
}

// handshakeDial: we dialed; we expect to reach the instance named peer.
// Nothing but our Hello and, once the acceptor's proof verified, our
// Proof is sent before the link starts (proto.go, "Handshake").
func (r *Replicator) handshakeDial(c net.Conn, peer string) error {
	c.SetDeadline(time.Now().Add(r.handshakeTimeout()))
	fr := newFrameReader(c, 64<<10)
	fr.maxFrame = handshakeMaxFrame
	mine := r.hello(peer)
	if _, err := c.Write(appendHello(nil, &mine)); err != nil {
		return err
	}
	f, err := fr.next()
	if err != nil {
		return fmt.Errorf("waiting for hello from %s: %w", peer, err)
	}
	if f.Type == wire.TypeError {
		return remoteError(f.Body)
	}
	var theirs hello
	if f.Type != typeHello {
		return fmt.Errorf("%s sent %s before hello", peer, typeName(f.Type))
	}
	if err := decodeHello(f.Body, &theirs); err != nil {
		if errors.Is(err, errVersion) {
			c.Write(wire.AppendError(nil, wire.CodeVersion, fmt.Sprintf("replication protocol %d, want %d", theirs.Version, protoVersion)))
		}
		return fmt.Errorf("hello from %s: %w", peer, err)
	}
	if theirs.From != peer || theirs.To != r.cfg.Self {
		c.Write(wire.AppendError(nil, wire.CodeAuth, fmt.Sprintf("expected instance %q, reached %q", peer, theirs.From)))
		return fmt.Errorf("%w: expected instance %q at %s, reached %q (which expects %q)", ErrAuth, peer, c.RemoteAddr(), theirs.From, theirs.To)
	}
	if !proofEqual(theirs.Proof[:], handshakeMAC(r.cfg.Secret, labelAcceptor, &mine, &theirs)) {
		c.Write(wire.AppendError(nil, wire.CodeAuth, "bad replication secret"))
		return fmt.Errorf("%w: peer %s failed the secret check", ErrAuth, peer)
	}
	if _, err := c.Write(appendProof(nil, handshakeMAC(r.cfg.Secret, labelDialer, &mine, &theirs))); err != nil {
		return err
	}
	c.SetDeadline(time.Time{})
	return r.startLink(c, fr, &theirs, mine.Resume, r.cfg.Self)
}

// handshakeMaxFrame bounds a frame before the peer is authenticated: a
// Hello with two names of at most 64 bytes, or an Error.
const handshakeMaxFrame = 4 << 10

// ErrAuth wraps every handshake refusal for want of authentication: a
// peer not listed, a bad name, a wrong secret or peer identity.
var ErrAuth = errors.New("replicate: peer not authenticated")

// hello is our Hello to peer, without its proof: resume is the position of
// peer's stream held here, which our Resume will carry.
func (r *Replicator) hello(peer string) hello {
	return hello{Version: protoVersion, From: r.cfg.Self, To: peer, Nonce: newNonce(),
		Journal: r.cfg.JournalID, MaxFrame: uint32(r.cfg.MaxFrame), Epoch: r.cfg.Epoch,
		Resume: r.source(peer).position(), Last: r.j.SyncedSeq()}
}

// handshakeAccept: a peer dialed us. Only a listed peer (Destinations,
// Sources) with a valid name gets our Hello; nothing else is sent before
// its proof verified.
func (r *Replicator) handshakeAccept(c net.Conn) error {
	c.SetDeadline(time.Now().Add(r.handshakeTimeout()))
	fr := newFrameReader(c, 64<<10)
	fr.maxFrame = handshakeMaxFrame
	f, err := fr.next()
	if err != nil {
		return err
	}
	var theirs hello
	if f.Type != typeHello {
		c.Write(wire.AppendError(nil, wire.CodeNotLoggedOn, "replication link must start with hello"))
		return fmt.Errorf("first frame %s, not hello", typeName(f.Type))
	}
	if err := decodeHello(f.Body, &theirs); err != nil {
		if errors.Is(err, errVersion) {
			c.Write(wire.AppendError(nil, wire.CodeVersion, fmt.Sprintf("replication protocol %d, want %d", theirs.Version, protoVersion)))
			return fmt.Errorf("peer speaks replication protocol %d: %w", theirs.Version, err)
		}
		c.Write(wire.AppendError(nil, wire.CodeMalformed, err.Error()))
		return err
	}
	if theirs.To != r.cfg.Self {
		c.Write(wire.AppendError(nil, wire.CodeAuth, fmt.Sprintf("this is instance %q, not %q", r.cfg.Self, theirs.To)))
		return fmt.Errorf("%w: peer %q expected instance %q, this is %q", ErrAuth, theirs.From, theirs.To, r.cfg.Self)
	}
	if err := ValidPeerName(theirs.From); err != nil || theirs.From == r.cfg.Self {
		c.Write(wire.AppendError(nil, wire.CodeAuth, "bad peer name"))
		return fmt.Errorf("%w: peer calls itself %q", ErrAuth, theirs.From)
	}
	if !r.allowed[theirs.From] {
		c.Write(wire.AppendError(nil, wire.CodeAuth, "peer not listed here"))
		return fmt.Errorf("%w: peer %q is not listed (--peer)", ErrAuth, theirs.From)
	}
	mine := r.hello(theirs.From)
	mine.Proof = handshakeMAC(r.cfg.Secret, labelAcceptor, &theirs, &mine)
	if _, err := c.Write(appendHello(nil, &mine)); err != nil {
		return err
	}
	f, err = fr.next()
	if err != nil {
		return fmt.Errorf("waiting for proof from %s: %w", theirs.From, err)
	}
	if f.Type == wire.TypeError {
		return remoteError(f.Body)
	}
	if f.Type != typeProof || len(f.Body) != proofSize {
		return fmt.Errorf("%w: peer %s sent %s instead of its proof", ErrAuth, theirs.From, typeName(f.Type))
	}
	if !proofEqual(f.Body, handshakeMAC(r.cfg.Secret, labelDialer, &theirs, &mine)) {
		c.Write(wire.AppendError(nil, wire.CodeAuth, "bad replication secret"))
		return fmt.Errorf("%w: peer %s does not know the replication secret", ErrAuth, theirs.From)
	}
	c.SetDeadline(time.Time{})
	return r.startLink(c, fr, &theirs, mine.Resume, theirs.From)
}

func remoteError(body []byte) error {
	var e wire.Error
	if err := wire.DecodeError(body, &e); err != nil {
		return err
	}
	return fmt.Errorf("peer refused: %s: %s", e.Code, e.Text)
}

// startLink registers an authenticated connection. When two links to one
// peer exist (both dialed at once), both instances keep the one dialed by
// the instance whose name sorts first and close the other, so exactly one
// connection survives and carries both directions.
func (r *Replicator) startLink(c net.Conn, fr *frameReader, theirs *hello, resume position, dialer string) error {
	peer := theirs.From
	l := newLink(r, c, fr, theirs, dialer)
	l.resume = resume
	r.mu.Lock()
	if r.ctx.Err() != nil {
		r.mu.Unlock()
		l.abandon()
		return errors.New("replicator closing")
	}
	old := r.links[peer]
	if old != nil && !old.isClosed() {
		preferred := min(r.cfg.Self, peer)
		if old.dialer == preferred && dialer != preferred {
			r.mu.Unlock()
			r.log.Info("closing duplicate replication link", "peer", peer, "kept", "dialed by "+old.dialer)
			c.Write(wire.AppendError(nil, wire.CodeShutdown, "duplicate link: keeping the one dialed by "+old.dialer))
			l.abandon()
			return nil
		}
	}
	r.links[peer] = l
	r.mu.Unlock()
	if old != nil {
		old.close(fmt.Errorf("replaced by the link dialed by %s", dialer))
	}
	r.log.Info("replication link up", "peer", peer, "remote", c.RemoteAddr().String(), "dialed_by", dialer)
	l.start()
	return nil
}

func (r *Replicator) linkClosed(l *link) {
	r.mu.Lock()
	if r.links[l.peer] == l {
		delete(r.links, l.peer)
	}
	r.mu.Unlock()
	if d := r.byName[l.peer]; d != nil {
		d.linkDown(l)
	}
}

// ---- evaluation: lag, downgrade and upgrade, positions ----

func (r *Replicator) evaluateLoop() {
	defer r.wg.Done()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	lastSave := time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-t.C:
			r.evaluate(now)
			if now.Sub(lastSave) > 200*time.Millisecond {
				r.savePositions()
				r.checkHolds(now)
				lastSave = now
			}
		}
	}
}

// evaluate recomputes each destination's lag and state. Lag is the age of
// the oldest local record a destination should hold and has not
// acknowledged, measured from when that record became durable here (the
// samples of SyncedSeq), so replayed old messages do not look late.
func (r *Replicator) evaluate(now time.Time) {
	synced := r.j.SyncedSeq()
	if n := len(r.samples); n == 0 || r.samples[n-1].seq != synced {
		r.samples = append(r.samples, sample{synced, now})
		if len(r.samples) > 4096 {
			r.samples = append(r.samples[:0], r.samples[len(r.samples)-2048:]...)
		}
	}
	changed := false
	for _, d := range r.dests {
		acked := d.acked.Load()
		var lag time.Duration
		if acked < synced {
			lag = now.Sub(r.samples[0].at)
			for _, s := range r.samples {
				if s.seq > acked {
					lag = now.Sub(s.at)
					break
				}
			}
		}
		if d.evaluate(now, lag) {
			changed = true
		}
	}
	if changed {
		r.recomputeSyncPoint()
	}
}

func (r *Replicator) positionFile(kind, peer string) string {
	return filepath.Join(r.cfg.StateDir, "repl-"+kind+"-"+peer+".pos")
}

// savePositions records, per peer, how far its stream to us is durable here
// (so a restart resumes there instead of from the start) and how far each
// destination has acknowledged our journal (so retention and acks hold
// back across a restart): see identity.go for the files. A file is
// rewritten (atomically, synced) only when its position changed. A lost or
// stale file only means resending (which de-duplication absorbs) or
// holding more journal, never losing a message.
func (r *Replicator) savePositions() {
	if r.cfg.StateDir == "" {
		return
	}
	var failed error
	save := func(path string, p position) {
		if old, ok := r.saved[path]; ok && old == p {
			return
		}
		if err := writePositionFile(path, p); err != nil {
			failed = err
			return
		}
		r.saved[path] = p
	}
	r.sources.Range(func(_, v any) bool {
		s := v.(*source)
		save(r.positionFile("in", s.name), s.position())
		return true
	})
	for _, d := range r.dests {
		save(r.positionFile("out", d.cfg.Name), position{Journal: r.cfg.JournalID, Seq: d.acked.Load()})
	}
	if failed != nil && !r.saveErr {
		r.log.Error("cannot save replication positions (logged once until it works again)", "err", failed)
	} else if failed == nil && r.saveErr {
		r.log.Info("replication positions saved again")
	}
	r.saveErr = failed != nil
}

func (r *Replicator) loadPositions() {
	if r.cfg.StateDir == "" {
		return
	}
	os.MkdirAll(r.cfg.StateDir, 0o700)
	entries, _ := os.ReadDir(r.cfg.StateDir)
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "repl-in-") || !strings.HasSuffix(name, ".pos") {
			continue
		}
		peer := strings.TrimSuffix(strings.TrimPrefix(name, "repl-in-"), ".pos")
		if ValidPeerName(peer) != nil {
			continue
		}
		path := filepath.Join(r.cfg.StateDir, name)
		p, ok, err := readPositionFile(path)
		if err != nil {
			r.log.Warn("ignoring a replication positions file: that peer's stream is taken from its start", "err", err)
			continue
		}
		if ok {
			s := r.source(peer)
			s.mu.Lock()
			s.m = rsm.NewSource(p)
			s.mu.Unlock()
			s.posMu.Lock()
			s.durable = p
			s.posMu.Unlock()
			r.saved[path] = p
		}
	}
	for _, d := range r.dests {
		path := r.positionFile("out", d.cfg.Name)
		p, ok, err := readPositionFile(path)
		switch {
		case err != nil:
			r.log.Warn("ignoring a replication positions file", "err", err)
		case ok && p.Journal == r.cfg.JournalID && p.Seq <= r.j.LastSeq():
			d.restoreAcked(p.Seq)
		case ok:
			r.log.Info("ignoring the acknowledged position saved for another journal", "peer", d.cfg.Name,
				"journal", r.cfg.JournalID.String(), "saved_journal", p.Journal.String(), "saved_seq", p.Seq)
		}
	}
}

// holdSample is the journal's synced seq and the record bytes written
// since Open at one hold check.
type holdSample struct{ seq, written uint64 }

// heldBytes estimates the bytes of the records after acked, up to now.seq:
// the bytes written between the samples around acked (interpolated) and
// now; for records older than the oldest sample (written before this
// start), avg bytes each.
func heldBytes(samples []holdSample, acked uint64, now holdSample, avg float64) int64 {
	if acked >= now.seq {
		return 0
	}
	if len(samples) == 0 || acked < samples[0].seq {
		var b float64
		from := acked
		if len(samples) > 0 {
			b = float64(now.written - samples[0].written)
			from, now = acked, samples[0]
		}
		return int64(b + avg*float64(now.seq-from))
	}
	i := sort.Search(len(samples), func(i int) bool { return samples[i].seq > acked }) // first after acked
	lo := samples[i-1]
	at := float64(lo.written)
	if i < len(samples) {
		hi := samples[i]
		at += float64(hi.written-lo.written) * float64(acked-lo.seq) / float64(hi.seq-lo.seq)
	}
	return int64(float64(now.written) - at)
}

// checkHolds estimates, per destination, the journal bytes it has not
// acknowledged (what retention keeps for it, heldBytes) and raises or
// clears its hold alarm against HoldAlarmBytes: logged when raised and at
// most once a minute while it stays raised.
func (r *Replicator) checkHolds(now time.Time) {
	st := r.j.Stats()
	cur := holdSample{seq: st.SyncedSeq, written: st.WrittenBytes}
	if n := len(r.holdSamples); n == 0 || r.holdSamples[n-1].seq < cur.seq {
		r.holdSamples = append(r.holdSamples, cur)
		if len(r.holdSamples) > 4096 {
			r.holdSamples = append(r.holdSamples[:0], r.holdSamples[len(r.holdSamples)-2048:]...)
		}
	}
	// Records from before the oldest sample (stored before this start):
	// the average of those written since, else of the journal's segments.
	avg := 0.0
	if o := r.holdSamples[0]; cur.seq > o.seq && cur.written > o.written {
		avg = float64(cur.written-o.written) / float64(cur.seq-o.seq)
	} else if st.LastSeq >= st.FirstSeq && st.LastSeq > 0 {
		avg = float64(st.Bytes) / float64(st.LastSeq-st.FirstSeq+1)
	}
	for _, d := range r.dests {
		acked := max(d.acked.Load(), st.FirstSeq-1)
		bytes := heldBytes(r.holdSamples, acked, cur, avg)
		d.holdBytes.Store(bytes)
		alarm := r.cfg.HoldAlarmBytes > 0 && bytes > r.cfg.HoldAlarmBytes
		was := d.holdAlarm.Swap(alarm)
		d.mu.Lock()
		switch {
		case alarm && (!was || now.Sub(d.holdLogged) >= time.Minute):
			d.holdLogged = now
			d.mu.Unlock()
			r.log.Warn("retention hold alarm: the journal kept for this destination exceeds repl-hold-alarm-bytes; "+
				"the disk fills if it stays away (strict sync, or a destination that never returns)",
				"peer", d.cfg.Name, "held_bytes", bytes, "alarm_bytes", r.cfg.HoldAlarmBytes, "acked", acked, "last", st.LastSeq)
		case !alarm && was:
			d.mu.Unlock()
			r.log.Info("retention hold alarm cleared", "peer", d.cfg.Name, "held_bytes", bytes)
		default:
			d.mu.Unlock()
		}
	}
}

// LinkInfo describes the active link to peer, for tests and tools: the
// local and remote addresses of its connection and the instance that
// dialed it. ok is false when no link to peer is up.
func (r *Replicator) LinkInfo(peer string) (local, remote, dialer string, ok bool) {
	l := r.activeLink(peer)
	if l == nil || l.isClosed() {
		return "", "", "", false
	}
	return l.c.LocalAddr().String(), l.c.RemoteAddr().String(), l.dialer, true
}

// LinkCount returns how many authenticated links are up (registered and
// not closed), for tests and tools: at most one per peer.
func (r *Replicator) LinkCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.links {
		if !l.isClosed() {
			n++
		}
	}
	return n
}

// handshakeTimeout bounds a link's handshake: four heartbeat intervals,
// between 1 s and 5 s, so a dial into a black hole (a partition) gives up
// and retries quickly instead of waiting out a long deadline.
func (r *Replicator) handshakeTimeout() time.Duration {
	return min(max(4*r.cfg.Heartbeat, time.Second), 5*time.Second)
}
