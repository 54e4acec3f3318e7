package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/tandemhq/tandem/admin"
	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/replicate"
)

// serveConfig is the TOML configuration of `tandem serve`. Every key has a
// flag of the same name (with dashes): flags given on the command line
// override the file.
type serveConfig struct {
	Name   string `toml:"name"`
	Listen string `toml:"listen"`
	Data   string `toml:"data"`
	// Admin is the admin listener's HOST:PORT (/metrics, /healthz,
	// /readyz, /v1/stat, the console; package admin); empty: off.
	Admin string `toml:"admin"`

	Engine      string `toml:"engine"` // auto, uring or epoll
	RingEntries int    `toml:"ring-entries"`
	ReadBuffer  int    `toml:"read-buffer"`
	Loops       int    `toml:"loops"`
	// GOMAXPROCS: the Go runtime's Ps (0: with replication cores + loops +
	// 1, else Go's default; runtime.go).
	GOMAXPROCS  int    `toml:"gomaxprocs"`
	Pin         bool   `toml:"pin"`
	CPUs        string `toml:"cpus"`         // comma-separated core list for the loops
	FlusherCPUs string `toml:"flusher-cpus"` // core of the journal flusher (first entry)
	ReplCPUs    string `toml:"repl-cpus"`    // core of the replication senders (first entry)
	// MemoryPlacement: first-touch (default) or off (engine.Config.MemoryPlacement).
	MemoryPlacement string `toml:"memory-placement"`
	// JournalSync: auto (default: the engine's choice), uring or syscall
	// (journal.Options.SyncVia); ZeroCopyMin: engine.Config.ZeroCopyMin.
	JournalSync string `toml:"journal-sync"`
	ZeroCopyMin int    `toml:"zero-copy-min"`
	// JournalDirs is accepted with one entry (the same as data), for
	// configs written before one instance per NUMA node; there is no flag.
	JournalDirs []string `toml:"journal-dirs"`
	// Recover: "" (refuse to start on a corrupt journal) or "truncate"
	// (journal.Options.RecoverTruncate: cut at the first bad record).
	Recover string `toml:"recover"`
	// VerifyJournal: journal.Options.VerifyAll (scan every segment and
	// replay every record instead of trusting checkpoints).
	VerifyJournal bool `toml:"verify-journal"`

	SegmentSize    int64    `toml:"segment-size"`
	SyncDelay      duration `toml:"sync-delay"`
	SyncBytes      int      `toml:"sync-bytes"`
	RetentionAge   duration `toml:"retention-age"`
	RetentionBytes int64    `toml:"retention-bytes"`

	MaxFrame       int      `toml:"max-frame"`
	MaxTopic       int      `toml:"max-topic"`
	WriteHighWater int      `toml:"write-high-water"`
	LogonTimeout   duration `toml:"logon-timeout"`
	LogLevel       string   `toml:"log-level"`

	// OnStorageFailure: exit (default) or stay (engine.Config.OnStorageFailure).
	OnStorageFailure string `toml:"on-storage-failure"`

	// SharedStore: active/passive on one shared data directory (shared.go,
	// docs/ha.md); SharedStoreStallLimit: engine.Config.StallLimit (default
	// 5s with shared-store).
	SharedStore           bool     `toml:"shared-store"`
	SharedStoreStallLimit duration `toml:"shared-store-stall-limit"`

	// Replication (docs/replication.md).
	ReplListen         string       `toml:"repl-listen"`
	Peers              peerList     `toml:"peer"`
	ReplSecret         string       `toml:"repl-secret"`
	ReplSecretFile     string       `toml:"repl-secret-file"`
	ReplTLSCert        string       `toml:"repl-tls-cert"`
	ReplTLSKey         string       `toml:"repl-tls-key"`
	ReplTLSCA          string       `toml:"repl-tls-ca"`
	ReplMaxHandshakes  int          `toml:"repl-max-handshakes"`
	ReplDowngradeAfter downgradeAge `toml:"repl-downgrade-after"`
	ReplUpgradeBelow   duration     `toml:"repl-upgrade-below"`
	ReplHeartbeat      duration     `toml:"repl-heartbeat"`
	ReplHoldAlarmBytes int64        `toml:"repl-hold-alarm-bytes"`

	serveSecurity // tls-*, users, caps (security.go)
}

