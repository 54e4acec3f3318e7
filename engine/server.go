// Package engine is Tandem's server: sharded event loops that accept client
// connections, parse wire frames, append publishes to the journal,
// acknowledge them once durable and deliver stored messages to subscribers.
//
// Threading. Each event loop (a shard) is one goroutine locked to its OS
// thread, optionally pinned to a core, owning a Poller (epoll), its own
// SO_REUSEPORT listening socket and every connection the kernel hands it.
// A connection never moves between loops and its state is touched only by
// its loop, so there are no locks around connection state. Work crosses
// loops only through the journal: a publisher on loop 1 appends under the
// journal lock (once per read batch, not per message); the journal's flusher
// goroutine syncs and then wakes the loops that wait for something (pending
// acks, subscriptions), which read the new records from the journal mapping
// themselves. See docs/architecture.md.
//
// Lock order: journal lock (held by Server.appendBatch and the index), then
// Server.namesMu. Loops never hold namesMu while appending.
//
// Security (auth.go, tls.go, docs/security.md): with Config.Users every logon
// authenticates, passwords verified on a bounded worker pool off the loops;
// with Config.TLS each connection's TLS runs in a relay goroutine that hands
// the loop plaintext over a socketpair, so the loops keep raw descriptors.
package engine

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/internal/dirlock"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/uring"
	"github.com/tandemhq/tandem/wire"
)

// Version is the server's version string, reported by stat.
var Version = "0.1.0-dev"

