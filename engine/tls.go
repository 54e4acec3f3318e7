package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/wire"
)

// TLS on the client port.
//
// Design. The event loops own raw file descriptors (io_uring operations,
// zero-copy sends from the journal mapping), so TLS does not go into the
// loops. An accepted TLS connection gets a relay goroutine that runs the
// handshake and the record layer with crypto/tls and passes plaintext to
// the loop over one end of a unix socketpair; the loop serves the other end
// like any connection, with the real peer's address as its remote (stat,
// logs). The relay also hands the loop the verified client certificate's
// CN (mTLS), before any byte of plaintext. Costs: two extra copies and a
// socketpair hop per direction, a goroutine per connection, and no
// zero-copy deliveries (the mapping's pages are encrypted into TLS records
// anyway).
//
// Kernel TLS (the "tls" ULP, listed in /proc/sys/net/ipv4/tcp_available_ulp)
// would let the loops keep the TCP socket itself after a Go handshake (TLS
// 1.3 traffic secrets into setsockopt(SOL_TLS), session tickets disabled so
// no post-handshake record precedes the switch). It is not implemented yet:
// the machines this was built on have no tls ULP to test it with. The relay
// is the path everywhere.
//
// Plaintext on a TLS port. The relay reads the first six bytes: a TLS
// ClientHello record starts 0x16 0x03 and its sixth byte is 0x01, where a
// wire frame's is always 0; anything else gets a plaintext wire Error frame
// with wire.CodeTLSRequired, so a plaintext client fails at once saying TLS
// is required, and the connection closes.
//
// Reload. Certificates and the client CA file are read at start and again
// on ReloadTLS (tandem serve calls it on SIGHUP); a handshake uses the
// current ones, established connections are not touched. A reload that
// fails keeps the previous certificates.
type TLSConfig struct {
	CertFile string // PEM certificate chain
	KeyFile  string // PEM private key
	// ClientCAFile, when set, requires a client certificate verified
	// against these CAs (mTLS); its subject CN is the logon's user.
	ClientCAFile string
	// MinVersion is tls.VersionTLS13 (default) or tls.VersionTLS12.
	MinVersion uint16
	// HandshakeTimeout bounds the handshake; default Config.LogonTimeout.
	HandshakeTimeout time.Duration
}

// ErrTLSConfig is wrapped by TLS configuration errors.
var ErrTLSConfig = errors.New("tls")

type tlsServer struct {
	cfg  TLSConfig
	cur  atomic.Pointer[tls.Config]
	mu   sync.Mutex // serialises reloads
	logf *rateLog
}

func newTLSServer(cfg TLSConfig, logonTimeout time.Duration) (*tlsServer, error) {
	switch cfg.MinVersion {
	case 0:
		cfg.MinVersion = tls.VersionTLS13
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return nil, fmt.Errorf("%w: min version %#04x: want TLS 1.2 or 1.3", ErrTLSConfig, cfg.MinVersion)
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, fmt.Errorf("%w: both a certificate (tls-cert) and a key (tls-key) are needed", ErrTLSConfig)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = logonTimeout
	}
	t := &tlsServer{cfg: cfg}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// reload reads the certificate, key and client CAs and makes them current.
func (t *tlsServer) reload() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	cert, err := tls.LoadX509KeyPair(t.cfg.CertFile, t.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("%w: certificate %s, key %s: %w", ErrTLSConfig, t.cfg.CertFile, t.cfg.KeyFile, err)
	}
	c := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   t.cfg.MinVersion,
		// No session tickets: no post-handshake records before the
		// application's (the precondition of a switch to kernel TLS), and no
		// ticket keys to rotate.
		SessionTicketsDisabled: true,
	}
	if t.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(t.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("%w: client CA: %w", ErrTLSConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: client CA %s: no PEM certificate in it", ErrTLSConfig, t.cfg.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	t.cur.Store(c)
	return nil
}

// ReloadTLS re-reads the client port's certificates (SIGHUP). Connections
// are not dropped; a failed reload keeps the previous certificates.
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return fmt.Errorf("%w: the client port does not serve TLS", ErrTLSConfig)
	}
	if err := s.tls.reload(); err != nil {
		return err
	}
	s.log.Info("client-port TLS certificates reloaded", "cert", s.cfg.TLS.CertFile)
	return nil
}