// exitStorageFailed is serve's exit status once its journal failed (with
// on-storage-failure exit).
const exitStorageFailed = 3

// Values of memory-placement (engine.Config.MemoryPlacement).
const (
	memoryFirstTouch = "first-touch"
	memoryOff        = "off"
)

// recoverModeTruncate is the value of recover that selects
// journal.Options.RecoverTruncate.
const recoverModeTruncate = "truncate"

// peerList collects repeated --peer flags (a TOML array of strings).
type peerList []string

func (p *peerList) String() string     { return strings.Join(*p, " ") }
func (p *peerList) Set(s string) error { *p = append(*p, s); return nil }

// duration reads "250ms"-style strings in TOML.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	d.Duration = v
	return err
}

func (d *duration) String() string { return d.Duration.String() }
func (d *duration) Set(s string) error {
	return d.UnmarshalText([]byte(s))
}

// downgradeAge is a duration or "never" (replicate.Never: strict sync).
type downgradeAge struct{ time.Duration }

func (d *downgradeAge) UnmarshalText(b []byte) error {
	if string(b) == "never" {
		d.Duration = replicate.Never
		return nil
	}
	v, err := time.ParseDuration(string(b))
	if err == nil && v < 0 {
		err = fmt.Errorf("negative duration %s", b)
	}
	if err != nil {
		return fmt.Errorf("repl-downgrade-after %q: want a duration or never: %w", b, err)
	}
	d.Duration = v
	return nil
}

func (d *downgradeAge) String() string {
	if d.Duration == replicate.Never {
		return "never"
	}
	return d.Duration.String()
}

func (d *downgradeAge) Set(s string) error { return d.UnmarshalText([]byte(s)) }

const serveUsage = `usage: tandem serve [flags]

Runs one Tandem instance. With no flags it serves 127.0.0.1:7400 with its
journal in ./data. Every flag is also a key of the --config TOML file
(same name); flags given on the command line win.

The data directory (created 0700 if missing) belongs to one process: serve
locks its LOCK file and refuses to start, naming the holder (host, pid,
name), while another instance holds it. With --shared-store (every process
on the directory started with it and the same --name, each with its own
--listen; docs/ha.md) a process that finds the lock held is a passive
instead: it answers clients "standby" until the active dies, then takes
over the journal and serves.

Exit status: 0 after SIGINT or SIGTERM; 1 if it cannot start (or shut
down cleanly); 2 for a bad command line or config; 3 when its storage
failed (full disk, I/O error): with --on-storage-failure exit at once (it
sends the acknowledgements already durable, tells every client
storage-failed, closes its listeners and exits, so HA clients fail over),
with stay at SIGINT or SIGTERM; with --shared-store also at once, without
a drain, when the storage stalls past --shared-store-stall-limit or the
lock file names another holder (fencing, docs/ha.md). A passive exits 0 on
SIGINT or SIGTERM.

`