// Config configures a Server. The zero value of each field means its default.
type Config struct {
	Name string // instance name; default: the host name
	// Epoch is this run's origin epoch (record.OriginEpochID): 0 draws a
	// random one at every start, which is what a server wants (tests pin
	// it to compare two starts).
	Epoch   uint32
	Listen  string // client address; default 127.0.0.1:7400
	DataDir string // journal directory; default ./data

	// Engine picks the event-loop backend: "auto" (default: io_uring when
	// the kernel allows it, else epoll, saying why), "uring" or "epoll".
	Engine      string
	RingEntries int // io_uring submission queue entries per loop; default 1024

	Loops int   // event loops; default one per allowed CPU
	Pin   bool  // pin each loop's thread to a core
	CPUs  []int // cores for the loops (with Pin); default the allowed CPUs in order

	// MemoryPlacement: "first-touch" (default) makes every pinned loop
	// thread ask for node-local memory (set_mempolicy MPOL_LOCAL, which
	// overrides an inherited interleave or bind policy) and create its ring
	// and first buffers only after it is pinned, so their pages come from
	// its own NUMA node; "off" leaves placement to the process's policy.
	MemoryPlacement string

	// ZeroCopyMin: with io_uring, deliveries of records of at least this
	// many bytes go out zero-copy from the journal mapping
	// (IORING_OP_SENDMSG_ZC) rather than through the send buffer. 0 means
	// the default (DefaultZeroCopyMin); a negative value turns it off. A
	// connection on which the kernel reports it copied anyway (loopback)
	// goes back to copying after its first zero-copy send.
	ZeroCopyMin int
	// zcEvenIfCopied keeps zero-copy on although the kernel reports it
	// copied (loopback): tests use it to exercise the zero-copy path.
	zcEvenIfCopied bool
	// allowMaxFrameAboveSegment lets tests configure a max-frame a segment
	// cannot hold, to exercise the journal's own refusal.
	allowMaxFrameAboveSegment bool

	// MaxFrame is the largest frame accepted. Default: the smaller of
	// wire.DefaultMaxFrame and the largest Publish frame whose record a
	// journal segment holds (MaxFrameForSegment); an explicit value above
	// the latter is a configuration error.
	MaxFrame       int
	MaxTopic       int // longest topic accepted; default 1024
	ReadBuffer     int // initial read buffer per connection; default 64 KiB
	WriteHighWater int // pending output per connection above which the loop stops reading from it and pauses deliveries; default 1 MiB

	MinHeartbeat time.Duration // heartbeat intervals asked for are clamped to [Min, Max]; defaults 10ms, 10m
	MaxHeartbeat time.Duration
	LogonTimeout time.Duration // a connection must log on within this; default 10s

	// Authenticate checks a logon's credentials; nil accepts everyone. It
	// runs on the logon worker pool, never on an event loop.
	Authenticate func(name string, credentials []byte) error

	// Security and caps (see auth.go, tls.go and docs/security.md).
	Security

	// Journal settings; Dir, Logger, OnSync and RetentionHold are filled in
	// by the server.
	Journal journal.Options

	// Replication, when set, makes this instance replicate to and from its
	// peers (package replicate). Self and StateDir are filled in.
	Replication *replicate.Config

	// OnStorageFailure is what the server does once its journal failed
	// (full disk, EIO; see failstop.go): StorageFailureExit ("exit", the
	// default) drains, tells every client storage-failed, closes its
	// listeners and closes Failed() for the process to exit;
	// StorageFailureStay ("stay") does the same but keeps the client
	// listener open, serving only stat.
	OnStorageFailure string
	// DrainTimeout bounds the fail-stop drain (sync peers confirming what
	// is durable here; clients reading their last acks and the Error
	// frame); default DefaultDrainTimeout.
	DrainTimeout time.Duration

	// DirLock, when set, is the data directory's lock already held by the
	// caller (a shared-store passive that waited for it, shared.go): New
	// uses it instead of acquiring one, owns it from then on (Close
	// releases it; so does a failing New) and refuses a lock of another
	// directory.
	DirLock *dirlock.Lock
	// StallLimit, when positive, fences a shared-store active (shared.go):
	// once written data has waited longer than this for a sync that does
	// not return (or the lock file names another holder), OnStall is
	// called, once. The default, 0, watches nothing.
	StallLimit time.Duration
	// OnStall is called (from the watchdog goroutine) when the storage
	// stalled past StallLimit; nil logs and exits the process with status
	// 3 at once. It must not wait for the storage.
	OnStall func(err error)

	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
		if c.Name == "" {
			c.Name = "tandem"
		}
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7400"
	}
	if c.DataDir == "" {
		c.DataDir = "data"
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = min(wire.DefaultMaxFrame, MaxFrameForSegment(c.Journal.SegmentSize))
	}
	if c.MaxTopic == 0 {
		c.MaxTopic = 1024
	}
	if c.ReadBuffer == 0 {
		c.ReadBuffer = 64 << 10
	}
	if c.WriteHighWater == 0 {
		c.WriteHighWater = 1 << 20
	}
	if c.MinHeartbeat == 0 {
		c.MinHeartbeat = 10 * time.Millisecond
	}
	if c.MaxHeartbeat == 0 {
		c.MaxHeartbeat = 10 * time.Minute
	}
	if c.LogonTimeout == 0 {
		c.LogonTimeout = 10 * time.Second
	}
	if c.OnStorageFailure == "" {
		c.OnStorageFailure = StorageFailureExit
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Security.setDefaults()
}

