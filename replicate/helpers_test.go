package replicate_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/testnet"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/uring"
	"github.com/tandemhq/tandem/wire"
)

// testIO is the link I/O the tests run with (replicate.Config.IO):
// TestMain runs the whole suite once per mode, net then ring (a matrix, not
// a copy of the tests); TANDEM_REPL_IO=net or =ring runs one, and so does
// -bench (the benchmarks compare the modes themselves). The package's
// internal tests read the mode from that variable, which TestMain sets for
// each pass.
var testIO = replicate.IONet

func TestMain(m *testing.M) {
	modes := []string{replicate.IONet, replicate.IORing}
	flag.Parse()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		// The benchmarks have their own io=net|ring dimension: one pass.
		modes = modes[:1]
	}
	if e := os.Getenv("TANDEM_REPL_IO"); e != "" {
		modes = []string{e}
	}
	code := 0
	for _, mode := range modes {
		if mode == replicate.IORing {
			if err := uring.Available(); err != nil {
				fmt.Fprintf(os.Stderr, "replicate tests: skipping the io_uring link I/O: %v\n", err)
				continue
			}
		}
		testIO = mode
		os.Setenv("TANDEM_REPL_IO", mode)
		fmt.Fprintf(os.Stderr, "replicate tests with link I/O %s\n", mode)
		if c := m.Run(); c != 0 {
			code = c
		}
	}
	os.Exit(code)
}

// testSeed returns the seed of a randomised test: TANDEM_SEED if set, else
// the clock. It is logged so a failure can be replayed.
func testSeed(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TANDEM_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with TANDEM_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// logBuf collects an instance's log lines (and copies them to stderr
// with TANDEM_TEST_LOG set).
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		os.Stderr.Write(p)
	}
	return l.b.Write(p)
}

// count returns how many log lines contain every one of subs.
func (l *logBuf) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
lines:
	for _, line := range strings.Split(l.b.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue lines
			}
		}
		n++
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	if len(s) > 6000 {
		s = "...\n" + s[len(s)-6000:]
	}
	return s
}

// node is one in-process instance with replication, closed at cleanup.
type node struct {
	name string
	dir  string
	srv  *engine.Server
	repl string // replication listen address ("" if none)
	logs *logBuf
}

type nodeOpts struct {
	listen    string // replication listen address; "" = 127.0.0.1:0, "-" = none
	secret    string // "" = "s3cret"
	heartbeat time.Duration
	downgrade time.Duration
	upgrade   time.Duration
	dir       string // "" = a fresh temporary directory
	maxFrame  int    // the server's max-frame (0: default)
	holdAlarm int64  // replicate.Config.HoldAlarmBytes (0: default)
	linkFrame int    // replicate.Config.MaxFrame (0: from maxFrame)
}

// replicateNever is replicate.Never: strict sync.
const replicateNever = replicate.Never

