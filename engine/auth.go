package engine

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/wire"
)

// Access control on the client port.
//
// Logon. A logon that needs a password verified (a users file and no
// verified client certificate) or runs Config.Authenticate goes to a
// bounded pool of workers (Security.AuthWorkers goroutines reading a
// channel of Security.AuthQueue jobs): argon2id costs tens of milliseconds
// and 64 MiB, and must never run on an event loop. Meanwhile the
// connection reads nothing (it is paused; frames that arrived behind the
// Logon stay in its read buffer); the worker posts the verdict to the
// connection's loop and wakes it, and the loop finishes the logon and then
// handles those frames. A full queue refuses the logon with wire.CodeLimit.
// A logon with a verified certificate and no password is decided on the
// loop (no hashing).
//
// Permissions. A publish is checked against the user's publish patterns
// (the verdict for the connection's last topic is cached); a refused one
// gets a per-message not-permitted refusal and the connection stays up. A
// subscription is checked when it starts: refused when it can match no
// topic the user may read, delivered unfiltered when everything it can
// match is readable, and otherwise filtered per delivered topic with the
// verdict cached per subscription (like the regex matcher's cache).

// secState is the server's access-control state.
type secState struct {
	authq    chan *authJob
	authBusy atomic.Int64

	// users is the current users file (Config.Users, then ReloadUsers).
	// Whether the server checks users at all is fixed at start
	// (Config.Users != nil).
	users     atomic.Pointer[auth.Users]
	usersMu   sync.Mutex
	userConns map[string]int // connections per user name

	// rate-limited log lines
	logLogon, logRefused, logClose, logAccept rateLog

	tlsRefusers atomic.Int64 // goroutines refusing TLS clients beyond max-connections
}

// loopSec is a loop's share: verdicts posted by the workers, and the
// connections whose reading is stalled on their output (StatRequest).
type loopSec struct {
	mu      sync.Mutex
	done    []authResult
	ready   atomic.Bool
	stalled []*conn

	// accept back-off after EMFILE and the like (acceptFailed)
	acceptPaused  bool
	acceptResume  int64
	acceptBackoff time.Duration
	acceptPauses  atomic.Int64 // a test and stat hook
}

// connSec is a connection's share.
type connSec struct {
	user        *auth.User
	authPending bool                   // a worker verifies its logon: read nothing meanwhile
	stalled     bool                   // stopped before a StatRequest: output above the high water mark
	certUser    atomic.Pointer[string] // a verified client certificate's CN (TLS relay)
	permTopic   []byte                 // the last published topic checked, and the verdict
	permOK      bool
	countedUser bool
}

type authJob struct {
	c        *conn
	name     string
	cred     []byte
	certUser string
	version  uint16
	hbMillis uint32
}

type authResult struct {
	job  *authJob
	user *auth.User
	err  error
}

// authError is a refused logon: what the client is told, and the precise
// reason for the server's log.
type authError struct {
	client string
	err    error
}

func (e *authError) Error() string { return e.client }
func (e *authError) Unwrap() error { return e.err }

