package bench

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/wire"
)

// Tandem is the adapter for Tandem itself.
//
// Settings: the server's defaults (one event loop per core, group commit
// syncing as soon as the previous fdatasync returned, 64 MiB segments);
// every publish asks for a persisted ack (sent only after fdatasync);
// the native client (github.com/tandemhq/tandem/client) with WithWindow as
// the window; subscribers use WithHandler (no copy) on their own connection.
type Tandem struct {
	// Cmd runs the server as its own process: Cmd[0] with Cmd[1:] followed
	// by serve flags (e.g. {"/usr/local/bin/tandem", "serve"}), like the
	// peers. Empty: the server runs inside the bench process (tests).
	Cmd []string
	// Commit is the Tandem commit, for Info.
	Commit string
	// Engine is the event-loop backend asked for (--engine): "" leaves the
	// server's default (auto: io_uring when the kernel allows it, else
	// epoll), "uring" or "epoll".
	Engine string
	// Pair, when "sync" or "async", starts two instances A and B that
	// replicate to each other in that mode (pair.go); publishers and
	// subscribers use A. "" is a single instance.
	Pair string
	// TLS, when set, makes a single instance serve TLS on its client port
	// with TLS's certificate (--tls-cert/--tls-key) and every client of
	// the bench connect with WithTLS (the tls scenario, tls.go).
	TLS *benchTLS

	srv  *engine.Server
	p    *proc
	addr string
	seq  atomic.Int64

	// The pair's second instance (B).
	srvB  *engine.Server
	pB    *proc
	addrB string
	// How each instance of the pair was started (A, B), to restart one.
	insts [2]pairInst
	// In-process instances the failover scenario killed (closing).
	closing []*engine.Server
}

func (t *Tandem) Name() string { return "tandem" }

func (t *Tandem) Info() SystemInfo {
	mode := "in-process (engine.New)"
	bin := ""
	if len(t.Cmd) > 0 {
		mode = "separate process: " + strings.Join(t.Cmd, " ") + " --listen 127.0.0.1:PORT --data TMPDIR --log-level warn"
		bin = t.Cmd[0]
	}
	eng := "auto (io_uring when the kernel allows it, else epoll); the backend in use is recorded in every result (engine_in_use)"
	if t.Engine != "" {
		eng = t.Engine
	}
	info := SystemInfo{
		Name:    t.Name(),
		Product: "Tandem",
		Version: engine.Version + " " + t.Commit,
		Binary:  bin,
		Settings: map[string]string{
			"server":       mode,
			"durability":   "persisted ack: acknowledged after fdatasync of the journal (group commit)",
			"group commit": "sync as soon as the previous fdatasync returned (sync-delay 0), at most 4 MiB per sync",
			"event loops":  fmt.Sprintf("one per core (%d)", runtime.NumCPU()),
			"engine":       eng,
			"client":       "github.com/tandemhq/tandem/client, one connection per publisher/subscriber",
			"publish":      "client.Publish with WithAck(AckPersisted) and WithWindow(window); acks via WithAckHandler",
			"subscribe":    "client.Subscribe with WithHandler, From(Epoch) or From(Now)",
			"journal data": "temporary directory in the bench's data dir",
		},
	}
	info.Settings["tls scenario"] = "plaintext vs TLS 1.3 on the client port (--tls-cert/--tls-key; the engine's Go TLS relay per connection), certificate ECDSA P-256 signed by a CA made at run time; clients use WithTLS trusting that CA"
	for k, v := range pairSettings() {
		info.Settings[k] = v
	}
	return info
}

func (t *Tandem) Start(ctx context.Context, dir string) error {
	if t.Pair == sharedStoreMode {
		return t.startShared(ctx, dir)
	}
	if t.Pair != "" {
		return t.startPair(ctx, dir)
	}
	if len(t.Cmd) > 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		t.addr = fmt.Sprintf("127.0.0.1:%d", port)
		args := append(append([]string(nil), t.Cmd[1:]...),
			"--name", "bench", "--listen", t.addr, "--data", dir, "--log-level", "warn")
		if t.Engine != "" {
			args = append(args, "--engine", t.Engine)
		}
		if t.TLS != nil {
			args = append(args, "--tls-cert", t.TLS.CertFile, "--tls-key", t.TLS.KeyFile)
		}
		p, err := startProc("tandem", t.Cmd[0], args, dir)
		if err != nil {
			return err
		}
		t.p = p
		return waitDial(ctx, t.addr, p)
	}
	cfg := engine.Config{Name: "bench", Listen: "127.0.0.1:0", DataDir: dir, Engine: t.Engine, Logger: slog.New(slog.DiscardHandler)}
	if t.TLS != nil {
		cfg.TLS = &engine.TLSConfig{CertFile: t.TLS.CertFile, KeyFile: t.TLS.KeyFile}
	}
	s, err := engine.New(cfg)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	t.srv = s
	t.addr = s.Addr().String()
	return nil
}