func runServe(args []string, stdout io.Writer) int {
	var cfg serveConfig
	fs, configFile := serveFlags(&cfg)
	if len(args) == 1 && args[0] == "-h" {
		fs.SetOutput(stdout) // help was asked for: usage on standard output
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "tandem serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *configFile != "" {
		if err := loadServeConfig(*configFile, fs, &cfg); err != nil {
			fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
			return 2
		}
	}
	ec, err := cfg.engineConfig()
	if err == nil {
		err = cfg.serveSecurity.apply(&ec)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return 2
	}
	// Catch the signals before anything is served: a SIGTERM that arrives
	// once clients can connect must shut down cleanly, not kill.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// The admin listener starts first: /healthz answers during a long
	// recovery (and /readyz says it is recovering).
	var adm *admin.Listener
	adminUsers.Store(ec.Users)
	if cfg.Admin != "" {
		ac := admin.Config{Addr: cfg.Admin, Logger: ec.Logger}
		if err := adminSecurity(&ac, &cfg.serveSecurity, func() *auth.Users { return adminUsers.Load() }); err != nil {
			fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
			return 2
		}
		if adm, err = admin.Start(ac); err != nil {
			fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
			return 1
		}
		defer adm.Close()
	}
	if cfg.SharedStore {
		if adm != nil {
			adm.SetStandby(true) // /readyz: 503 standby until this process holds the lock
		}
		lock, code := waitForSharedStore(ec, sigs)
		if lock == nil {
			return code
		}
		if adm != nil {
			adm.SetStandby(false)
		}
		ec.DirLock = lock // engine.New owns it from here
	}
	defer startTrace()()
	procs, why := serveGOMAXPROCS(cfg.GOMAXPROCS, ec.Loops, ec.Replication != nil)
	runtime.GOMAXPROCS(procs)
	ec.Logger.Debug("go runtime", "gomaxprocs", procs, "from", why)
	srv, err := engine.New(ec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return 1
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: %v\n", err)
		return 1
	}
	if adm != nil {
		adm.SetServer(srv)
	}
	failed := srv.Failed()
	if ec.OnStorageFailure == engine.StorageFailureStay {
		failed = nil // keep serving stat; the engine logged the failure
	}
	sig, storageFailed := waitReloading(sigs, failed, srv, ec.Logger, &cfg.serveSecurity)
	if adm != nil {
		adm.ShuttingDown()
	}
	if storageFailed {
		// The engine logged the cause and ran the fail-stop sequence;
		// Close returns that same journal error, already reported.
		signal.Stop(sigs)
		srv.Close()
		ec.Logger.Error("exiting: storage failed", "status", exitStorageFailed)
		return exitStorageFailed
	}
	ec.Logger.Info("shutting down", "signal", sig.String())
	signal.Stop(sigs)
	if srv.FailureCause() != nil { // stay mode: the failure was logged
		srv.Close()
		ec.Logger.Error("exiting: storage failed", "status", exitStorageFailed)
		return exitStorageFailed
	}
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "tandem serve: shutdown: %v\n", err)
		return 1
	}
	return 0
}

