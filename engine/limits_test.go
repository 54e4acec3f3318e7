package engine

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/wire"
)

func TestMaxSubscriptionsPerConnection(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.MaxSubscriptions = 2 })
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("subs", 0)
	for id := uint32(1); id <= 2; id++ {
		if a := c.subscribe(wire.AppendSubscribe(nil, id, wire.StartNow, wire.MatchExact, []byte("t"))); a.Code != 0 {
			t.Fatalf("subscription %d: %s %s", id, a.Code, a.Text)
		}
	}
	a := c.subscribe(wire.AppendSubscribe(nil, 3, wire.StartNow, wire.MatchExact, []byte("t")))
	if a.Code != wire.CodeLimit || !strings.Contains(string(a.Text), "max-subscriptions") {
		t.Fatalf("third subscription: %s %q, want limit", a.Code, a.Text)
	}
}

func TestMaxRegexPattern(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.MaxPattern = 16 })
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("re", 0)
	a := c.subscribe(wire.AppendSubscribe(nil, 1, wire.StartNow, wire.MatchRegex, bytes.Repeat([]byte("a"), 17)))
	if a.Code != wire.CodeBadPattern || !strings.Contains(string(a.Text), "max-pattern") {
		t.Fatalf("long regex: %s %q", a.Code, a.Text)
	}
	if a := c.subscribe(wire.AppendSubscribe(nil, 2, wire.StartNow, wire.MatchRegex, []byte("a+"))); a.Code != 0 {
		t.Fatalf("short regex: %s %s", a.Code, a.Text)
	}
}

// Before logon only a small frame is read; after it, the full max-frame.
func TestLogonBuffer(t *testing.T) {
	s := testServer(t, t.TempDir())
	defer s.Close()
	c := dialRaw(t, s)
	c.send(wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("t"), make([]byte, 8192)))
	if text := c.expectError(wire.CodeTooLarge); !strings.Contains(text, "before logon") || !strings.Contains(text, "logon-buffer") {
		t.Fatalf("error text: %s", text)
	}
	c2 := dialRaw(t, s)
	c2.logon("big", 0)
	c2.send(wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("t"), make([]byte, 256<<10)))
	c2.waitAck(wire.AckKindPersisted, 1)
}

func TestMaxConnections(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.MaxConnections = 2 })
	defer s.Close()
	a, b := dialRaw(t, s), dialRaw(t, s)
	a.logon("a", 0)
	b.logon("b", 0)
	c := dialRaw(t, s)
	if text := c.expectError(wire.CodeLimit); !strings.Contains(text, "max-connections") {
		t.Fatalf("error text %q", text)
	}
	a.c.Close()
	waitFor(t, func() bool { return s.Stats().Connections == 1 })
	d := dialRaw(t, s)
	d.logon("d", 0)
}

func TestMaxConnectionsPerUser(t *testing.T) {
	s := testServer(t, t.TempDir(), withUsers(t), func(c *Config) { c.MaxConnectionsPerUser = 1 })
	defer s.Close()
	a := dialRaw(t, s)
	a.mustLogonAs("al", "al", "pw-al")
	b := dialRaw(t, s)
	if e := errorOf(t, b.logonAs("al-2", "al", "pw-al")); e.Code != wire.CodeLimit || !strings.Contains(string(e.Text), "max-connections-per-user") {
		t.Fatalf("second connection of al: %s %q", e.Code, e.Text)
	}
	a.c.Close()
	waitFor(t, func() bool { return s.Stats().Connections == 0 })
	c := dialRaw(t, s)
	c.mustLogonAs("al-3", "al", "pw-al")
}

// A StatRequest flood from a client that does not read keeps the
// connection's output within its bound, and every request is answered
// once the client reads.
func TestStatFloodRespectsOutputBound(t *testing.T) {
	const hw = 32 << 10
	s := testServer(t, t.TempDir(), func(c *Config) { c.WriteHighWater = hw; c.Loops = 1 })
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("flood", 0)
	const n = 4000
	var b []byte
	for i := 0; i < n; i++ {
		b = wire.AppendStatRequest(b)
	}
	c.send(b)
	reply := len(wire.AppendStatReply(nil, s.statsJSON())) + 512 // stat grows a little as it runs
	waitFor(t, func() bool { return s.loops[0].maxPending.Load() > 0 })
	for i := 0; i < n; i++ {
		if f := c.nextSkipping(10 * time.Second); f.Type != wire.TypeStatReply {
			t.Fatalf("reply %d: %s %s", i, f.Type, describe(f))
		}
	}
	if max := s.loops[0].maxPending.Load(); max > int64(hw+reply) {
		t.Fatalf("a connection held %d bytes of output, bound %d + one reply (%d)", max, hw, reply)
	}
}

