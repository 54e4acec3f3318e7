package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tandemhq/tandem/internal/dirlock"
	"github.com/tandemhq/tandem/wire"
)

// Shared-store HA (docs/ha.md). Several processes run on one data
// directory (a SAN or NFS mount shared by two machines); the one holding
// the directory's lock (package internal/dirlock) is the active and runs a
// Server; the others are passives and run a StandbyServer on their own
// client address until they get the lock. This file holds the engine's
// part: a lock handed in by the caller (Config.DirLock), the stall
// watchdog that fences an active whose storage stopped answering
// (Config.StallLimit), and the StandbyServer.

// ErrStorageStalled is wrapped by the error the stall watchdog reports:
// written data waited longer than Config.StallLimit for its sync, or the
// lock file names another holder.
var ErrStorageStalled = errors.New("engine: shared storage stalled")

// takeDirLock returns the lock New keeps for the server's life: the one
// the caller holds (Config.DirLock, which must be the data directory's) or
// a fresh one.
func takeDirLock(cfg *Config) (*dirlock.Lock, error) {
	if cfg.DirLock == nil {
		lock, err := dirlock.Acquire(cfg.DataDir, cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		return lock, nil
	}
	held, err1 := filepath.Abs(cfg.DirLock.Dir())
	want, err2 := filepath.Abs(cfg.DataDir)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("engine: data directory lock: %w", err)
	}
	if filepath.Clean(held) != filepath.Clean(want) {
		return nil, fmt.Errorf("engine: the lock given (Config.DirLock) is of %s, not of the data directory %s", held, want)
	}
	return cfg.DirLock, nil
}

// stallTick is how often the watchdog looks, as a fraction of the limit.
const stallTicksPerLimit = 4

// startStallWatch starts the stall watchdog when Config.StallLimit is set.
//
// The journal's flusher syncs whatever is written as soon as the previous
// sync returned (or within sync-delay, which is far below any sensible
// limit). So when LastSeq stays above SyncedSeq, with SyncedSeq not
// moving, for longer than the limit, an fdatasync (or the write before
// it) has not returned for at least that long: the storage is stalled. The
// watchdog samples every StallLimit/4, so it fires between StallLimit and
// 1.25 x StallLimit after the stall began. Each tick it also reads the
// lock file: a holder other than this process (host and pid) means the
// lock was lost (an NFS lease that expired while this machine was cut
// off) and another process took over. Either way OnStall runs once.
func (s *Server) startStallWatch() {
	if s.cfg.StallLimit <= 0 {
		return
	}
	s.stallStop, s.stallDone = make(chan struct{}), make(chan struct{})
	onStall := s.cfg.OnStall
	if onStall == nil {
		onStall = func(err error) {
			s.log.Error("exiting at once: shared storage stalled (fencing)", "err", err, "status", 3)
			os.Exit(3)
		}
	}
	host, _ := os.Hostname()
	pid := os.Getpid()
	go func() {
		defer close(s.stallDone)
		tick := time.NewTicker(max(s.cfg.StallLimit/stallTicksPerLimit, time.Millisecond))
		defer tick.Stop()
		var pendingSince time.Time
		var pendingAt uint64 // SyncedSeq when pendingSince was set
		for {
			select {
			case <-s.stallStop:
				return
			case now := <-tick.C:
				synced, last := s.j.SyncedSeq(), s.j.LastSeq()
				switch {
				case last <= synced || s.j.Err() != nil: // all synced, or failed (fail-stop handles it)
					pendingSince = time.Time{}
				case pendingSince.IsZero() || synced != pendingAt:
					pendingSince, pendingAt = now, synced
				case now.Sub(pendingSince) >= s.cfg.StallLimit:
					onStall(fmt.Errorf("%w: records %d..%d written, not synced for %v (shared-store-stall-limit %v)",
						ErrStorageStalled, synced+1, last, now.Sub(pendingSince).Round(time.Millisecond), s.cfg.StallLimit))
					return
				}
				if h, err := dirlock.ReadHolder(s.cfg.DataDir); err == nil && (h.PID != pid || h.Host != host) {
					onStall(fmt.Errorf("%w: the lock file names %s, not this process (pid %d on %q): the lock was lost",
						ErrStorageStalled, h, pid, host))
					return
				}
			}
		}
	}()
}

// stopStallWatch ends the watchdog (Close).
func (s *Server) stopStallWatch() {
	if s.stallStop != nil {
		close(s.stallStop)
		<-s.stallDone
		s.stallStop = nil
	}
}

