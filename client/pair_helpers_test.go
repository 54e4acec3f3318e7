package client

import (
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/testnet"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/replicate"
)

// testSeed returns a seed from TANDEM_SEED or the clock, and logs it.
func testSeed(t testing.TB) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TANDEM_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with TANDEM_SEED=%d)", seed, seed)
	return seed
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x7a6d)) }

func envInt(name string, def int) int {
	if s := os.Getenv(name); s != "" {
		if v, err := strconv.Atoi(s); err == nil {
			return v
		}
	}
	return def
}

func freeAddr(t testing.TB) string {
	t.Helper()
	return testnet.FreeAddr(t)
}

// node is one in-process instance of a hot-hot pair, behind a proxy that
// clients connect to (so a test can cut or partition it).
type node struct {
	t        testing.TB
	name     string
	dir      string
	repl     string   // replication listen address (fixed across restarts)
	peerSpec []string // destinations
	auth     func(name string, cred []byte) error
	// downgradeAfter overrides the replication downgrade age (10s) from the
	// next start.
	downgradeAfter time.Duration

	mu    sync.Mutex
	srv   *engine.Server
	proxy *proxy
}

func (n *node) start() {
	n.t.Helper()
	rc := &replicate.Config{Listen: n.repl, Secret: []byte("s3cret"), Heartbeat: 20 * time.Millisecond,
		DowngradeAfter: 10 * time.Second, UpgradeBelow: 50 * time.Millisecond}
	if n.downgradeAfter > 0 {
		rc.DowngradeAfter = n.downgradeAfter
	}
	for _, p := range n.peerSpec {
		d, err := replicate.ParseDestination(p)
		if err != nil {
			n.t.Fatal(err)
		}
		rc.Destinations = append(rc.Destinations, d)
	}
	var s *engine.Server
	var err error
	for attempt := 0; attempt < 50; attempt++ { // the replication port may linger briefly after a close
		s, err = engine.New(engine.Config{Engine: testEngine, Name: n.name, Listen: "127.0.0.1:0", DataDir: n.dir, Loops: 1,
			Journal: journal.Options{SegmentSize: 8 << 20}, Replication: rc, Authenticate: n.auth,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			if err = s.Start(); err == nil {
				break
			}
			s.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		n.t.Fatalf("start %s: %v", n.name, err)
	}
	n.mu.Lock()
	n.srv = s
	n.mu.Unlock()
	n.proxy.setBackend(s.Addr().String())
}

func (n *node) server() *engine.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// kill cuts every client connection with a reset (as the death of the
// process would) and stops the server; new connections are refused until
// start.
func (n *node) kill() {
	n.proxy.setBackend("")
	n.proxy.cut()
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

func (n *node) addr() string { return n.proxy.addr() }

// startPair starts A and B replicating to each other with sync acks (B
// accepts A's link and replicates back over it) and waits until both
// directions are in sync.
func startPair(t testing.TB, auth func(string, []byte) error) (a, b *node) {
	t.Helper()
	return startPairDowngrade(t, auth, 0)
}

// startPairDowngrade is startPair with a replication downgrade age (0: the
// default 10s): how long an instance holds acks for a peer that is away.
func startPairDowngrade(t testing.TB, auth func(string, []byte) error, downgrade time.Duration) (a, b *node) {
	t.Helper()
	b = &node{t: t, name: "B", dir: t.TempDir(), repl: freeAddr(t), peerSpec: []string{"A"}, auth: auth, proxy: newProxy(t), downgradeAfter: downgrade}
	a = &node{t: t, name: "A", dir: t.TempDir(), repl: freeAddr(t), auth: auth, proxy: newProxy(t), downgradeAfter: downgrade}
	a.peerSpec = []string{"B=" + b.repl + ",sync"}
	b.start()
	a.start()
	t.Cleanup(func() { a.kill(); b.kill() })
	waitSync(t, a, b)
	return a, b
}

func waitSync(t testing.TB, nodes ...*node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, n := range nodes {
			s := n.server()
			if s == nil {
				ok = false
				break
			}
			st := s.Stats()
			if len(st.Replication) == 0 || st.Replication[0].State != "sync" {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pair not in sync after 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// proxy forwards TCP connections to a backend. cut resets every
// connection; partition stops forwarding (and holds new connections
// without answering) until heal.
type proxy struct {
	t  testing.TB
	ln net.Listener

	mu          sync.Mutex
	backend     string
	conns       map[net.Conn]bool
	partitioned bool
	healed      chan struct{}
	wg          sync.WaitGroup
}

func newProxy(t testing.TB) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, conns: map[net.Conn]bool{}, healed: make(chan struct{})}
	close(p.healed)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) setBackend(a string) {
	p.mu.Lock()
	p.backend = a
	p.mu.Unlock()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.mu.Lock()
		backend := p.backend
		p.mu.Unlock()
		if backend == "" {
			resetClose(c)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			s, err := net.DialTimeout("tcp", backend, time.Second)
			if err != nil {
				resetClose(c)
				return
			}
			if !p.track(s) {
				resetClose(c)
				return
			}
			p.wg.Add(2)
			go p.pipe(c, s)
			go p.pipe(s, c)
		}()
	}
}

func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			healed := p.healed
			p.mu.Unlock()
			<-healed // a partition: hold the bytes (and stop reading)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				resetClose(src)
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					return
				}
			}
			resetClose(dst)
			return
		}
	}
}

// cut resets every connection.
func (p *proxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[net.Conn]bool{}
	p.mu.Unlock()
	for c := range conns {
		resetClose(c)
	}
}

// partition stops all forwarding without closing anything.
func (p *proxy) partition() {
	p.mu.Lock()
	if !p.partitioned {
		p.partitioned = true
		p.healed = make(chan struct{})
	}
	p.mu.Unlock()
}

func (p *proxy) heal() {
	p.mu.Lock()
	if p.partitioned {
		p.partitioned = false
		close(p.healed)
	}
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.ln.Close()
	p.heal()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		resetClose(c)
	}
	p.wg.Wait()
}