// acceptTLS hands a freshly accepted TCP socket to a relay goroutine and
// returns the connection the loop serves instead (its socketpair end).
func (lp *loop) acceptTLS(raw int, remote string) (*conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		unix.Close(raw)
		return nil, fmt.Errorf("tls relay socketpair: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(raw)
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("tls relay socketpair: %w", err)
	}
	c := newPreLogonConn(lp, fds[0], remote)
	c.zcCopied = true // the relay copies anyway: no zero-copy on a socketpair
	go lp.srv.relayTLS(raw, fds[1], c)
	return c, nil
}

var errNotTLS = errors.New("plaintext on the TLS port")

// relayTLS runs one TLS connection: handshake, then plaintext both ways
// between the TLS connection and the loop's end of the socketpair.
func (s *Server) relayTLS(raw, local int, c *conn) {
	rc, err1 := fileConn(raw, "tcp")
	lc, err2 := fileConn(local, "relay")
	if err1 != nil || err2 != nil {
		if rc != nil {
			rc.Close()
		}
		if lc != nil {
			lc.Close()
		}
		s.logTLS("tls relay", "remote", c.remote, "err", errors.Join(err1, err2))
		return
	}
	var once sync.Once
	closeAll := func() { once.Do(func() { rc.Close(); lc.Close() }) }
	defer closeAll()
	t := s.tls
	rc.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	// A TLS client starts with a handshake record holding a ClientHello:
	// 0x16, 0x03, a version byte, a 2-byte length, then handshake type 1.
	// A wire frame's sixth byte is always 0 (the header's reserved bytes).
	var first [6]byte
	if _, err := io.ReadFull(rc, first[:]); err != nil {
		return
	}
	if first[0] != 0x16 || first[1] != 0x03 || first[5] != 0x01 { // not a TLS ClientHello
		rc.Write(wire.AppendError(nil, wire.CodeTLSRequired, "this port serves TLS only: connect with TLS (tandem --tls-ca FILE; client.WithTLS)"))
		s.logTLS("plaintext client on the TLS port refused", "remote", c.remote, "err", errNotTLS)
		// Closing with unread input would reset the connection and could
		// destroy the Error frame before the client reads it: end our side,
		// then drain (boundedly) until the client closes.
		if tc, ok := rc.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		rc.SetDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
		return
	}
	tc := tls.Server(&prefixConn{Conn: rc, prefix: first[:]}, t.cur.Load())
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.logTLS("TLS handshake failed", "remote", c.remote, "err", err)
		return
	}
	rc.SetDeadline(time.Time{})
	if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 {
		cn := st.PeerCertificates[0].Subject.CommonName
		c.sec.certUser.Store(&cn) // before any plaintext reaches the loop
	}
	go func() {
		io.Copy(lc, tc) // client to loop
		closeAll()
	}()
	io.Copy(tc, lc) // loop to client
	tc.Close()      // close_notify, then the socket
}

func (s *Server) logTLS(msg string, args ...any) {
	if ok, n := s.sec.logAccept.allow(); ok {
		s.log.Info(msg, append(args, "suppressed", n)...)
	}
}

// fileConn makes a net.Conn of fd (which it takes over).
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	nc, err := net.FileConn(f)
	f.Close()
	return nc, err
}

// prefixConn gives back bytes already read before the rest of the stream.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// admit sets up an accepted socket (TCP_NODELAY, keepalive), enforces the
// instance's connection cap and returns the connection the loop serves:
// the socket itself, or with TLS the relay's socketpair end. nil: refused
// or failed (the socket is closed).
func (lp *loop) admit(nfd int, remote string) *conn {
	s := lp.srv
	unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if ka := s.cfg.KeepAlive; ka > 0 {
		idle := max(int(ka/time.Second), 1)
		unix.SetsockoptInt(nfd, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, idle)
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, max(idle/3, 1))
		unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3)
	}
	var total int64
	for _, l := range s.loops {
		total += l.nconns.Load()
	}
	if total >= int64(s.cfg.MaxConnections) {
		text := fmt.Sprintf("the instance already serves %d connections (max-connections)", total)
		if ok, n := s.sec.logAccept.allow(); ok {
			s.log.Warn("connection refused: limit reached", "remote", remote, "limit", s.cfg.MaxConnections, "suppressed", n)
		}
		if s.tls != nil {
			// The client hears why after a handshake; a flood beyond the
			// cap must not grow goroutines without bound, so past
			// maxTLSRefusers the socket is just closed.
			if s.sec.tlsRefusers.Add(1) <= maxTLSRefusers {
				go s.refuseTLS(nfd, text)
			} else {
				s.sec.tlsRefusers.Add(-1)
				unix.Close(nfd)
			}
			return nil
		}
		unix.Write(nfd, wire.AppendError(nil, wire.CodeLimit, text))
		unix.Close(nfd)
		return nil
	}
	if s.tls == nil {
		return newPreLogonConn(lp, nfd, remote)
	}
	c, err := lp.acceptTLS(nfd, remote)
	if err != nil {
		if ok, n := s.sec.logAccept.allow(); ok {
			s.log.Warn("tls relay failed", "remote", remote, "err", err, "suppressed", n)
		}
		return nil
	}
	return c
}

