package engine

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/wire"
)

// Fail-stop. Once the journal has failed (a write, sync or segment
// installation failed: journal.Journal.Err is non-nil and stays so),
// nothing can be persisted any more, and a live instance that refuses
// every publish is worse than a dead one: HA clients keep reconnecting to
// it instead of failing over. The journal notifies the server through
// journal.Options.OnFail (off the hot path: once, from the flusher), and
// failStop runs, on its own goroutine:
//
//  1. Drain: the acks for what is durable here (SyncedSeq at the failure)
//     go out once every sync replication peer confirmed it too, waiting
//     at most Config.DrainTimeout for the peers (the ack point rule is
//     unchanged: nothing is acknowledged that is not durable here and on
//     the sync peers). Meanwhile logons are refused with storage-failed.
//  2. Every loop sends its connections the acks the ack point covers,
//     then an Error frame with wire.CodeStorageFailed naming the cause,
//     and closes them once that output is written (at most DrainTimeout
//     later; a client that does not read loses it). In exit mode the
//     loops also close their listening sockets, so clients' reconnects
//     are refused at once.
//  3. The replicator is closed (its listener and links).
//  4. Failed() is closed; the cause is FailureCause(). `tandem serve`
//     exits with status 3 in exit mode.
//
// In stay mode (Config.OnStorageFailure "stay") the process stays up,
// the client listener stays open, and only `tandem stat` is served: a
// logon whose name starts with StatClientPrefix is accepted and may send
// only stat requests and heartbeats; any other logon is refused with
// storage-failed. Stats report Storage "failed: <cause>".

// Values of Config.OnStorageFailure.
const (
	StorageFailureExit = "exit"
	StorageFailureStay = "stay"
)

// StatClientPrefix starts the client names `tandem stat` logs on with.
// After a storage failure only such logons are accepted (and only for stat
// requests).
const StatClientPrefix = "tandem-stat-"

// DefaultDrainTimeout bounds each step of the fail-stop drain.
const DefaultDrainTimeout = 2 * time.Second

// ErrNoSpace is returned by New when the data directory's file system
// cannot hold the journal's first segments.
var ErrNoSpace = errors.New("engine: not enough free space for the journal")

// Failed returns a channel closed once the journal has failed and the
// fail-stop sequence (drain, Error frames, connections and listeners
// closed) has run. FailureCause says why.
func (s *Server) Failed() <-chan struct{} { return s.failedCh }

// FailureCause returns the journal error that failed the server, or nil.
func (s *Server) FailureCause() error {
	if p := s.failCause.Load(); p != nil {
		return *p
	}
	return nil
}

// onJournalFail is the journal's OnFail callback: it starts the fail-stop
// sequence once, without blocking the flusher.
func (s *Server) onJournalFail(err error) {
	s.failOnce.Do(func() {
		s.failCause.Store(&err)
		s.failing.Store(true)
		go s.failStop(err)
	})
}

// failText is the text of the Error frames and logon refusals after a
// storage failure.
func (s *Server) failText() string {
	return "storage failed: " + s.FailureCause().Error()
}

func (s *Server) failStop(cause error) {
	durable := s.j.SyncedSeq()
	s.log.Error("storage failed: stopping (fail-stop)", "cause", cause, "durable_through", durable,
		"on_storage_failure", s.cfg.OnStorageFailure)
	s.wakeForAcks()
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	if s.ackPoint() < durable {
		tick := time.NewTicker(time.Millisecond)
		for s.ackPoint() < durable && time.Now().Before(deadline) {
			<-tick.C
		}
		tick.Stop()
		if p := s.ackPoint(); p < durable {
			s.log.Warn("storage failed: sync peers did not confirm everything durable here within the drain timeout; those messages stay unacknowledged",
				"ack_point", p, "durable_through", durable, "drain_timeout", s.cfg.DrainTimeout)
		}
	}
	s.failFinal.Store(true)
	if lps := s.running.Load(); lps != nil {
		timer := time.NewTimer(2*s.cfg.DrainTimeout + time.Second)
		for _, lp := range *lps {
			lp.wake()
		}
		for _, lp := range *lps {
			select {
			case <-lp.failDone:
			case <-timer.C:
			}
		}
		timer.Stop()
	}
	s.closeRepl()
	close(s.failedCh)
}

// closeRepl closes the replicator once (fail-stop or Close).
func (s *Server) closeRepl() {
	if s.repl != nil {
		s.replOnce.Do(func() { s.repl.Close() })
	}
}