func (t *Tandem) Stop() error {
	var err error
	for _, s := range t.closing {
		s.Close() // waits for the kill's Close
	}
	t.closing = nil
	if t.srv != nil {
		err = t.srv.Close()
		t.srv = nil
	} else if t.p != nil {
		err = t.p.stop()
		t.p = nil
	}
	if t.srvB != nil {
		if e := t.srvB.Close(); err == nil {
			err = e
		}
		t.srvB = nil
	} else if t.pB != nil {
		if e := t.pB.stop(); err == nil {
			err = e
		}
		t.pB = nil
	}
	return err
}

// stats returns the `tandem stat` document of instance A (the only one
// for a single instance), over a connection of its own.
func (t *Tandem) stats(ctx context.Context) (*wire.Stats, error) {
	if t.srv != nil {
		// In-process: ask the server directly. (Over the wire, a stat
		// request served by an event loop reads the replicator's listener
		// without synchronisation with Server.Start: the race detector
		// flags it in the tests.)
		return t.srv.Stats(), nil
	}
	return statsOf(ctx, t.addr, t.clientName("stat"), t.clientOpts()...)
}

// engineInUse returns the event-loop backend the running server reports.
func (t *Tandem) engineInUse(ctx context.Context) string {
	st, err := t.stats(ctx)
	if err != nil {
		return ""
	}
	return st.Engine
}

func statsOf(ctx context.Context, addr, name string, opts ...client.Option) (*wire.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addr, append([]client.Option{client.WithName(name), client.WithHeartbeat(30 * time.Second)}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Stats(ctx)
}

func (t *Tandem) clientName(name string) string {
	return fmt.Sprintf("%s-%d", name, t.seq.Add(1))
}

type tandemPub struct {
	c    *client.Client
	base atomic.Uint64
	errs atomic.Uint64
}

func (t *Tandem) NewPublisher(ctx context.Context, name string, window int, onAck func(uint64)) (Publisher, error) {
	p := &tandemPub{}
	c, err := client.Connect(ctx, t.addr, t.clientOpts(client.WithName(t.clientName(name)), client.WithWindow(window),
		client.WithHeartbeat(30*time.Second),
		client.WithAckHandler(func(seq uint64, err error) {
			if err != nil {
				p.errs.Add(1)
				return
			}
			onAck(seq - p.base.Load() - 1)
		}))...)
	if err != nil {
		return nil, err
	}
	p.base.Store(c.LastPublished())
	p.c = c
	return p, nil
}

func (p *tandemPub) Publish(ctx context.Context, payload []byte) error {
	_, err := p.c.Publish(ctx, benchTopic, payload)
	return err
}

func (p *tandemPub) Wait(ctx context.Context) error { return p.c.Flush(ctx) }
func (p *tandemPub) Errors() uint64                 { return p.errs.Load() }
func (p *tandemPub) Close() error                   { return p.c.Close() }

type tandemSub struct{ c *client.Client }

func (t *Tandem) Subscribe(ctx context.Context, name string, fromStart bool, onMsg func([]byte)) (Subscriber, error) {
	c, err := client.Connect(ctx, t.addr, t.clientOpts(client.WithName(t.clientName(name)), client.WithHeartbeat(30*time.Second))...)
	if err != nil {
		return nil, err
	}
	from := client.Now
	if fromStart {
		from = client.Epoch
	}
	if _, err := c.Subscribe(ctx, benchTopic, client.From(from), client.WithHandler(func(m *client.Message) { onMsg(m.Payload) })); err != nil {
		c.Close()
		return nil, err
	}
	return &tandemSub{c: c}, nil
}

func (s *tandemSub) Close() error { return s.c.Close() }