// serveFlags defines serve's flags, with their defaults, on cfg; it
// returns the flag set and the --config flag.
func serveFlags(cfg *serveConfig) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), serveUsage); fs.PrintDefaults() }
	configFile := fs.String("config", "", "TOML configuration `file`")
	fs.StringVar(&cfg.Name, "name", "", "instance name (default: the host name)")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7400", "client `address`")
	fs.StringVar(&cfg.Data, "data", "data", "journal `directory`")
	fs.StringVar(&cfg.Admin, "admin", "", "admin listener `HOST:PORT` for /metrics, /healthz, /readyz, /v1/stat and the web console (empty: off; keep it on loopback or a private network)")
	fs.StringVar(&cfg.Engine, "engine", "auto", "event-loop backend: auto (io_uring if the kernel allows, else epoll), uring or epoll")
	fs.IntVar(&cfg.RingEntries, "ring-entries", 1024, "io_uring submission queue entries per loop")
	fs.IntVar(&cfg.ReadBuffer, "read-buffer", 64<<10, "initial read buffer per connection in bytes")
	fs.StringVar(&cfg.FlusherCPUs, "flusher-cpus", "", "core to pin the journal flusher to (empty: not pinned)")
	fs.StringVar(&cfg.ReplCPUs, "repl-cpus", "", "core to pin replication senders to (empty: not pinned)")
	fs.IntVar(&cfg.Loops, "loops", 0, "event loops (default: one per core)")
	fs.IntVar(&cfg.GOMAXPROCS, "gomaxprocs", 0, "Go runtime Ps (default with replication: cores + event loops + 1, else one per core; the GOMAXPROCS environment variable wins; see docs/operations.md)")
	fs.BoolVar(&cfg.Pin, "pin", false, "pin each event loop to a core")
	fs.StringVar(&cfg.CPUs, "cpus", "", "comma-separated cores for the loops (with --pin)")
	fs.StringVar(&cfg.MemoryPlacement, "memory-placement", memoryFirstTouch, "first-touch: pinned loop threads set MPOL_LOCAL and create their ring and buffers after pinning; off: leave it to the process's memory policy")
	fs.StringVar(&cfg.JournalSync, "journal-sync", "auto", "group commit path: auto (the engine's choice, see docs/architecture.md), uring (write + fdatasync as one linked io_uring chain) or syscall (pwrite + fdatasync)")
	fs.IntVar(&cfg.ZeroCopyMin, "zero-copy-min", 0, "with io_uring, deliver records of at least this many `bytes` zero-copy from the journal mapping (0: the default, 16 KiB; -1: never)")
	fs.Int64Var(&cfg.SegmentSize, "segment-size", 64<<20, "journal segment `bytes`")
	fs.StringVar(&cfg.Recover, "recover", "", "repair at startup: truncate (cut a corrupt final journal segment at its first bad record, dropping and logging the records from there; acknowledged data is lost, use once); unset: refuse to start on corruption")
	fs.BoolVar(&cfg.VerifyJournal, "verify-journal", false, "at startup scan every journal segment (each record's CRC) and rebuild the index from every record, instead of trusting the checkpoints of sealed segments (slower; for when the checkpoints are in doubt)")
	fs.Var(&cfg.SyncDelay, "sync-delay", "longest wait to batch more data into one fdatasync (0: sync as soon as the last one returned)")
	fs.IntVar(&cfg.SyncBytes, "sync-bytes", 4<<20, "most `bytes` written and synced per group commit")
	fs.Var(&cfg.RetentionAge, "retention-age", "delete journal segments older than this (0: keep)")
	fs.Int64Var(&cfg.RetentionBytes, "retention-bytes", 0, "delete oldest journal segments above this total (0: keep)")
	fs.IntVar(&cfg.MaxFrame, "max-frame", 0, "largest frame accepted in bytes (default 4 MiB + 64 KiB)")
	fs.IntVar(&cfg.MaxTopic, "max-topic", 1024, "longest topic in bytes")
	fs.IntVar(&cfg.WriteHighWater, "write-high-water", 1<<20, "pending output per connection before reading and deliveries pause")
	fs.Var(&cfg.LogonTimeout, "logon-timeout", "close connections that do not log on within this (default 10s)")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&cfg.OnStorageFailure, "on-storage-failure", engine.StorageFailureExit, "once the journal failed (full disk, I/O error): exit (send the acks already durable, tell every client storage-failed, close the listeners, exit with status 3) or stay (keep running, refusing clients, serving only tandem stat)")
	fs.BoolVar(&cfg.SharedStore, "shared-store", false, "active/passive on a data directory shared with other processes (SAN, NFS): the lock holder serves, the others answer standby and take over when it dies (docs/ha.md); needs --name, refuses --on-storage-failure stay")
	fs.Var(&cfg.SharedStoreStallLimit, "shared-store-stall-limit", "with --shared-store, exit at once when written data waited this long for a sync that does not return, or the lock file names another holder (fencing; default 5s)")
	fs.StringVar(&cfg.ReplListen, "repl-listen", "", "replication `address` where peers connect (empty: do not accept)")
	fs.Var(&cfg.Peers, "peer", "replication destination `NAME=HOST:PORT[,sync|async][,topics=REGEX][,passthrough]`, or NAME alone (accept-only); repeat per peer")
	fs.StringVar(&cfg.ReplSecretFile, "repl-secret-file", "", "`file` holding the shared secret that authenticates replication links")
	fs.StringVar(&cfg.ReplSecret, "repl-secret", "", "the shared replication secret itself (shows in ps: prefer repl-secret-file)")
	fs.StringVar(&cfg.ReplTLSCert, "repl-tls-cert", "", "PEM certificate `file` of this instance for mutual TLS on replication links (with repl-tls-key, repl-tls-ca)")
	fs.StringVar(&cfg.ReplTLSKey, "repl-tls-key", "", "PEM private key `file` for repl-tls-cert")
	fs.StringVar(&cfg.ReplTLSCA, "repl-tls-ca", "", "PEM CA `file`: peers' certificates must chain to it")
	fs.IntVar(&cfg.ReplMaxHandshakes, "repl-max-handshakes", 0, "replication connections accepted and not yet authenticated; more are closed (default 32)")
	fs.Var(&cfg.ReplDowngradeAfter, "repl-downgrade-after", "a sync peer lagging more than this `duration`, or away (disconnected, not reached since start-up, its link refused) longer than it, stops holding acks; never: strict sync, acks wait for it however long it is away (default 1s)")
	fs.Var(&cfg.ReplUpgradeBelow, "repl-upgrade-below", "a downgraded peer lagging less than this holds acks again (default 100ms)")
	addServeSecurityFlags(fs, &cfg.serveSecurity)
	fs.Var(&cfg.ReplHeartbeat, "repl-heartbeat", "replication link heartbeat; silent for 3 intervals is down (default 250ms)")
	fs.Int64Var(&cfg.ReplHoldAlarmBytes, "repl-hold-alarm-bytes", 0, "alarm (log, stat hold_alarm) when the journal kept for one destination exceeds this many `bytes` (default 1 GiB; negative: off)")
	return fs, configFile
}