// failPass is a loop's part of the fail-stop sequence (step 2): the last
// acks, an Error frame to every connection (but stat-only ones), the
// listener closed in exit mode. failCheck then closes the connections once
// their output is written, or at the drain deadline.
func (lp *loop) failPass() {
	s := lp.srv
	lp.failHandled = true
	lp.failDeadline = lp.now + int64(s.cfg.DrainTimeout)
	lp.afterSync()
	text := s.failText()
	for _, c := range lp.conns {
		if !c.statOnly {
			c.failDrain(wire.CodeStorageFailed, text)
		}
	}
	if s.cfg.OnStorageFailure != StorageFailureStay {
		lp.closeListener()
	}
	lp.flushWrites()
}

// failCheck runs every iteration once storage failed: the loop's fail
// pass when it is due, then the drain's end.
func (lp *loop) failCheck() {
	if !lp.failHandled {
		if !lp.srv.failFinal.Load() {
			return
		}
		lp.failPass()
	}
	if lp.failClosed {
		return
	}
	waiting := false
	for _, c := range lp.conns {
		if c.closeAfterSend && !c.closed {
			if lp.now < lp.failDeadline {
				waiting = true
				break
			}
			c.close() // the drain timed out: the client is not reading
		}
	}
	if !waiting {
		lp.failClosed = true
		close(lp.failDone)
	}
}

// failExit closes failDone when the loop ends before the fail-stop
// sequence finished with it (Close meanwhile).
func (lp *loop) failExit() {
	if !lp.failClosed {
		lp.failClosed = true
		close(lp.failDone)
	}
}

// failDrain queues an Error frame after the pending output and closes the
// connection once everything is written (failCheck enforces the drain
// deadline). It stops reading the connection meanwhile. Unlike fail it
// logs nothing: the fail-stop is logged once, not per connection.
func (c *conn) failDrain(code wire.Code, text string) {
	if c.closed || c.closeAfterSend {
		return
	}
	c.endBatch()
	c.wbuf = wire.AppendError(c.wbuf, code, text)
	c.closeAfterSend, c.linger = true, true
	if c.lp.ur != nil {
		c.readPaused = true
		c.flush()
		if !c.sendInFlight {
			c.finishAfterSend()
		}
		return
	}
	c.pauseReading(true)
	c.flush() // half-closes the connection once written
}

// finishAfterSend ends a connection whose Error frame (closeAfterSend) is
// written: closes it, or with linger half-closes it (FIN after the
// output) and reads on, discarding, until the client closes.
func (c *conn) finishAfterSend() {
	if c.closed || c.lingering {
		return
	}
	if !c.linger {
		c.close()
		return
	}
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		c.close()
		return
	}
	c.lingering = true
	c.rn = 0
	c.readPaused = false
	if c.lp.ur != nil {
		c.lp.ur.armRecv(c)
		return
	}
	c.lp.poller.Mod(c.fd, c.events())
}

// discardInput reads and drops what a lingering connection's client sent,
// closing the connection at its EOF (epoll).
func (c *conn) discardInput() {
	for i := 0; i < maxReadsPerEvent && !c.closed; i++ {
		n, err := unix.Read(c.fd, c.rbuf)
		if n > 0 {
			continue
		}
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		c.close()
		return
	}
}

// refuseAfterFailure answers a logon after a storage failure: only stat
// clients are accepted (stat-only). It returns true when it refused.
func (c *conn) refuseAfterFailure(name string) bool {
	s := c.lp.srv
	if !s.failing.Load() {
		return false
	}
	if strings.HasPrefix(name, StatClientPrefix) {
		c.statOnly = true
		return false
	}
	c.fail(wire.CodeStorageFailed, s.failText()+"; this instance accepts no clients")
	return true
}

// checkFreeSpace fails when dir's file system cannot hold the journal's
// next segments: two (the first and the one preallocated after it) for a
// new journal, one (the next preallocation) when segments exist.
func checkFreeSpace(dir string, segSize int64) error {
	need, why := 2*segSize, "a new journal needs two segments: the first and the next one preallocated"
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if n := e.Name(); len(n) == 24 && strings.HasSuffix(n, ".seg") {
				need, why = segSize, "the journal needs room to preallocate its next segment"
				break
			}
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("engine: statfs %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return fmt.Errorf("%w: data directory %s has %d bytes free, %s of %d bytes (%d bytes)",
			ErrNoSpace, dir, free, why, segSize, need)
	}
	return nil
}
