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

	srv  *engine.Server
	p    *proc
	addr string
	seq  atomic.Int64
}

func (t *Tandem) Name() string { return "tandem" }

func (t *Tandem) Info() SystemInfo {
	mode := "in-process (engine.New)"
	bin := ""
	if len(t.Cmd) > 0 {
		mode = "separate process: " + strings.Join(t.Cmd, " ") + " --listen 127.0.0.1:PORT --data TMPDIR --log-level warn"
		bin = t.Cmd[0]
	}
	return SystemInfo{
		Name:    t.Name(),
		Product: "Tandem",
		Version: engine.Version + " " + t.Commit,
		Binary:  bin,
		Settings: map[string]string{
			"server":        mode,
			"durability":    "persisted ack: acknowledged after fdatasync of the journal (group commit)",
			"group commit":  "sync as soon as the previous fdatasync returned (sync-delay 0), at most 4 MiB per sync",
			"event loops":   fmt.Sprintf("one per core (%d)", runtime.NumCPU()),
			"client":        "github.com/tandemhq/tandem/client, one connection per publisher/subscriber",
			"publish":       "client.Publish with WithAck(AckPersisted) and WithWindow(window); acks via WithAckHandler",
			"subscribe":     "client.Subscribe with WithHandler, From(Epoch) or From(Now)",
			"journal data":  "temporary directory in the bench's data dir",
		},
	}
}

func (t *Tandem) Start(ctx context.Context, dir string) error {
	if len(t.Cmd) > 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		t.addr = fmt.Sprintf("127.0.0.1:%d", port)
		args := append(append([]string(nil), t.Cmd[1:]...),
			"--name", "bench", "--listen", t.addr, "--data", dir, "--log-level", "warn")
		p, err := startProc("tandem", t.Cmd[0], args, dir)
		if err != nil {
			return err
		}
		t.p = p
		return waitDial(ctx, t.addr, p)
	}
	s, err := engine.New(engine.Config{Name: "bench", Listen: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
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
	if t.srv != nil {
		err := t.srv.Close()
		t.srv = nil
		return err
	}
	err := t.p.stop()
	t.p = nil
	return err
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
	c, err := client.Connect(ctx, t.addr, client.WithName(t.clientName(name)), client.WithWindow(window),
		client.WithHeartbeat(30*time.Second),
		client.WithAckHandler(func(seq uint64, err error) {
			if err != nil {
				p.errs.Add(1)
				return
			}
			onAck(seq - p.base.Load() - 1)
		}))
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
	c, err := client.Connect(ctx, t.addr, client.WithName(t.clientName(name)), client.WithHeartbeat(30*time.Second))
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