// maxTLSRefusers bounds the goroutines telling TLS clients beyond
// max-connections why they are refused.
const maxTLSRefusers = 64

// refuseTLS completes a handshake only to say why the connection is refused.
func (s *Server) refuseTLS(raw int, text string) {
	defer s.sec.tlsRefusers.Add(-1)
	rc, err := fileConn(raw, "tcp")
	if err != nil {
		return
	}
	defer rc.Close()
	rc.SetDeadline(time.Now().Add(s.tls.cfg.HandshakeTimeout))
	tc := tls.Server(rc, s.tls.cur.Load())
	if tc.Handshake() == nil {
		tc.Write(wire.AppendError(nil, wire.CodeLimit, text))
		tc.Close()
	}
}

// newPreLogonConn makes an accepted connection: until it logs on, its read
// buffer holds one small frame (LogonBuffer); finishLogon grows it.
func newPreLogonConn(lp *loop, fd int, remote string) *conn {
	return newConnSized(lp, fd, remote, min(lp.srv.cfg.ReadBuffer, lp.srv.cfg.LogonBuffer))
}

// Accept back-off: accept4 failing for lack of descriptors or memory
// (EMFILE, ENFILE, ENOBUFS, ENOMEM) leaves the connection in the backlog
// and the listener readable, so retrying at once would spin the loop. The
// loop stops accepting for a back-off (10ms, doubling to 1s, reset by the
// next successful accept) and logs at most once a second.
const (
	minAcceptBackoff = 10 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// acceptFailed handles an accept error; true when accepting is paused.
func (lp *loop) acceptFailed(err error) bool {
	s := lp.srv
	if ok, n := s.sec.logAccept.allow(); ok {
		s.log.Warn("accept failed", "loop", lp.id, "err", err, "suppressed", n)
	}
	switch err {
	case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
	default:
		return false
	}
	b := &lp.sec
	b.acceptBackoff = min(max(2*b.acceptBackoff, minAcceptBackoff), maxAcceptBackoff)
	b.acceptPaused = true
	b.acceptResume = time.Now().Add(b.acceptBackoff).UnixNano()
	b.acceptPauses.Add(1)
	if lp.poller != nil && lp.lfd >= 0 {
		lp.poller.Del(lp.lfd)
	} else if lp.ur != nil && lp.lfd >= 0 {
		lp.ur.ring.CancelFd(lp.lfd, opCancel) // a multishot accept may still be armed
	}
	return true
}

// retryAccept accepts again once the back-off has passed (timers).
func (lp *loop) retryAccept() {
	b := &lp.sec
	if !b.acceptPaused || lp.now < b.acceptResume || lp.lfd < 0 || lp.srv.stopping.Load() {
		return
	}
	b.acceptPaused = false
	var err error
	if lp.poller != nil {
		err = lp.poller.Add(lp.lfd, poll.Readable)
	} else {
		err = lp.ur.armAccept(lp.lfd)
	}
	if err != nil {
		lp.srv.log.Error("resuming accept failed", "loop", lp.id, "err", err)
	}
}

// kernelTLSNote says whether the kernel offers the tls ULP (kernel TLS is
// not used yet either way; see the TLS design note above).
func kernelTLSNote() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if err != nil {
		return "kernel TLS: unknown"
	}
	for _, u := range strings.Fields(string(b)) {
		if u == "tls" {
			return "the kernel offers the tls ULP, not used yet"
		}
	}
	return "no tls ULP in this kernel"
}