// Server is one Tandem instance.
type Server struct {
	cfg    Config
	log    *slog.Logger
	j      *journal.Journal
	lock   *dirlock.Lock // the data directory's lock, held from New to Close
	idx    *index
	origin uint64
	epoch  uint32 // of this run (Config.Epoch)

	loops []*loop
	addr  net.Addr
	// engine is the backend in use and, for auto, why: what stat reports.
	engine   string
	useUring bool
	repl     *replicate.Replicator // nil without replication

	namesMu sync.Mutex
	names   map[string]*clientInfo

	started  time.Time
	ready    atomic.Bool // Start succeeded (Started)
	stopping atomic.Bool
	// drained is set once everything appended before shutdown is synced:
	// loops then send their last acks and close.
	drained atomic.Bool
	done    sync.WaitGroup
	closeMu sync.Mutex
	closed  bool
	// replHold is repl, published for the journal's retention goroutine.
	replHold atomic.Pointer[replicate.Replicator]
	// stages: the sampled per-stage latency breakdown (stages.go).
	stages stageProbe
	err    atomic.Pointer[error]
	// refusals counts publishes refused permanently (too-large, bad topic,
	// sequence-reused).
	refusals atomic.Uint64

	// Fail-stop (failstop.go): failing once the journal failed, failFinal
	// once the drain is over (loops send Error frames), failedCh closed at
	// the end; running is the started loops.
	failing, failFinal atomic.Bool
	failCause          atomic.Pointer[error]
	failOnce, replOnce sync.Once
	failedCh           chan struct{}
	running            atomic.Pointer[[]*loop]
	sec                secState   // access control, logon workers (auth.go)
	tls                *tlsServer // nil: plaintext client port (tls.go)
	// indexReady is set once rebuild has restored the index: from then on
	// stateCheckpoint hands it to the journal's checkpoints.
	indexReady atomic.Bool
	replayed   int // records rebuild replayed (tests)

	// stallStop ends the stall watchdog (shared.go); nil without one.
	stallStop chan struct{}
	stallDone chan struct{}
}

// clientInfo is what stat reports about a logged-on client.
type clientInfo struct {
	name   string
	remote string
	loop   int
	subs   atomic.Int32
	pub    *publisher
}

// checkAddrFree binds addr without SO_REUSEPORT and releases it: it fails
// when another socket is bound there. Port 0 is always free. It binds
// without listening, so no client can connect to this probe socket and be
// reset when it closes (a client dialing the instance as it starts would
// otherwise land in the probe's backlog).
func checkAddrFree(addr string) error {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	family, sa := unix.AF_INET, unix.Sockaddr(nil)
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		a := &unix.SockaddrInet4{Port: ta.Port}
		if ip4 != nil {
			copy(a.Addr[:], ip4)
		}
		sa = a
	} else {
		family = unix.AF_INET6
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16())
		sa = a
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	defer unix.Close(fd)
	// As net.Listen does: TIME_WAIT connections of an earlier instance
	// must not count, a listening socket does.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return nil
}

// chooseEngine resolves Config.Engine: whether to use io_uring, and the
// description start-up logs and stat report.
func chooseEngine(want string) (bool, string, error) {
	switch want {
	case "", "auto":
		if err := uring.Available(); err != nil {
			return false, "epoll (auto: " + err.Error() + ")", nil
		}
		return true, "io_uring (auto)", nil
	case "uring", "io_uring":
		if err := uring.Available(); err != nil {
			return false, "", err
		}
		return true, "io_uring", nil
	case "epoll":
		return false, "epoll", nil
	}
	return false, "", fmt.Errorf("unknown engine %q (want auto, uring or epoll)", want)
}

// MaxFrameForSegment is the largest Publish frame whose record fits a
// journal segment of segmentSize bytes (0: the journal's default).
func MaxFrameForSegment(segmentSize int64) int {
	return journal.MaxRecord(segmentSize) - (record.HeaderSize - wire.PublishOverhead)
}

// ErrClosed is returned by a Server used after Close.
var ErrClosed = errors.New("engine: server closed")