func (c *Security) setDefaults() {
	if c.AuthWorkers <= 0 {
		c.AuthWorkers = 2 * runtime.NumCPU()
	}
	if c.AuthQueue <= 0 {
		c.AuthQueue = DefaultAuthQueue
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerUser <= 0 {
		c.MaxConnectionsPerUser = DefaultMaxConnectionsPerUser
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if c.MaxPattern <= 0 {
		c.MaxPattern = DefaultMaxPattern
	}
	if c.LogonBuffer <= 0 {
		c.LogonBuffer = DefaultLogonBuffer
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
}

// startAuthWorkers starts the logon verification pool.
func (s *Server) startAuthWorkers() {
	s.sec.userConns = make(map[string]int)
	s.sec.users.Store(s.cfg.Users)
	s.sec.authq = make(chan *authJob, s.cfg.AuthQueue)
	for i := 0; i < s.cfg.AuthWorkers; i++ {
		go func() {
			for job := range s.sec.authq {
				u, err := s.verify(job.name, job.cred, job.certUser)
				lp := job.c.lp
				lp.sec.mu.Lock()
				lp.sec.done = append(lp.sec.done, authResult{job: job, user: u, err: err})
				lp.sec.mu.Unlock()
				s.sec.authBusy.Add(-1)
				lp.sec.ready.Store(true)
				lp.wake()
			}
		}()
	}
}

// stopAuthWorkers ends the pool once no loop can queue a job (the loops
// have stopped). A worker inside a slow Authenticate ends after it.
func (s *Server) stopAuthWorkers() {
	if s.sec.authq != nil {
		close(s.sec.authq)
	}
}

// authBusy is the number of logons with a worker or queued.
func (s *Server) authBusy() int { return int(s.sec.authBusy.Load()) }

// needsWorker reports whether a logon's verdict needs the pool.
func (s *Server) needsWorker(cred []byte, certUser string) bool {
	return s.cfg.Authenticate != nil || s.cfg.Users != nil && (certUser == "" || len(cred) > 0)
}

var errNeedCredentials = errors.New("this server needs credentials: a user and password (tandem --user and --password-file; client.WithUser) or a client certificate (mTLS)")

// verify decides a logon: the user it is (nil without a users file) or why
// not. It may cost an argon2id evaluation: workers run it, or the loop
// when needsWorker says no hashing is involved.
func (s *Server) verify(name string, cred []byte, certUser string) (*auth.User, error) {
	var u *auth.User
	if us := s.sec.users.Load(); us != nil {
		if certUser != "" {
			if u = us.Lookup(certUser); u == nil {
				return nil, &authError{client: fmt.Sprintf("client certificate CN %q is not a user of this server", certUser), err: auth.ErrUnknownUser}
			}
			if len(cred) > 0 {
				if cu, _, ok := auth.SplitCredentials(cred); ok && cu != certUser {
					return nil, &authError{client: fmt.Sprintf("credentials name user %q but the client certificate is %q's", cu, certUser)}
				}
			}
		} else {
			user, pw, ok := auth.SplitCredentials(cred)
			if !ok {
				return nil, &authError{client: errNeedCredentials.Error(), err: errNeedCredentials}
			}
			var err error
			if u, err = us.Authenticate(user, pw); err != nil {
				text := "unknown user or wrong password"
				if errors.Is(err, auth.ErrNoPassword) {
					text = fmt.Sprintf("user %q has no password: log on with its client certificate", user)
				}
				return nil, &authError{client: text, err: fmt.Errorf("user %q: %w", user, err)}
			}
		}
		if !us.MayLogOnAs(u, name) {
			return nil, &authError{client: fmt.Sprintf("user %q may not log on as client %q (client-names)", u.Name, name)}
		}
	}
	if s.cfg.Authenticate != nil {
		if err := s.cfg.Authenticate(name, cred); err != nil {
			return nil, &authError{client: err.Error(), err: err}
		}
	}
	return u, nil
}

// startLogon finishes a decoded, valid Logon: on the loop, or through the
// worker pool.
func (c *conn) startLogon(name string, cred []byte, version uint16, hbMillis uint32) {
	s := c.lp.srv
	certUser := ""
	if p := c.sec.certUser.Load(); p != nil {
		certUser = *p
	}
	if !s.needsWorker(cred, certUser) {
		u, err := s.verify(name, cred, certUser)
		c.finishLogon(name, u, err, version, hbMillis)
		return
	}
	s.sec.authBusy.Add(1)
	job := &authJob{c: c, name: name, cred: bytes.Clone(cred), certUser: certUser, version: version, hbMillis: hbMillis}
	select {
	case s.sec.authq <- job:
	default:
		s.sec.authBusy.Add(-1)
		c.fail(wire.CodeLimit, fmt.Sprintf("server busy: %d logons already await verification (auth-queue); retry later", s.cfg.AuthQueue))
		return
	}
	c.sec.authPending = true
	c.pauseReading(true)
}

// finishAuths completes the logons whose verdicts came back.
func (lp *loop) finishAuths() {
	if !lp.sec.ready.Load() {
		return
	}
	lp.sec.ready.Store(false)
	lp.sec.mu.Lock()
	done := lp.sec.done
	lp.sec.done = nil
	lp.sec.mu.Unlock()
	for _, r := range done {
		c := r.job.c
		if c.closed {
			continue
		}
		c.sec.authPending = false
		c.finishLogon(r.job.name, r.user, r.err, r.job.version, r.job.hbMillis)
		c.resumeReading()
	}
}

// finishLogon refuses the logon (err) or completes it.
func (c *conn) finishLogon(name string, u *auth.User, err error, version uint16, hbMillis uint32) {
	s := c.lp.srv
	if err != nil {
		if ok, n := s.sec.logLogon.allow(); ok {
			s.log.Warn("logon refused", "client", name, "remote", c.remote, "err", errors.Unwrap(err), "reason", err.Error(), "suppressed", n)
		}
		c.fail(wire.CodeAuth, "authentication failed: "+err.Error())
		return
	}
	if u != nil {
		if err := s.countUser(u); err != nil {
			c.fail(wire.CodeLimit, err.Error())
			return
		}
		c.sec.user, c.sec.countedUser = u, true
	}
	if len(c.rbuf) < s.cfg.ReadBuffer { // a logged-on connection gets its full read buffer
		nb := make([]byte, s.cfg.ReadBuffer)
		copy(nb, c.rbuf[:c.rn])
		c.rbuf = nb
	}
	c.completeLogon(name, version, hbMillis)
}

// countUser counts a connection logged on as u, within the per-user cap.
func (s *Server) countUser(u *auth.User) error {
	s.sec.usersMu.Lock()
	defer s.sec.usersMu.Unlock()
	if n := s.sec.userConns[u.Name]; n >= s.cfg.MaxConnectionsPerUser {
		return fmt.Errorf("user %q already has %d connections (max-connections-per-user)", u.Name, n)
	}
	s.sec.userConns[u.Name]++
	return nil
}

// uncountUser undoes countUser when the connection closes.
func (c *conn) uncountUser() {
	if !c.sec.countedUser {
		return
	}
	c.sec.countedUser = false
	s := c.lp.srv
	s.sec.usersMu.Lock()
	if s.sec.userConns[c.sec.user.Name]--; s.sec.userConns[c.sec.user.Name] <= 0 {
		delete(s.sec.userConns, c.sec.user.Name)
	}
	s.sec.usersMu.Unlock()
}

// mayPublish checks a publish's topic against the user's permissions.
func (c *conn) mayPublish(topic []byte) bool {
	u := c.sec.user
	if u == nil {
		return c.lp.srv.cfg.Users == nil
	}
	if c.sec.permTopic != nil && bytes.Equal(topic, c.sec.permTopic) {
		return c.sec.permOK
	}
	c.sec.permOK = u.Publish.Match(topic)
	c.sec.permTopic = append(c.sec.permTopic[:0], topic...)
	return c.sec.permOK
}

// refuseNotPermitted refuses one publish the user may not make.
func (c *conn) refuseNotPermitted(pubSeq uint64, topic []byte) {
	s := c.lp.srv
	if ok, n := s.sec.logRefused.allow(); ok {
		s.log.Warn("publish refused: not permitted", "client", c.name(), "user", c.userName(), "topic", string(topic), "suppressed", n)
	}
	c.refusePublish(pubSeq, wire.CodeNotPermitted, fmt.Sprintf("not-permitted: publish to %q", topic))
}

func (c *conn) userName() string {
	if c.sec.user == nil {
		return ""
	}
	return c.sec.user.Name
}

// readPerm filters a subscription's deliveries to the topics its user may
// read, caching the verdict per topic.
type readPerm struct {
	ps    auth.Patterns
	cache map[string]bool
}

func (p *readPerm) allowed(topic []byte) bool {
	if v, ok := p.cache[string(topic)]; ok {
		return v
	}
	v := p.ps.Match(topic)
	if len(p.cache) < maxRegexCache {
		p.cache[string(topic)] = v
	}
	return v
}

// subscribePerm decides a subscription: refused (an error text), allowed
// unfiltered (nil), or filtered.
func (c *conn) subscribePerm(kind wire.MatchKind, topic []byte) (*readPerm, string) {
	if c.lp.srv.cfg.Users == nil {
		return nil, ""
	}
	u := c.sec.user
	if u == nil {
		return nil, "not-permitted: no user"
	}
	ps := u.Subscribe
	full, some := false, false
	switch kind {
	case wire.MatchExact:
		full = ps.Match(topic)
		some = full
	case wire.MatchPrefix:
		full, some = ps.Covers(topic), ps.Overlaps(topic)
	default: // a regular expression: only "*" is known to cover it
		full, some = ps.All(), len(ps) > 0
	}
	switch {
	case full:
		return nil, ""
	case some:
		return &readPerm{ps: ps, cache: make(map[string]bool)}, ""
	}
	s := c.lp.srv
	if ok, n := s.sec.logRefused.allow(); ok {
		s.log.Warn("subscription refused: not permitted", "client", c.name(), "user", u.Name, "topic", string(topic), "suppressed", n)
	}
	return nil, fmt.Sprintf("not-permitted: subscribe to %q: user %q may read none of it", topic, u.Name)
}

// mayStat reports whether the connection may read stat.
func (c *conn) mayStat() bool {
	return c.lp.srv.cfg.Users == nil || c.sec.user != nil && c.sec.user.Admin
}

// stall stops handling a connection's frames while its output is above the
// high water mark (a StatRequest flood); afterSync resumes it.
func (c *conn) stall() {
	c.sec.stalled = true
	c.pauseReading(true)
	c.lp.sec.stalled = append(c.lp.sec.stalled, c)
}

// resumeStalled resumes stalled connections whose output drained.
func (lp *loop) resumeStalled() {
	if len(lp.sec.stalled) == 0 {
		return
	}
	hw := lp.srv.cfg.WriteHighWater
	list := lp.sec.stalled
	lp.sec.stalled = nil // resumeReading may stall a connection again: it appends anew
	for _, c := range list {
		switch {
		case c.closed:
		case c.pending() > hw:
			lp.sec.stalled = append(lp.sec.stalled, c)
		default:
			c.sec.stalled = false
			c.resumeReading()
		}
	}
}

// resumeReading handles the frames left in the read buffer, then reads
// again unless something paused the connection anew.
func (c *conn) resumeReading() {
	if c.closed {
		return
	}
	if c.rn > 0 {
		c.process()
	}
	if !c.closed && !c.sec.authPending && !c.sec.stalled && c.pending() <= c.lp.srv.cfg.WriteHighWater && !c.lp.srv.stopping.Load() {
		c.pauseReading(false)
	}
}

// frameLimit is the largest frame the connection may send now: small until
// it has logged on.
func (c *conn) frameLimit() int {
	if c.client == nil {
		return min(c.lp.srv.cfg.MaxFrame, c.lp.srv.cfg.LogonBuffer)
	}
	return c.lp.srv.cfg.MaxFrame
}

// rateLog lets one line through per second and counts the others.
type rateLog struct {
	last       atomic.Int64
	suppressed atomic.Int64
}

// allow reports whether to log now, and how many were suppressed since the
// last line.
func (r *rateLog) allow() (bool, int64) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(time.Second) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return false, 0
	}
	return true, r.suppressed.Swap(0)
}

// warnIfOpen logs the client port's security at start, and warns when the
// port is reachable beyond loopback while everyone may log on under any
// name.
func (s *Server) warnIfOpen() {
	if s.tls != nil || s.cfg.Users != nil {
		users := 0
		if s.cfg.Users != nil {
			users = s.cfg.Users.Len()
		}
		tlsMode := "off"
		if s.tls != nil {
			tlsMode = "relay (crypto/tls in user space; " + kernelTLSNote() + ")"
			if s.tls.cfg.ClientCAFile != "" {
				tlsMode += ", client certificates required"
			}
		}
		s.log.Info("client port security", "tls", tlsMode, "users", users, "auth_workers", s.cfg.AuthWorkers)
	}
	if s.cfg.Users != nil || s.cfg.Authenticate != nil {
		return
	}
	host, _, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return
	}
	s.log.Warn("the client port listens beyond loopback without a users file: anyone who reaches it may log on under any client name, publish, subscribe and read stat (see docs/security.md)",
		"listen", s.cfg.Listen)
}

// ReloadUsers replaces the users file (tandem serve: on SIGHUP). New
// logons use it at once; connections already logged on keep the user and
// permissions they logged on with until they disconnect. A server started
// without a users file cannot be given one (every client would then be
// expected to authenticate): restart it.
func (s *Server) ReloadUsers(us *auth.Users) error {
	if s.cfg.Users == nil {
		return errors.New("engine: the server was started without a users file; restart it with one")
	}
	if us == nil {
		return errors.New("engine: ReloadUsers with no users")
	}
	s.sec.users.Store(us)
	s.log.Info("users file reloaded", "users", us.Len())
	return nil
}