// loadServeConfig reads file into cfg, then re-applies the flags that were
// set on the command line so they win.
func loadServeConfig(file string, fs *flag.FlagSet, cfg *serveConfig) error {
	fromCmdline := *cfg
	// The flags' values live in cfg, which the file's values are about to
	// replace: keep the command line's as text to set them again.
	setOnCmdline := map[string]string{}
	fs.Visit(func(f *flag.Flag) { setOnCmdline[f.Name] = f.Value.String() })
	fromFile := *cfg
	fromFile.Peers = nil // the file's peer list replaces the (empty) default
	md, err := toml.DecodeFile(file, &fromFile)
	if err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	if undec := md.Undecoded(); len(undec) > 0 {
		return fmt.Errorf("config %s: unknown keys %v", file, undec)
	}
	*cfg = fromFile
	var errs []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "peer" { // a list: the command line's replaces the file's
			cfg.Peers = fromCmdline.Peers
			return
		}
		if err := fs.Set(f.Name, setOnCmdline[f.Name]); err != nil {
			errs = append(errs, err.Error())
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("flags: %s", strings.Join(errs, "; "))
	}
	return nil
}

func (c *serveConfig) engineConfig() (engine.Config, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return engine.Config{}, fmt.Errorf("log-level %q: %v", c.LogLevel, err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cpus, err := parseCPUs("cpus", c.CPUs)
	if err != nil {
		return engine.Config{}, err
	}
	flusherCPUs, err := parseCPUs("flusher-cpus", c.FlusherCPUs)
	if err != nil {
		return engine.Config{}, err
	}
	replCPUs, err := parseCPUs("repl-cpus", c.ReplCPUs)
	if err != nil {
		return engine.Config{}, err
	}
	switch len(c.JournalDirs) {
	case 0:
	case 1:
		c.Data = c.JournalDirs[0]
	default:
		return engine.Config{}, fmt.Errorf("journal-dirs: %d directories, but one instance keeps one journal "+
			"(its single order is what sequence numbers, bookmarks, resume and replication positions rest on): "+
			"for one journal per NUMA node run one instance per node (`tandem tune --layout per-node` writes their configs), "+
			"or keep one directory here (or use data)", len(c.JournalDirs))
	}
	memoryPlacement := c.MemoryPlacement
	switch memoryPlacement {
	case "":
		memoryPlacement = memoryFirstTouch
	case memoryFirstTouch, memoryOff:
	default:
		return engine.Config{}, fmt.Errorf("memory-placement: %q is not a placement (want %s or %s)", c.MemoryPlacement, memoryFirstTouch, memoryOff)
	}
	journalSync := c.JournalSync
	switch journalSync {
	case "", "auto":
		journalSync = ""
	case journal.SyncUring, journal.SyncSyscall:
	default:
		return engine.Config{}, fmt.Errorf("journal-sync: %q is not a path (want auto, %s or %s)", c.JournalSync, journal.SyncUring, journal.SyncSyscall)
	}
	var recoverTruncate bool
	switch c.Recover {
	case "":
	case recoverModeTruncate:
		recoverTruncate = true
	default:
		return engine.Config{}, fmt.Errorf("recover: %q is not a repair (want %s, or leave it unset to refuse a corrupt journal)", c.Recover, recoverModeTruncate)
	}
	flusherCPU, replCPU := -1, -1
	if len(flusherCPUs) > 0 {
		flusherCPU = flusherCPUs[0]
	}
	if len(replCPUs) > 0 {
		replCPU = replCPUs[0]
	}
	if c.Loops < 0 {
		return engine.Config{}, fmt.Errorf("loops: %d is negative", c.Loops)
	}
	if c.SegmentSize < 1<<20 {
		return engine.Config{}, fmt.Errorf("segment-size: %d is below 1 MiB", c.SegmentSize)
	}
	onStorageFailure := c.OnStorageFailure
	switch onStorageFailure {
	case "":
		onStorageFailure = engine.StorageFailureExit
	case engine.StorageFailureExit, engine.StorageFailureStay:
	default:
		return engine.Config{}, fmt.Errorf("on-storage-failure: %q is not an action (want %s or %s)", c.OnStorageFailure, engine.StorageFailureExit, engine.StorageFailureStay)
	}
	if err := c.checkSharedStoreConfig(onStorageFailure); err != nil {
		return engine.Config{}, err
	}
	var stallLimit time.Duration
	if c.SharedStore {
		stallLimit = c.SharedStoreStallLimit.Duration
		if stallLimit == 0 {
			stallLimit = defaultStallLimit
		}
	}
	repl, err := c.replicationConfig(logger)
	if err != nil {
		return engine.Config{}, err
	}
	if repl != nil && replCPU >= 0 {
		repl.PinSenders, repl.SenderCPU = true, replCPU
	}
	return engine.Config{
		Engine: c.Engine, RingEntries: c.RingEntries, ReadBuffer: c.ReadBuffer,
		Replication: repl,
		Name:        c.Name, Listen: c.Listen, DataDir: c.Data,
		Loops: c.Loops, Pin: c.Pin, CPUs: cpus, MemoryPlacement: memoryPlacement,
		ZeroCopyMin: c.ZeroCopyMin,
		MaxFrame:    c.MaxFrame, MaxTopic: c.MaxTopic, WriteHighWater: c.WriteHighWater,
		LogonTimeout:     c.LogonTimeout.Duration,
		OnStorageFailure: onStorageFailure,
		StallLimit:       stallLimit, // OnStall nil: log, exit 3 at once
		Journal: journal.Options{
			SyncVia:        journalSync,
			PinFlusher:     flusherCPU >= 0,
			FlusherCPU:     max(flusherCPU, 0),
			SegmentSize:    c.SegmentSize,
			MaxSyncDelay:   c.SyncDelay.Duration,
			MaxBatchBytes:  c.SyncBytes,
			RetentionAge:   c.RetentionAge.Duration,
			RetentionBytes: c.RetentionBytes,

			RecoverTruncate: recoverTruncate,
			VerifyAll:       c.VerifyJournal,
		},
		Logger: logger,
	}, nil
}

// replicationConfig builds the replication settings; nil when the
// instance neither listens for peers nor has destinations. It refuses a
// secret file readable by group or others, half a TLS configuration, and
// a non-loopback repl-listen with neither a secret nor TLS (on loopback:
// a warning); a repl-secret given as a value is warned about (docs/
// security.md, "Replication links").
func (c *serveConfig) replicationConfig(log *slog.Logger) (*replicate.Config, error) {
	if c.ReplListen == "" && len(c.Peers) == 0 {
		return nil, nil
	}
	rc := &replicate.Config{
		Listen:         c.ReplListen,
		DowngradeAfter: c.ReplDowngradeAfter.Duration,
		UpgradeBelow:   c.ReplUpgradeBelow.Duration,
		Heartbeat:      c.ReplHeartbeat.Duration,
		HoldAlarmBytes: c.ReplHoldAlarmBytes,
		MaxHandshakes:  c.ReplMaxHandshakes,
		Secret:         []byte(c.ReplSecret),
	}
	if c.ReplMaxHandshakes < 0 {
		return nil, fmt.Errorf("repl-max-handshakes %d is negative", c.ReplMaxHandshakes)
	}
	if c.ReplSecret != "" {
		if c.ReplSecretFile != "" {
			return nil, errors.New("repl-secret and repl-secret-file are both set: keep repl-secret-file")
		}
		log.Warn("repl-secret is given as a value: on the command line it shows in ps, in a config file to whoever reads it; use repl-secret-file (a 0400 file)")
	}
	if c.ReplSecretFile != "" {
		st, err := os.Stat(c.ReplSecretFile)
		if err != nil {
			return nil, fmt.Errorf("repl-secret-file: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("repl-secret-file %s is readable by group or others (mode %04o): run `chmod 0400 %s`",
				c.ReplSecretFile, st.Mode().Perm(), c.ReplSecretFile)
		}
		b, err := os.ReadFile(c.ReplSecretFile)
		if err != nil {
			return nil, fmt.Errorf("repl-secret-file: %w", err)
		}
		rc.Secret = []byte(strings.TrimSpace(string(b)))
		if len(rc.Secret) == 0 {
			return nil, fmt.Errorf("repl-secret-file %s is empty", c.ReplSecretFile)
		}
	}
	tc, err := replTLS(c.ReplTLSCert, c.ReplTLSKey, c.ReplTLSCA)
	if err != nil {
		return nil, err
	}
	rc.TLS = tc
	if c.ReplListen != "" && len(rc.Secret) == 0 && rc.TLS == nil {
		if !isLoopbackListen(c.ReplListen) {
			return nil, fmt.Errorf("repl-listen %s is not a loopback address and links have neither a secret nor TLS: "+
				"set repl-secret-file (docs/security.md, \"Replication links\") or repl-tls-cert, repl-tls-key and repl-tls-ca", c.ReplListen)
		}
		log.Warn("replication links are not authenticated (no repl-secret-file, no repl-tls-*): acceptable on loopback only", "repl_listen", c.ReplListen)
	}
	for _, p := range c.Peers {
		d, err := replicate.ParseDestination(p)
		if err != nil {
			return nil, err
		}
		rc.Destinations = append(rc.Destinations, d)
	}
	return rc, nil
}

// isLoopbackListen reports whether a listen address only binds loopback
// (127.0.0.0/8, ::1, localhost); an empty host binds every interface.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// replTLS builds mutual TLS for replication links from PEM files: this
// instance's certificate and key (presented as server and as client) and
// the CA peers' certificates must chain to (required of both sides). All
// three or none.
func replTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("repl-tls-cert, repl-tls-key and repl-tls-ca go together (mutual TLS)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("repl-tls-cert/repl-tls-key: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("repl-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("repl-tls-ca %s holds no PEM certificate", caFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// parseCPUs reads a comma-separated core list.
func parseCPUs(key, list string) ([]int, error) {
	var cpus []int
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%s: %q is not a core number", key, f)
		}
		cpus = append(cpus, n)
	}
	return cpus, nil
}