func startNode(t testing.TB, name string, o nodeOpts, peers ...string) *node {
	t.Helper()
	n, err := tryStartNode(t, name, o, peers...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func tryStartNode(t testing.TB, name string, o nodeOpts, peers ...string) (*node, error) {
	t.Helper()
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	} else if o.listen == "-" {
		o.listen = ""
	}
	if o.secret == "" {
		o.secret = "s3cret"
	}
	if o.heartbeat == 0 {
		o.heartbeat = 100 * time.Millisecond
	}
	if o.downgrade == 0 {
		o.downgrade = 2 * time.Second
	}
	if o.upgrade == 0 {
		o.upgrade = 200 * time.Millisecond
	}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	rc := &replicate.Config{Listen: o.listen, Secret: []byte(o.secret), Heartbeat: o.heartbeat,
		DowngradeAfter: o.downgrade, UpgradeBelow: o.upgrade, IO: testIO, HoldAlarmBytes: o.holdAlarm,
		MaxFrame: o.linkFrame}
	for _, p := range peers {
		d, err := replicate.ParseDestination(p)
		if err != nil {
			t.Fatal(err)
		}
		rc.Destinations = append(rc.Destinations, d)
	}
	logs := &logBuf{}
	s, err := engine.New(engine.Config{Name: name, Listen: "127.0.0.1:0", DataDir: o.dir, Loops: 1, MaxFrame: o.maxFrame,
		Journal: journal.Options{SegmentSize: int64(max(4<<20, 3*o.maxFrame))}, Replication: rc,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("i", name)})
	if err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	n := &node{name: name, dir: o.dir, srv: s, logs: logs}
	origins.Store(name, s.Origin())
	if a := s.Replicator().Addr(); a != nil {
		n.repl = a.String()
	}
	t.Cleanup(func() { n.srv.Close() })
	return n, nil
}

// origins maps an instance name to the origin of its latest start
// (record.OriginEpochID of the name, the journal id and the run's epoch).
var origins sync.Map

// originOf returns the origin of the instance named name.
func originOf(name string) uint64 {
	if v, ok := origins.Load(name); ok {
		return v.(uint64)
	}
	return record.ID(name)
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	return testnet.FreeAddr(t)
}

func (n *node) stats() *wire.Stats { return n.srv.Stats() }

// dest returns n's stats for destination peer.
func (n *node) dest(t testing.TB, peer string) wire.DestinationStats {
	t.Helper()
	for _, d := range n.stats().Replication {
		if d.Name == peer {
			return d
		}
	}
	t.Fatalf("%s has no destination %q", n.name, peer)
	return wire.DestinationStats{}
}

func (n *node) waitState(t testing.TB, peer, state string, d time.Duration) {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("%s's destination %s to be %s", n.name, peer, state), func() bool {
		return n.dest(t, peer).State == state
	})
}

// ---- messages ----

type msgKey struct {
	publisher uint64
	pubSeq    uint64
}

func (k msgKey) String() string { return fmt.Sprintf("%x/%d", k.publisher, k.pubSeq) }

type msgBody struct{ topic, payload string }

// storedMsg is one record of a journal.
type storedMsg struct {
	key              msgKey
	seq, origin, via uint64
	topic, payload   string
}

// readJournal returns every record of srv's journal that is durable
// (SyncedSeq-visible), in journal order.
func readJournal(t testing.TB, srv *engine.Server) []storedMsg {
	t.Helper()
	j := srv.Journal()
	c, err := j.NewCursor(j.FirstSeq())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []storedMsg
	for {
		v, ok := c.Next()
		if !ok {
			break
		}
		out = append(out, storedMsg{key: msgKey{v.Publisher(), v.PubSeq()}, seq: v.Seq(), origin: v.Origin(), via: v.Via(),
			topic: string(v.Topic()), payload: string(v.Payload())})
	}
	if err := c.Err(); err != nil {
		t.Fatalf("reading %v: %v", j, err)
	}
	return out
}

// checkExactly checks that n's journal holds exactly the messages of want,
// each once, with their topic and payload, every publisher's in increasing
// publisher sequence, and origin/via consistent with where each was
// published (origins maps publisher id to the instance it published to).
func checkExactly(t testing.TB, n *node, want map[msgKey]msgBody, origins map[uint64]string) {
	t.Helper()
	checkStored(t, n, want, origins, true)
}

