package bench

import (
	"context"
	"errors"
	"fmt"
	"github.com/tandemhq/tandem/internal/freeport"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A System is one broker under test behind an adapter. The scenario code
// (scenarios.go) is the same for every system; only the adapter differs.
//
// Every message carries a 16-byte header in its payload (see putHeader):
// the publisher's message index and the time the message was due, so a
// subscriber can compute end-to-end latency and check what it receives.
type System interface {
	// Name identifies the system and its durability setting in reports,
	// e.g. "tandem", "nats-always".
	Name() string
	// Info describes the product, its version and every setting used.
	Info() SystemInfo
	// Start starts a fresh server with its data in dir (empty).
	Start(ctx context.Context, dir string) error
	// Stop stops the server and frees its resources.
	Stop() error
	// NewPublisher connects a publisher. onAck is called once per message,
	// in publish order, with the message's 0-based index, when the system
	// reports it durable at the system's setting (persisted ack). It may be
	// called from another goroutine and must not block.
	NewPublisher(ctx context.Context, name string, window int, onAck func(i uint64)) (Publisher, error)
	// Subscribe connects a subscriber to the bench topic from the start of
	// the log (fromStart) or from now on; onMsg gets each payload (valid
	// only during the call) on the subscriber's goroutine. Subscribe
	// returns once messages published after it are sure to be delivered.
	Subscribe(ctx context.Context, name string, fromStart bool, onMsg func(payload []byte)) (Subscriber, error)
}

// Publisher publishes asynchronously with a window of unacknowledged
// messages.
type Publisher interface {
	// Publish sends one message; it may block while the window is full.
	// payload may be reused as soon as Publish returns.
	Publish(ctx context.Context, payload []byte) error
	// Wait waits until every message published so far is acknowledged.
	Wait(ctx context.Context) error
	// Errors returns how many messages were refused or failed.
	Errors() uint64
	Close() error
}

// Subscriber is a live subscription.
type Subscriber interface{ Close() error }

// SystemInfo describes a system in the report.
type SystemInfo struct {
	Name     string            `json:"name"`
	Product  string            `json:"product"`
	Version  string            `json:"version,omitempty"`
	Binary   string            `json:"binary,omitempty"`
	Settings map[string]string `json:"settings"`
	// Skipped says why the system was not measured ("" when it was).
	Skipped string `json:"skipped,omitempty"`
}

// Topic (subject, stream) every scenario publishes to.
const (
	benchTopic  = "bench.t"
	benchStream = "BENCH"
)

// freePort returns a loopback TCP port that was free a moment ago, below
// the ephemeral range so that no outgoing connection takes it before the
// server binds it (internal/freeport).
func freePort() (int, error) { return freeport.Port() }

// waitDial waits until addr accepts TCP connections or the process ends.
func waitDial(ctx context.Context, addr string, p *proc) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v; output: %s", p.name, p.waitErr, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not accepting connections after 15s: %v", p.name, addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// proc is a peer server process started by the bench.
type proc struct {
	name    string
	cmd     *exec.Cmd
	out     *tailBuffer
	done    chan struct{}
	waitErr error
}

func startProc(name, bin string, args []string, dir string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out := &tailBuffer{max: 8 << 10}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail() string { return strings.TrimSpace(p.out.String()) }

// stop sends SIGTERM, then SIGKILL after a grace period.
func (p *proc) stop() error {
	if p == nil || p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// findBinary looks a peer binary up in PATH, then in $GOBIN / $GOPATH/bin
// (where `go install` puts nats-server) and ~/go/bin.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		for _, e := range filepath.SplitList(d) {
			dirs = append(dirs, filepath.Join(e, "bin"))
		}
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH, $GOBIN, $GOPATH/bin or ~/go/bin", name)
}

// binaryVersion runs bin with args and returns the first line of output.
func binaryVersion(bin string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// window is a counting semaphore bounding unacknowledged messages.
type window struct{ ch chan struct{} }

func newWindow(n int) *window { return &window{ch: make(chan struct{}, n)} }

func (w *window) acquire(ctx context.Context) error {
	select {
	case w.ch <- struct{}{}:
		return nil
	default:
	}
	select {
	case w.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *window) release() { <-w.ch }

// errPeerMissing marks a system whose binary is not installed.
var errPeerMissing = errors.New("peer not installed")