// New locks the data directory (creating it 0700 if missing; see package
// internal/dirlock: a directory held by another process is an error naming
// the holder, wrapping dirlock.ErrLocked), opens the journal (recovering
// it) and rebuilds the index; Start begins serving. Nothing in the
// directory is read before the lock is held.
func New(cfg Config) (s *Server, err error) {
	cfg.setDefaults()
	if cfg.DirLock != nil {
		defer func() {
			if err != nil {
				cfg.DirLock.Close() // New owns a lock it was given
			}
		}()
	}
	if limit := MaxFrameForSegment(cfg.Journal.SegmentSize); cfg.MaxFrame > limit && !cfg.allowMaxFrameAboveSegment {
		return nil, fmt.Errorf("engine: max-frame %d is larger than a journal segment can hold (%d with segments of %d bytes): lower max-frame or raise the segment size",
			cfg.MaxFrame, limit, journal.MaxRecord(cfg.Journal.SegmentSize)+64)
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.NumCPU()
	}
	if cfg.Pin {
		if len(cfg.CPUs) == 0 {
			allowed, err := poll.AllowedCPUs()
			if err != nil {
				return nil, err
			}
			for i := 0; i < cfg.Loops; i++ {
				cfg.CPUs = append(cfg.CPUs, allowed[i%len(allowed)])
			}
		}
		if len(cfg.CPUs) < cfg.Loops {
			return nil, fmt.Errorf("engine: %d loops but only %d cpus listed", cfg.Loops, len(cfg.CPUs))
		}
		if err := poll.CheckCPUs(cfg.CPUs[:cfg.Loops]); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	if cfg.Journal.PinFlusher {
		if err := poll.CheckCPUs([]int{cfg.Journal.FlusherCPU}); err != nil {
			return nil, fmt.Errorf("engine: flusher-cpus: %w", err)
		}
	}
	if r := cfg.Replication; r != nil && r.PinSenders {
		if err := poll.CheckCPUs([]int{r.SenderCPU}); err != nil {
			return nil, fmt.Errorf("engine: repl-cpus: %w", err)
		}
	}
	switch cfg.MemoryPlacement {
	case "", "first-touch", "off":
	default:
		return nil, fmt.Errorf("engine: memory placement %q: want first-touch or off", cfg.MemoryPlacement)
	}
	switch cfg.OnStorageFailure {
	case StorageFailureExit, StorageFailureStay:
	default:
		return nil, fmt.Errorf("engine: on-storage-failure %q: want %s or %s", cfg.OnStorageFailure, StorageFailureExit, StorageFailureStay)
	}
	useUring, engineDesc, err := chooseEngine(cfg.Engine)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	var ts *tlsServer
	if cfg.TLS != nil {
		if ts, err = newTLSServer(*cfg.TLS, cfg.LogonTimeout); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	s = &Server{
		engine:   engineDesc,
		useUring: useUring,
		cfg:      cfg,
		log:      cfg.Logger.With("instance", cfg.Name),
		names:    make(map[string]*clientInfo),
		failedCh: make(chan struct{}),
		tls:      ts,
	}
	lock, err := takeDirLock(&cfg)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if cfg.Journal.FS == nil { // the OS file system: check it can hold the journal
		seg := cfg.Journal.SegmentSize
		if seg == 0 {
			seg = journal.DefaultSegmentSize
		}
		if err := checkFreeSpace(cfg.DataDir, seg); err != nil {
			lock.Close()
			return nil, err
		}
	}
	jo := cfg.Journal
	if jo.SyncVia == "" && useUring {
		jo.SyncVia = journal.SyncUring // group commits through the flusher's own ring
	}
	jo.Dir = cfg.DataDir
	jo.Logger = s.log
	jo.OnSync = s.onSync
	jo.OnFlushStage = s.stages.onFlushStage
	jo.OnFail = s.onJournalFail
	jo.StateCheckpoint = s.stateCheckpoint
	if cfg.Replication != nil {
		// Retention never deletes what a destination has not persisted. The
		// replicator exists only after Open; until then, hold everything.
		jo.RetentionHold = func() uint64 {
			if r := s.replHold.Load(); r != nil {
				return r.Hold()
			}
			return 0
		}
	}
	j, err := journal.Open(jo)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("engine: open journal: %w", err)
	}
	s.j = j
	// This run's origin stream: the instance's name, its journal and an
	// epoch drawn at every start. A new journal (a wiped data directory) is
	// a new origin, and so is every start: a journal restored from an old
	// copy, which reuses local seqs, never reuses (origin, originSeq)
	// identities that peers and subscribers already hold (found by the
	// simulator, docs/architecture.md). Records of earlier runs keep their
	// origins; the index follows each as an identity stream (store.go).
	s.epoch = cfg.Epoch
	if s.epoch == 0 {
		s.epoch = newEpoch()
	}
	s.origin = record.OriginEpochID(cfg.Name, j.ID(), s.epoch)
	s.idx = newIndex(s.origin)
	s.idx.instance = record.OriginID(cfg.Name, j.ID())
	if err := s.rebuild(); err != nil {
		j.Close()
		lock.Close()
		return nil, err
	}
	if cfg.Replication != nil {
		rc := *cfg.Replication
		rc.Self = cfg.Name
		if rc.IO == "" && useUring {
			rc.IO = replicate.IORing // links through io_uring too, batches gathered from the mapping
		}
		if rc.StateDir == "" {
			rc.StateDir = cfg.DataDir
		}
		rc.JournalID = j.ID()
		rc.Epoch = s.epoch
		if rc.MaxFrame == 0 {
			// Every record this instance accepts fits in a link frame.
			rc.MaxFrame = replicate.FrameFor(cfg.MaxFrame + record.HeaderSize)
		}
		r, err := replicate.New(rc, j, s, s.wakeForAcks, s.log)
		if err != nil {
			j.Close()
			lock.Close()
			return nil, fmt.Errorf("engine: %w", err)
		}
		r.SetStageHooks(replicate.StageHooks{
			Shipped: func(through uint64) { s.stages.stamp(stShipped, through) },
			PeerAck: func(through uint64) { s.stages.stamp(stPeerAck, through) },
			AckSent: func(local uint64) { s.stages.done(probeRepl, local) },
		})
		s.repl = r
		s.replHold.Store(r)
	}
	return s, nil
}

// rebuild restores de-duplication state and counts: from the index state
// of the journal's newest checkpoint when there is a usable one, replaying
// only the records after it, else by replaying every record held.
func (s *Server) rebuild() error {
	start := time.Now()
	from := s.j.FirstSeq()
	fromState := uint64(0)
	checkpointed := s.j.Stats().CheckpointedSegments // Stats takes the journal lock
	if seq, state := s.j.RecoveredState(); state != nil {
		switch x, err := decodeIndexState(state, s.idx.instance, s.idx.self); {
		case err != nil:
			s.log.Warn("journal checkpoint: index state not usable; replaying every record", "seq", seq, "err", err)
		case seq+1 < from:
			s.log.Warn("journal checkpoint: index state older than the journal's first record; replaying every record", "seq", seq, "first", from)
		default:
			s.idx, from, fromState = x, seq+1, seq
		}
	}
	c, err := s.j.NewCursor(from)
	if err != nil {
		return fmt.Errorf("engine: rebuild index: %w", err)
	}
	defer c.Close()
	s.j.Lock()
	defer s.j.Unlock()
	n := 0
	for {
		v, ok := c.Next()
		if !ok {
			break
		}
		s.idx.observeLocked(v)
		n++
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("engine: rebuild index: %w", err)
	}
	s.replayed = n
	s.indexReady.Store(true)
	s.log.Info("journal recovered", "first", s.j.FirstSeq(), "last", s.j.LastSeq(),
		"publishers", len(s.idx.publishers), "topics", len(s.idx.topics),
		"checkpointed_segments", checkpointed, "index_state_seq", fromState,
		"replayed", n, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// stateCheckpoint is the journal's StateCheckpoint hook: the index as of
// the last appended seq (every append updates the index under the journal
// lock, so under it the two agree). Nothing until rebuild has finished.
func (s *Server) stateCheckpoint() (uint64, []byte, error) {
	if !s.indexReady.Load() {
		return 0, nil, nil
	}
	s.j.Lock()
	defer s.j.Unlock()
	return s.j.LastSeq(), s.idx.appendState(nil), nil
}

// Start creates the event loops and their listening sockets and starts
// serving. It returns once the server accepts connections.
func (s *Server) Start() error {
	s.started = time.Now()
	// The loops share the port with SO_REUSEPORT, which would also let this
	// instance silently share it with another process (splitting clients
	// between two brokers): make sure nobody holds it first.
	if err := checkAddrFree(s.cfg.Listen); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	s.startAuthWorkers()
	s.warnIfOpen()
	var port int
	for i := 0; i < s.cfg.Loops; i++ {
		cpu := -1
		if s.cfg.Pin {
			cpu = s.cfg.CPUs[i]
		}
		lp, err := newLoop(s, i, cpu, s.useUring)
		if err == nil {
			var addr net.Addr
			addr, err = lp.listen(s.cfg.Listen, port)
			if err == nil && i == 0 {
				s.addr = addr
				port = addr.(*net.TCPAddr).Port
			}
			if err != nil {
				lp.closeBackend()
			}
		}
		if err != nil {
			for _, l := range s.loops {
				l.closeListener()
				l.closeBackend()
			}
			s.loops = nil
			return fmt.Errorf("engine: %w", err)
		}
		s.loops = append(s.loops, lp)
	}
	started := make(chan error, len(s.loops))
	for _, lp := range s.loops {
		s.done.Add(1)
		go lp.run(started)
	}
	var errs []error
	for range s.loops {
		if err := <-started; err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return err
	}
	running := s.loops
	s.running.Store(&running)
	s.startStallWatch()
	if s.repl != nil {
		if err := s.repl.Start(); err != nil {
			s.Close()
			return fmt.Errorf("engine: %w", err)
		}
	}
	s.ready.Store(true)
	s.log.Info("serving", "listen", s.addr.String(), "loops", len(s.loops), "engine", s.engine,
		"pinned", s.cfg.Pin, "data", s.cfg.DataDir)
	return nil
}

// Addr returns the address clients connect to.
func (s *Server) Addr() net.Addr { return s.addr }

// Journal returns the server's journal (for tests and tools).
func (s *Server) Journal() *journal.Journal { return s.j }

// Origin returns the origin id of what this run of the instance publishes
// (record.OriginEpochID of its name, journal and epoch).
func (s *Server) Origin() uint64 { return s.origin }

// onSync runs on the journal's flusher goroutine after every sync: it wakes
// the loops that sleep while waiting for durability, and the replication
// senders.
func (s *Server) onSync(synced uint64) {
	s.stages.stamp(stSynced, synced)
	if s.repl != nil {
		s.repl.Notify()
	}
	s.wakeForAcks()
}

// wakeForAcks wakes the loops that sleep while waiting for acks or
// deliveries; the replicator calls it when a sync destination catches up.
func (s *Server) wakeForAcks() {
	for _, lp := range s.loops {
		if lp.sleeping.Load() && lp.interested.Load() {
			lp.wake()
		}
	}
}

// Close shuts the server down gracefully: stop accepting and reading, sync
// everything appended, send the acks that sync earned, close connections,
// close the journal.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stopping.Store(true)
	s.stopStallWatch()
	for _, lp := range s.loops {
		lp.wake()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := s.j.WaitSynced(ctx, s.j.LastSeq())
	cancel()
	s.drained.Store(true)
	for _, lp := range s.loops {
		lp.wake()
	}
	s.done.Wait()
	if s.failing.Load() {
		<-s.failedCh // the fail-stop sequence ends once the loops did
	}
	s.stopAuthWorkers()
	for _, lp := range s.loops {
		lp.closeBackend()
	}
	s.closeRepl()
	jerr := s.j.Close()
	// Last: the directory is ours until everything in it is closed.
	return errors.Join(err, jerr, s.lock.Close())
}

// ackPoint is the highest local seq a persisted ack may cover: durable
// here and on every sync destination that is not downgraded.
func (s *Server) ackPoint() uint64 {
	p := s.j.SyncedSeq()
	if s.repl != nil {
		p = min(p, s.repl.SyncPoint())
	}
	return p
}

// syncPeers is the sync-peer count a persisted ack covering local seq
// carries: the sync destinations that hold, durably, everything up to it.
func (s *Server) syncPeers(local uint64) uint8 {
	if s.repl == nil {
		return 0
	}
	return uint8(min(s.repl.SyncedPeers(local), 255))
}

// StoreReplicated stores records a replication peer shipped (implementing
// replicate.Store): exact de-duplication on (publisher, publisher
// sequence), under the journal lock once per batch. It returns the local
// seq whose durability covers every record of the batch, stored or
// duplicate.
func (s *Server) StoreReplicated(recs []record.View, via uint64) (uint64, error) {
	recv := stageNow()
	s.j.Lock()
	defer s.j.Unlock()
	var wait uint64
	probed := s.stages.busy(recv)
	for _, v := range recs {
		p := s.idx.publisherLocked(v.Publisher())
		digest := messageDigest(v.Topic(), v.Payload())
		if p.has(v.PubSeq()) {
			if p.conflicts(v.PubSeq(), digest) {
				// Another message under the same (publisher, pubSeq): keep
				// ours, never store or count theirs as a copy of it.
				s.idx.conflicts.Add(1)
				if !p.conflictLogged {
					p.conflictLogged = true
					s.log.Warn("replicated record conflicts with a stored one: same publisher sequence, different topic or payload; not stored (logged once per publisher, counted in stat's conflicts)",
						"publisher", fmt.Sprintf("%016x", v.Publisher()), "pub_seq", v.PubSeq(), "origin", fmt.Sprintf("%016x", v.Origin()))
				}
			} else {
				s.idx.duplicates.Add(1)
			}
			wait = max(wait, p.lastLocal)
			continue
		}
		seq, err := s.j.AppendRecordLocked(v.Bytes(), via)
		if err != nil {
			return 0, err
		}
		if !probed {
			probed = s.stages.claim(probeRepl, seq, recv, stageNow()) || true
		}
		p.add(v.PubSeq(), seq)
		p.remember(v.PubSeq(), seq, digest)
		s.idx.originLocked(v.Origin(), v.OriginSeq(), seq, false)
		s.idx.topicLocked(v.Topic()).n.Add(1)
		s.idx.stored.Add(1)
		wait = seq
	}
	return wait, nil
}

// Replicator returns the replicator (nil without replication).
func (s *Server) Replicator() *replicate.Replicator { return s.repl }

// logon registers a client name; a name may be logged on once at a time.
func (s *Server) logon(name, remote string, loopID int) (*clientInfo, error) {
	s.j.Lock()
	p := s.idx.publisherLocked(record.ID(name))
	s.j.Unlock()
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if _, ok := s.names[name]; ok {
		return nil, errNameInUse
	}
	ci := &clientInfo{name: name, remote: remote, loop: loopID, pub: p}
	s.names[name] = ci
	return ci, nil
}

var errNameInUse = errors.New("client name already logged on")

func (s *Server) logoff(ci *clientInfo) {
	s.namesMu.Lock()
	if s.names[ci.name] == ci {
		delete(s.names, ci.name)
	}
	s.namesMu.Unlock()
}

// pubSeqs returns what a logon reply tells publisher p: the highest
// publisher sequence stored (where a storeless publisher continues) and the
// top of its first run of stored sequences the ack point covers (what an HA
// client may drop from its publish store).
func (s *Server) pubSeqs(p *publisher) (last, acked uint64) {
	s.j.Lock()
	defer s.j.Unlock()
	return p.last, p.ackedThrough(s.ackPoint())
}

// Stats returns the document `tandem stat` prints.
func (s *Server) Stats() *wire.Stats {
	js := s.j.Stats()
	st := &wire.Stats{
		Instance:      s.cfg.Name,
		Version:       Version,
		Engine:        s.engine,
		Loops:         len(s.loops),
		UptimeSeconds: time.Since(s.started).Seconds(),
		Stored:        s.idx.stored.Load(),
		Duplicates:    s.idx.duplicates.Load(),
		Conflicts:     s.idx.conflicts.Load(),
		Refused:       s.refusals.Load(),
		Stages:        s.stages.stats(),
		Journal: wire.JournalStats{
			FirstSeq: js.FirstSeq, LastSeq: js.LastSeq, SyncedSeq: js.SyncedSeq,
			Bytes: js.Bytes, UsedBytes: js.UsedBytes, RetentionHeldBytes: s.j.RetentionHeldBytes(),
			Segments: js.Segments, Syncs: js.Syncs, SyncVia: js.SyncVia,
			PreallocFailures: js.PreallocFailures,
		},
		Storage: "ok",
	}
	if js.Err != nil {
		st.Storage, st.StorageError = "failed: "+js.Err.Error(), js.Err.Error()
	}
	for _, lp := range s.loops {
		st.Connections += int(lp.nconns.Load())
		st.Subscriptions += int(lp.nsubs.Load())
		st.Delivered += lp.delivered.Load()
		st.SlowConsumers += int(lp.nslow.Load())
		if lp.ur != nil && lp.zcMinReady.Load() > 0 {
			if st.ZeroCopy == nil {
				st.ZeroCopy = &wire.ZeroCopyStats{MinBytes: int(lp.zcMinReady.Load())}
			}
			st.ZeroCopy.Sends += uint64(lp.zcSends.Load())
			st.ZeroCopy.Bytes += uint64(lp.zcBytes.Load())
			st.ZeroCopy.Held += lp.zcHolds.Load()
			st.ZeroCopy.CopiedConns += uint64(lp.zcCopiedConns.Load())
		}
	}
	s.j.Lock()
	for _, t := range s.idx.topics {
		st.Topics = append(st.Topics, wire.TopicStats{Topic: t.name, Messages: t.n.Load()})
	}
	s.j.Unlock()
	sort.Slice(st.Topics, func(a, b int) bool { return st.Topics[a].Topic < st.Topics[b].Topic })
	s.namesMu.Lock()
	infos := make([]*clientInfo, 0, len(s.names))
	for _, ci := range s.names {
		infos = append(infos, ci)
	}
	s.namesMu.Unlock()
	s.j.Lock()
	for _, ci := range infos {
		st.Clients = append(st.Clients, wire.ClientStats{Name: ci.name, Remote: ci.remote, Loop: ci.loop,
			Subscriptions: int(ci.subs.Load()), LastPubSeq: ci.pub.last})
	}
	s.j.Unlock()
	sort.Slice(st.Clients, func(a, b int) bool { return st.Clients[a].Name < st.Clients[b].Name })
	if s.repl != nil {
		if a := s.repl.Addr(); a != nil {
			st.ReplicationListen = a.String()
		}
		for _, d := range s.repl.Stats() {
			st.Replication = append(st.Replication, wire.DestinationStats{
				Name: d.Name, Addr: d.Addr, Mode: d.Mode, State: d.State, Connected: d.Connected,
				Passthrough: d.Passthrough, Topics: d.Topics, SentThrough: d.SentThrough,
				AckedThrough: d.AckedThrough, LagMessages: d.LagMessages, LagSeconds: d.LagSeconds,
				Reason: d.Reason, SkippedTooLarge: d.SkippedTooLarge, MaxRecord: d.MaxRecord,
				HoldBytes: d.HoldBytes, HoldAlarm: d.HoldAlarm,
			})
		}
	}
	return st
}

func (s *Server) statsJSON() []byte {
	b, err := json.Marshal(s.Stats())
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

// newEpoch draws a random non-zero origin epoch.
func newEpoch() uint32 {
	var b [4]byte
	for {
		if _, err := crand.Read(b[:]); err != nil {
			panic("engine: crypto/rand: " + err.Error())
		}
		if e := binary.LittleEndian.Uint32(b[:]); e != 0 {
			return e
		}
	}
}