// threadCPU is the CPU time of a thread (its /proc stat file, opened
// beforehand), in clock ticks.
func threadCPU(t *testing.T, stat *os.File) int64 {
	t.Helper()
	b := make([]byte, 4096)
	n, err := stat.ReadAt(b, 0)
	if n == 0 {
		t.Fatal(err)
	}
	b = b[:n]
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// Accept failing with EMFILE must not spin the loop, and the waiting
// connection is accepted once descriptors are free again. (On the kernel
// this was written on, epoll did not report the listener again while the
// table was full, so the spin the back-off prevents did not show here.)
func TestAcceptEMFILEDoesNotSpinAndRecovers(t *testing.T) {
	s := testServer(t, t.TempDir(), func(c *Config) { c.Loops = 1 })
	defer s.Close()
	addr := s.Addr().(*net.TCPAddr)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.Open(fmt.Sprintf("/proc/self/task/%d/stat", s.loops[0].tid))
	if err != nil {
		t.Fatal(err)
	}
	defer stat.Close()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir("/proc/self/fd")
	open := map[int]bool{}
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			open[n] = true
		}
	}
	lowestFree := 0
	for open[lowestFree] {
		lowestFree++
	}
	lim := unix.Rlimit{Cur: uint64(lowestFree), Max: old.Max} // no descriptor can be opened now
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot lower RLIMIT_NOFILE: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
		}
	}
	defer restore()
	sa := &unix.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	if err := unix.Connect(fd, sa); err != nil { // no new descriptor: the server cannot accept it
		restore()
		t.Fatal(err)
	}
	lp := s.loops[0]
	deadline := time.Now().Add(5 * time.Second)
	for lp.sec.acceptPauses.Load() == 0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if lp.sec.acceptPauses.Load() == 0 && lp.ur != nil && lp.nconns.Load() > 0 {
		restore()
		t.Skip("io_uring's accept took the connection despite the lowered RLIMIT_NOFILE on this kernel: EMFILE cannot be provoked this way")
	}
	if lp.sec.acceptPauses.Load() == 0 {
		restore()
		t.Fatalf("accept never failed with the descriptor table full (%d connections)", lp.nconns.Load())
	}
	before := threadCPU(t, stat)
	deadline = time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		runtime.Gosched() // a spinning loop would burn its thread meanwhile
	}
	spent := threadCPU(t, stat) - before
	t.Logf("loop thread CPU over 300ms: %d ticks, %d pauses", spent, lp.sec.acceptPauses.Load())
	pauses := lp.sec.acceptPauses.Load()
	restore()
	if spent > 10 { // clock ticks (usually 10ms each): a spin burns ~30 in 300ms
		t.Fatalf("the loop used %d ticks of CPU in 300ms while accept failed (%d pauses)", spent, pauses)
	}
	c := &rawClient{t: t, c: fdConn(t, fd), buf: make([]byte, 1<<20)}
	c.logon("after-emfile", 0)
}

func fdConn(t *testing.T, fd int) net.Conn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "client")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// Accepted sockets have TCP keepalive on: the kernel's table shows the
// server side of an idle connection with its keepalive timer (timer 2);
// with keepalive off, no timer.
func TestAcceptedSocketsKeepAlive(t *testing.T) {
	if timer := serverSocketTimer(t); !strings.HasPrefix(timer, "02:") {
		t.Fatalf("server socket timer %s, want 02 (keepalive)", timer)
	}
	if timer := serverSocketTimer(t, func(c *Config) { c.KeepAlive = -1 }); strings.HasPrefix(timer, "02:") {
		t.Fatalf("keepalive off, yet the server socket's timer is %s", timer)
	}
}

// serverSocketTimer is /proc/net/tcp's timer field of the server side of
// an idle, logged-on connection.
func serverSocketTimer(t *testing.T, mod ...func(*Config)) string {
	t.Helper()
	s := testServer(t, t.TempDir(), mod...)
	defer s.Close()
	c := dialRaw(t, s)
	c.logon("ka", 0)
	local := fmt.Sprintf(":%04X", s.Addr().(*net.TCPAddr).Port)
	remote := fmt.Sprintf(":%04X", c.c.LocalAddr().(*net.TCPAddr).Port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && strings.HasSuffix(f[1], local) && strings.HasSuffix(f[2], remote) {
			return f[5]
		}
	}
	t.Fatalf("the server side of the connection is not in /proc/net/tcp")
	return ""
}

type captureHandler struct {
	mu   chan struct{}
	msgs *[]string
}

func (h captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	<-h.mu
	*h.msgs = append(*h.msgs, r.Message)
	h.mu <- struct{}{}
	return nil
}
func (h captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h captureHandler) WithGroup(string) slog.Handler      { return h }

// Without a users file, listening beyond loopback is warned about.
func TestWarnsWhenOpenBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen string
		users  bool
		warn   bool
	}{{"0.0.0.0:0", false, true}, {"127.0.0.1:0", false, false}, {"0.0.0.0:0", true, false}} {
		var msgs []string
		h := captureHandler{mu: make(chan struct{}, 1), msgs: &msgs}
		h.mu <- struct{}{}
		mods := []func(*Config){func(c *Config) { c.Listen = tc.listen; c.Logger = slog.New(h) }}
		if tc.users {
			mods = append(mods, withUsers(t))
		}
		s := testServer(t, t.TempDir(), mods...)
		s.Close()
		<-h.mu
		warned := false
		for _, m := range msgs {
			warned = warned || strings.Contains(m, "without a users file")
		}
		if warned != tc.warn {
			t.Errorf("listen %s, users %v: warned %v, want %v (%q)", tc.listen, tc.users, warned, tc.warn, msgs)
		}
	}
}