// checkStored is checkExactly, with the order check optional (a message may
// legitimately arrive before an older one of its publisher over another
// path in a mesh).
func checkStored(t testing.TB, n *node, want map[msgKey]msgBody, origins map[uint64]string, ordered bool) {
	t.Helper()
	got := readJournal(t, n.srv)
	seen := make(map[msgKey]uint64, len(got))
	lastPub := map[uint64]uint64{}
	var errs []string
	fail := func(format string, args ...any) {
		if len(errs) < 10 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	self := record.ID(n.name)
	for _, m := range got {
		if prev, dup := seen[m.key]; dup {
			fail("message %v stored twice, at seqs %d and %d", m.key, prev, m.seq)
			continue
		}
		seen[m.key] = m.seq
		w, ok := want[m.key]
		if !ok {
			fail("unexpected message %v (topic %q) at seq %d", m.key, m.topic, m.seq)
			continue
		}
		if w.topic != m.topic || w.payload != m.payload {
			fail("message %v at seq %d: topic %q payload %.30q, want %q %.30q", m.key, m.seq, m.topic, m.payload, w.topic, w.payload)
		}
		if ordered && m.key.pubSeq <= lastPub[m.key.publisher] {
			fail("publisher %x: pubSeq %d at seq %d after pubSeq %d", m.key.publisher, m.key.pubSeq, m.seq, lastPub[m.key.publisher])
		}
		lastPub[m.key.publisher] = m.key.pubSeq
		if o, ok := origins[m.key.publisher]; ok {
			if m.origin != originOf(o) {
				fail("message %v at seq %d: origin %x, want %s", m.key, m.seq, m.origin, o)
			}
			if (o == n.name) != (m.via == 0) || m.via == self {
				fail("message %v at seq %d: via %x (origin %s, this is %s)", m.key, m.seq, m.via, o, n.name)
			}
		}
	}
	missing := 0
	for k := range want {
		if _, ok := seen[k]; !ok {
			if missing < 5 {
				fail("message %v missing", k)
			}
			missing++
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%s's journal (%d records, %d wanted, %d missing):\n  %s", n.name, len(got), len(want), missing,
			strings.Join(errs, "\n  "))
	}
}

// waitQuiet waits until every node stores want messages (durably) and
// every connected destination of every node has acknowledged its whole
// journal: nothing is in flight anywhere, so counts are final.
func waitQuiet(t testing.TB, d time.Duration, want map[*node]uint64, nodes ...*node) {
	t.Helper()
	waitFor(t, d, "replication to settle", func() bool {
		for _, n := range nodes {
			st := n.stats()
			if w, ok := want[n]; ok && st.Stored != w {
				return false
			}
			if st.Journal.SyncedSeq != st.Journal.LastSeq {
				return false
			}
			for _, ds := range st.Replication {
				if !ds.Connected || ds.AckedThrough < st.Journal.LastSeq {
					return false
				}
			}
		}
		return true
	}, func() string {
		var b strings.Builder
		for _, n := range nodes {
			st := n.stats()
			fmt.Fprintf(&b, "\n%s: stored %d (want %d) dups %d last %d synced %d", n.name, st.Stored, want[n], st.Duplicates,
				st.Journal.LastSeq, st.Journal.SyncedSeq)
			for _, ds := range st.Replication {
				fmt.Fprintf(&b, "\n   -> %s %s connected=%v sent %d acked %d", ds.Name, ds.State, ds.Connected, ds.SentThrough, ds.AckedThrough)
			}
		}
		return b.String()
	})
}

// ---- publishers ----

// pubPlan is one publisher: name, the instance it publishes to, how many
// messages, and their topics.
type pubPlan struct {
	name   string
	to     *node
	n      int
	topics []string
}

// payloadFor derives a message's payload from its publisher and sequence:
// a prefix naming it, then 0..300 filler bytes.
func payloadFor(name string, seq uint64) string {
	h := seq*0x9e3779b97f4a7c15 ^ record.ID(name)
	return name + "/" + strconv.FormatUint(seq, 10) + "/" + strings.Repeat(string(rune('a'+h%26)), int(h>>8%300))
}

func topicFor(p pubPlan, seq uint64) string {
	if len(p.topics) == 0 {
		return "t." + p.name
	}
	return p.topics[(seq*2654435761+record.ID(p.name))%uint64(len(p.topics))]
}

// expected adds plan's messages 1..upTo to want and the publisher's origin.
func expected(want map[msgKey]msgBody, origins map[uint64]string, p pubPlan, upTo uint64) {
	id := record.ID(p.name)
	origins[id] = p.to.name
	for s := uint64(1); s <= upTo; s++ {
		want[msgKey{id, s}] = msgBody{topicFor(p, s), payloadFor(p.name, s)}
	}
}

// publishAll runs every plan concurrently (each publisher: n messages with
// persisted acks, then a Flush) and returns once all are persisted.
// pause, if set, is called between messages (and may block).
func publishAll(t testing.TB, ctx context.Context, plans []pubPlan, pause func(p pubPlan, seq uint64)) {
	t.Helper()
	errs := make(chan error, len(plans))
	for _, p := range plans {
		go func() { errs <- publish(ctx, p, pause) }()
	}
	for range plans {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func publish(ctx context.Context, p pubPlan, pause func(p pubPlan, seq uint64)) error {
	c, err := client.Connect(ctx, p.to.srv.Addr().String(), client.WithName(p.name))
	if err != nil {
		return fmt.Errorf("%s: connect to %s: %w", p.name, p.to.name, err)
	}
	defer c.Close()
	for s := uint64(1); s <= uint64(p.n); s++ {
		if pause != nil {
			pause(p, s)
		}
		got, err := c.Publish(ctx, topicFor(p, s), []byte(payloadFor(p.name, s)))
		if err != nil {
			return fmt.Errorf("%s: publish %d to %s: %w", p.name, s, p.to.name, err)
		}
		if got != s {
			return fmt.Errorf("%s: Publish returned pubSeq %d, want %d", p.name, got, s)
		}
	}
	if err := c.Flush(ctx); err != nil {
		return fmt.Errorf("%s: flush on %s: %w (stats %+v)", p.name, p.to.name, err, p.to.stats().Replication)
	}
	return nil
}

func countMatching(want map[msgKey]msgBody, ok func(msgBody) bool) map[msgKey]msgBody {
	out := map[msgKey]msgBody{}
	for k, v := range want {
		if ok(v) {
			out[k] = v
		}
	}
	return out
}

func sortedKeys(m map[msgKey]msgBody) []msgKey {
	ks := make([]msgKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].publisher != ks[j].publisher {
			return ks[i].publisher < ks[j].publisher
		}
		return ks[i].pubSeq < ks[j].pubSeq
	})
	return ks
}

// ---- a TCP proxy whose connections can be cut ----

// cutProxy forwards connections to upstream and can cut every current
// connection at once (both peers see a reset/EOF, as after a network
// failure) while still accepting new ones.
type cutProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    map[net.Conn]bool
	pairs    map[string]string // client's address -> proxy's local address towards upstream
	wg       sync.WaitGroup
}