// StandbyServer is a shared-store passive's client listener: it writes
// nothing and never opens the journal. It speaks just enough of the wire
// protocol:
//
//   - a Logon from a client is answered with an Error frame with
//     wire.CodeStandby and the text "standby: active is HOST pid PID"
//     (the holder recorded in the lock file at that moment, "unknown"
//     when it cannot be read), and the connection is half-closed (then
//     closed once the client closes, or after a second); an HA client
//     moves on to its next server at once, without counting a failure;
//   - a Logon whose name starts with StatClientPrefix (`tandem stat`) is
//     accepted (version as the client asks, at most wire.MaxVersion; no
//     heartbeats) and each StatRequest is answered with a wire.Stats
//     document with State "standby" and Active naming the holder;
//     heartbeats are ignored, anything else closes the connection;
//   - a connection that does not log on within the logon timeout is
//     closed.
type StandbyServer struct {
	ln      net.Listener
	name    string
	dir     string
	timeout time.Duration
	log     *slog.Logger
	started time.Time

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// ListenStandby starts a StandbyServer for the instance name on addr; dir
// is the shared data directory (only its lock file is read). A zero
// logonTimeout means 10s.
func ListenStandby(addr, name, dir string, logonTimeout time.Duration, log *slog.Logger) (*StandbyServer, error) {
	if logonTimeout <= 0 {
		logonTimeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("engine: standby: %w", err)
	}
	s := &StandbyServer{ln: ln, name: name, dir: dir, timeout: logonTimeout, log: log,
		started: time.Now(), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr returns the listening address.
func (s *StandbyServer) Addr() net.Addr { return s.ln.Addr() }

// Standby reports whether this process is a passive: true until Close
// (for a readiness probe, which answers 503 standby meanwhile).
func (s *StandbyServer) Standby() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed
}

// Close stops listening, closes every connection and waits for them: the
// address is free for the engine once it returns.
func (s *StandbyServer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// activeText describes the active for clients: "HOST pid PID".
func (s *StandbyServer) activeText() string {
	h, err := dirlock.ReadHolder(s.dir)
	if err != nil || (h.Host == "" && h.PID == 0) {
		return "unknown"
	}
	return fmt.Sprintf("%s pid %d", h.Host, h.PID)
}

func (s *StandbyServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("standby: accept", "err", err)
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *StandbyServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	c.SetDeadline(time.Now().Add(s.timeout))
	buf := make([]byte, 0, 4096)
	loggedOn := false
	for {
		f, n, err := wire.Split(buf, 64<<10)
		if err != nil {
			refuse(c, wire.AppendError(nil, wire.CodeMalformed, err.Error()))
			return
		}
		if n == 0 {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)] // grow: a frame larger than the buffer
			}
			m, err := c.Read(buf[len(buf):cap(buf)])
			if err != nil {
				return
			}
			buf = buf[:len(buf)+m]
			continue
		}
		var out []byte
		switch {
		case !loggedOn && f.Type == wire.TypeLogon:
			var lg wire.Logon
			if err := wire.DecodeLogon(f.Body, &lg); err != nil {
				refuse(c, wire.AppendError(nil, wire.CodeMalformed, err.Error()))
				return
			}
			if !strings.HasPrefix(string(lg.Name), StatClientPrefix) {
				refuse(c, wire.AppendError(nil, wire.CodeStandby, "standby: active is "+s.activeText()))
				return
			}
			v := min(lg.MaxVersion, wire.MaxVersion)
			if v < lg.MinVersion || v < wire.MinVersion {
				refuse(c, wire.AppendError(nil, wire.CodeVersion, "no common protocol version"))
				return
			}
			out = wire.AppendLogonReply(nil, &wire.LogonReply{Version: v, Instance: []byte(s.name)})
			loggedOn = true
			c.SetDeadline(time.Time{})
		case loggedOn && f.Type == wire.TypeStatRequest:
			doc, _ := json.Marshal(&wire.Stats{Instance: s.name, State: "standby", Active: s.activeText(),
				UptimeSeconds: time.Since(s.started).Seconds(), Storage: "standby"})
			out = wire.AppendStatReply(nil, doc)
		case loggedOn && f.Type == wire.TypeHeartbeat:
		default:
			refuse(c, wire.AppendError(nil, wire.CodeStandby, "standby: active is "+s.activeText()+"; only stat is served here"))
			return
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		buf = append(buf[:0], buf[n:]...)
	}
}

// refuse sends an Error frame and ends the connection the way the engine
// does: half-close after it, then read and discard what the client still
// sends until its close (at most a second), so unread input does not turn
// the close into a reset that could destroy the Error frame in flight.
func refuse(c net.Conn, frame []byte) {
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(frame); err != nil {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	var sink [512]byte
	for {
		if _, err := c.Read(sink[:]); err != nil {
			return
		}
	}
}