func newCutProxy(t testing.TB, upstream string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}, pairs: map[string]string{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

// setUpstream sets where new connections go (until then they are closed).
func (p *cutProxy) setUpstream(a string) {
	p.mu.Lock()
	p.upstream = a
	p.mu.Unlock()
}

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		upstream := p.upstream
		p.mu.Unlock()
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.pairs[c.RemoteAddr().String()] = u.LocalAddr().String()
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(c, u)
		go pipe(u, c)
	}
}

// cut closes every connection through the proxy.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *cutProxy) upstreamSide(clientAddr string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pairs[clientAddr]
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// publishUntil publishes p's messages 1, 2, ... until stop is closed, then
// flushes and returns how many it published. each runs after every publish.
func publishUntil(ctx context.Context, p pubPlan, stop <-chan struct{}, each func()) (uint64, error) {
	c, err := client.Connect(ctx, p.to.srv.Addr().String(), client.WithName(p.name))
	if err != nil {
		return 0, fmt.Errorf("%s: connect to %s: %w", p.name, p.to.name, err)
	}
	defer c.Close()
	var s uint64
	for {
		select {
		case <-stop:
			if err := c.Flush(ctx); err != nil {
				return s, fmt.Errorf("%s: flush on %s: %w", p.name, p.to.name, err)
			}
			return s, nil
		default:
		}
		got, err := c.Publish(ctx, topicFor(p, s+1), []byte(payloadFor(p.name, s+1)))
		if err != nil {
			return s, fmt.Errorf("%s: publish %d to %s: %w", p.name, s+1, p.to.name, err)
		}
		if got != s+1 {
			return s, fmt.Errorf("%s: Publish returned pubSeq %d, want %d", p.name, got, s+1)
		}
		s++
		if each != nil {
			each()
		}
	}
}
