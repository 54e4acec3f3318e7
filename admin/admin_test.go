package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/enginetest"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/replicate"
	"github.com/tandemhq/tandem/wire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testEngine is the backend of this pass (enginetest runs the suite once
// per backend).
var testEngine = "epoll"

func TestMain(m *testing.M) {
	os.Exit(enginetest.Main(m, "admin", func(e string) { testEngine = e }))
}

// newServer starts an engine on a temporary journal.
func newServer(t testing.TB, dir string, mod func(*engine.Config)) *engine.Server {
	t.Helper()
	cfg := engine.Config{Engine: testEngine, Name: "A", Listen: "127.0.0.1:0", DataDir: dir, Loops: 2,
		Journal: journal.Options{SegmentSize: 4 << 20}, Logger: quiet}
	if mod != nil {
		mod(&cfg)
	}
	s, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newAdmin(t testing.TB, cfg Config) *Listener {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	cfg.Logger = quiet
	l, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func get(t testing.TB, l *Listener, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + l.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, d, last)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

// raw is a minimal wire client: it can send what the client package never
// does (a repeated or conflicting publisher sequence).
type raw struct {
	t        testing.TB
	c        net.Conn
	buf      []byte
	off, n   int
	acked    uint64
	refused  int
	delivers int
}

func dial(t testing.TB, s *engine.Server, name string) *raw {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, buf: make([]byte, 1<<20)}
	r.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, Name: []byte(name)}))
	if f := r.next(); f.Type != wire.TypeLogonReply {
		t.Fatalf("logon: got %s", f.Type)
	}
	return r
}

func (r *raw) send(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) next() wire.Frame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, n, err := wire.Split(r.buf[r.off:r.n], len(r.buf))
		if err != nil {
			r.t.Fatal(err)
		}
		if n > 0 {
			r.off += n
			return f
		}
		r.n = copy(r.buf, r.buf[r.off:r.n])
		r.off = 0
		m, err := r.c.Read(r.buf[r.n:])
		if err != nil {
			r.t.Fatalf("read: %v", err)
		}
		r.n += m
	}
}

// waitAck reads until a persisted ack covers seq, counting refusals.
func (r *raw) waitAck(seq uint64) {
	r.t.Helper()
	for r.acked < seq {
		f := r.next()
		if f.Type != wire.TypeAck {
			continue
		}
		var a wire.Ack
		if err := wire.DecodeAck(f.Body, &a); err != nil {
			r.t.Fatal(err)
		}
		if a.Kind != wire.AckKindPersisted {
			continue
		}
		if a.Code != 0 {
			r.refused++
		}
		r.acked = max(r.acked, a.Seq)
	}
}

// waitDelivers reads until n deliveries arrived.
func (r *raw) waitDelivers(n int) {
	r.t.Helper()
	for r.delivers < n {
		if f := r.next(); f.Type == wire.TypeDeliver {
			r.delivers++
		}
	}
}

func scrape(t *testing.T, l *Listener) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, l, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
		t.Fatalf("metric %s is not a counter or gauge", name)
	}
	t.Fatalf("metric %s%v missing", name, labels)
	return 0
}

func histogram(t *testing.T, fams map[string]*dto.MetricFamily, name string) *dto.Histogram {
	t.Helper()
	f, ok := fams[name]
	if !ok || len(f.Metric) != 1 || f.Metric[0].Histogram == nil {
		t.Fatalf("histogram %s missing", name)
	}
	return f.Metric[0].Histogram
}

// Every metric after a known workload: 200 messages published with
// persisted acks, 20 of them sent again (duplicates), 5 conflicting
// copies, one subscriber that gets all 200.
func TestMetricsAfterKnownWorkload(t *testing.T) {
	s := newServer(t, t.TempDir(), nil)
	l := newAdmin(t, Config{})
	l.SetServer(s)

	const n, dups, conflicts = 200, 20, 5
	topic, payload := []byte("prices.eur"), bytes.Repeat([]byte("x"), 100)
	sub := dial(t, s, "sub")
	sub.send(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, topic))
	pub := dial(t, s, "pub")
	var batch []byte
	for i := uint64(1); i <= n; i++ {
		batch = wire.AppendPublish(batch, i, wire.AckPersisted, topic, payload)
		if i%50 == 0 {
			pub.send(batch)
			batch = batch[:0]
			pub.waitAck(i)
		}
	}
	for i := uint64(1); i <= dups; i++ {
		pub.send(wire.AppendPublish(nil, i, wire.AckPersisted, topic, payload))
	}
	pub.waitAck(n) // acks of duplicates re-ack their sequence: read them through a flush-free barrier below
	for i := uint64(1); i <= conflicts; i++ {
		pub.send(wire.AppendPublish(nil, 100+i, wire.AckPersisted, topic, []byte("other")))
	}
	sub.waitDelivers(n)
	waitFor(t, "duplicates and conflicts counted", 5*time.Second, func() (bool, string) {
		st := s.Stats()
		return st.Duplicates == dups && st.Conflicts == conflicts, fmt.Sprintf("%d duplicates, %d conflicts", st.Duplicates, st.Conflicts)
	})

	fams := scrape(t, l)
	recBytes := float64(n * record.Size(len(topic), len(payload)))
	for _, c := range []struct {
		name string
		want float64
	}{
		{"tandem_messages_stored_total", n},
		{"tandem_messages_delivered_total", n},
		{"tandem_bytes_stored_total", recBytes},
		{"tandem_duplicates_total", dups},
		{"tandem_publisher_conflicts_total", conflicts},
		{"tandem_publishes_refused_total", conflicts},
		{"tandem_journal_bytes", 64 + recBytes}, // one segment: its header and the records
		{"tandem_journal_segments", 1},
		{"tandem_connections", 2},
		{"tandem_subscriptions", 1},
		{"tandem_slow_consumers", 0},
		{"tandem_retention_held_bytes", 0},
		{"tandem_storage_failed", 0},
		{"tandem_up", 1},
	} {
		if got := value(t, fams, c.name); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if got, want := value(t, fams, "tandem_journal_file_bytes"), float64(4<<20); got != want {
		t.Errorf("tandem_journal_file_bytes = %v, want %v", got, want)
	}
	syncs := s.Journal().Stats().Syncs
	h := histogram(t, fams, "tandem_journal_fsync_seconds")
	if h.GetSampleCount() != syncs || syncs == 0 {
		t.Errorf("fsync histogram: %d samples, journal counted %d syncs", h.GetSampleCount(), syncs)
	}
	if h.GetSampleSum() <= 0 {
		t.Errorf("fsync histogram sum %v", h.GetSampleSum())
	}
	b := histogram(t, fams, "tandem_journal_batch_records")
	if b.GetSampleCount() != syncs || b.GetSampleSum() != n {
		t.Errorf("batch histogram: %d batches of %v records in all, want %d and %d", b.GetSampleCount(), b.GetSampleSum(), syncs, n)
	}
	a := histogram(t, fams, "tandem_persisted_ack_seconds")
	// One observation per read batch that asked for a persisted ack: at
	// least one per 50-message send, at most one per publish.
	if c := a.GetSampleCount(); c < n/50 || c > n+dups {
		t.Errorf("persisted-ack histogram: %d samples, want %d..%d", c, n/50, n+dups)
	}
	if buckets := a.GetBucket(); len(buckets) == 0 || buckets[len(buckets)-1].GetCumulativeCount() != a.GetSampleCount() {
		t.Errorf("persisted-ack histogram: the last finite bucket does not hold every sample (%v)", buckets)
	}
}

// Replication metrics: per-peer lag and state, one state set to 1.
func TestReplicationMetrics(t *testing.T) {
	b := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Name = "B"
		c.Replication = &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{{Name: "A", Mode: replicate.Sync}},
			Heartbeat: 50 * time.Millisecond}
	})
	a := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Replication = &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{
			{Name: "B", Addr: b.Replicator().Addr().String(), Mode: replicate.Sync},
			{Name: "C", Addr: freeAddr(t), Mode: replicate.Async}}, Heartbeat: 50 * time.Millisecond}
	})
	l := newAdmin(t, Config{})
	l.SetServer(a)
	waitFor(t, "A's peer B in sync", 10*time.Second, func() (bool, string) {
		st := a.Stats()
		return st.Replication[0].State == "sync", st.Replication[0].State
	})
	p := dial(t, a, "pub")
	for i := uint64(1); i <= 10; i++ {
		p.send(wire.AppendPublish(nil, i, wire.AckPersisted, []byte("t"), []byte("m")))
	}
	p.waitAck(10) // held until B has them: B's lag is 0 now
	fams := scrape(t, l)
	for _, c := range []struct {
		peer, state string
		want        float64
	}{{"B", "sync", 1}, {"B", "async", 0}, {"B", "downgraded", 0}, {"C", "async", 1}, {"C", "sync", 0}} {
		if got := value(t, fams, "tandem_replication_state", "peer", c.peer, "state", c.state); got != c.want {
			t.Errorf("state{peer=%s,state=%s} = %v, want %v", c.peer, c.state, got, c.want)
		}
	}
	if got := value(t, fams, "tandem_replication_lag_messages", "peer", "B"); got != 0 {
		t.Errorf("lag to B %v messages, want 0 (the acks waited for B)", got)
	}
	if got := value(t, fams, "tandem_replication_lag_messages", "peer", "C"); got != 10 {
		t.Errorf("lag to C %v messages, want 10 (never reached)", got)
	}
	// The replicator re-evaluates lag in time every 10ms: B in sync means
	// below repl-downgrade-after (1s), not necessarily 0 at this instant.
	if got := value(t, fams, "tandem_replication_lag_seconds", "peer", "B"); got < 0 || got >= 1 {
		t.Errorf("lag to B %v seconds, want in [0, 1)", got)
	}
	if got := value(t, fams, "tandem_replication_connected", "peer", "C"); got != 0 {
		t.Errorf("C connected = %v", got)
	}
}

// freeAddr returns a loopback address nothing listens on (now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

var errInjected = errors.New("injected EIO")

// /healthz turns 503 with the reason once a journal sync fails; /readyz
// with it; the metric says so too.
func TestHealthAfterStorageFailure(t *testing.T) {
	var failSync atomic.Bool
	s := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Journal.FS = journal.ErrorFS{FS: journal.OSFS{}, Inject: func(op, name string) error {
			if op == "sync" && failSync.Load() {
				return errInjected
			}
			return nil
		}}
	})
	l := newAdmin(t, Config{})
	l.SetServer(s)
	p := dial(t, s, "pub")
	p.send(wire.AppendPublish(nil, 1, wire.AckPersisted, []byte("t"), []byte("m")))
	p.waitAck(1)
	if code, body := get(t, l, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthy: /healthz %d %q", code, body)
	}
	if code, body := get(t, l, "/readyz"); code != 200 {
		t.Fatalf("healthy: /readyz %d %q", code, body)
	}
	failSync.Store(true)
	p.send(wire.AppendPublish(nil, 2, wire.AckPersisted, []byte("t"), []byte("m")))
	waitFor(t, "/healthz 503", 5*time.Second, func() (bool, string) {
		code, body := get(t, l, "/healthz")
		return code == http.StatusServiceUnavailable && strings.HasPrefix(body, "storage failed: ") &&
			strings.Contains(body, "injected EIO") && strings.Count(body, "\n") == 1, fmt.Sprintf("%d %q", code, body)
	})
	if code, body := get(t, l, "/readyz"); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "storage failed") {
		t.Errorf("/readyz after the failure: %d %q", code, body)
	}
	if got := value(t, scrape(t, l), "tandem_storage_failed"); got != 1 {
		t.Errorf("tandem_storage_failed = %v", got)
	}
	var st wire.Stats
	_, body := get(t, l, "/v1/stat")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Storage, "failed: ") || !strings.Contains(st.StorageError, "injected EIO") {
		t.Errorf("stat document: storage %q %q", st.Storage, st.StorageError)
	}
}

// Before SetServer (recovering) the instance is alive but not ready;
// during shutdown neither.
func TestHealthRecoveringAndShutdown(t *testing.T) {
	l := newAdmin(t, Config{})
	if code, body := get(t, l, "/healthz"); code != 200 || body != "recovering\n" {
		t.Errorf("recovering: /healthz %d %q", code, body)
	}
	if code, body := get(t, l, "/readyz"); code != 503 || body != "recovering\n" {
		t.Errorf("recovering: /readyz %d %q", code, body)
	}
	if code, _ := get(t, l, "/v1/stat"); code != 503 {
		t.Errorf("recovering: /v1/stat %d", code)
	}
	if got := value(t, scrape(t, l), "tandem_up"); got != 0 {
		t.Errorf("recovering: tandem_up = %v", got)
	}
	s := newServer(t, t.TempDir(), nil)
	l.SetServer(s)
	if code, body := get(t, l, "/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("no peers: /readyz %d %q", code, body)
	}
	l.ShuttingDown()
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, l, path); code != 503 || body != "shutting down\n" {
			t.Errorf("shutting down: %s %d %q", path, code, body)
		}
	}
}

// /readyz waits for a sync peer to be reached and caught up.
func TestReadyDuringCatchUp(t *testing.T) {
	bRepl := freeAddr(t)
	a := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Replication = &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{
			{Name: "B", Addr: bRepl, Mode: replicate.Sync}}, Heartbeat: 50 * time.Millisecond, DowngradeAfter: 200 * time.Millisecond}
	})
	// Readiness waits longer than the replicator does before it acks
	// without B (its own DowngradeAfter).
	l := newAdmin(t, Config{DowngradeAfter: time.Minute})
	l.SetServer(a)
	p := dial(t, a, "pub")
	for i := uint64(1); i <= 500; i++ { // acked without B once B is downgraded (200 ms away)
		p.send(wire.AppendPublish(nil, i, wire.AckPersisted, []byte("t"), bytes.Repeat([]byte("m"), 1000)))
	}
	p.waitAck(500)
	code, body := get(t, l, "/readyz")
	if code != 503 || !strings.HasPrefix(body, "catching up: B (not connected, 500 messages behind)") {
		t.Fatalf("B unreachable: /readyz %d %q", code, body)
	}
	if code, _ := get(t, l, "/healthz"); code != 200 {
		t.Errorf("B unreachable: /healthz %d (alive all the same)", code)
	}
	newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Name = "B"
		c.Replication = &replicate.Config{Listen: bRepl, Destinations: []replicate.Destination{{Name: "A", Mode: replicate.Sync}},
			Heartbeat: 50 * time.Millisecond}
	})
	waitFor(t, "/readyz 200 once B caught up", 20*time.Second, func() (bool, string) {
		code, body := get(t, l, "/readyz")
		return code == 200 && body == "ready\n", fmt.Sprintf("%d %q", code, body)
	})
	// Caught up is the replicator's upgrade rule: connected and the
	// oldest record B lacks became durable here less than
	// repl-upgrade-below ago (not necessarily zero messages behind).
	if d := a.Stats().Replication[0]; d.State != "sync" || !d.Connected {
		t.Errorf("ready but B is %s (connected %v)", d.State, d.Connected)
	}
}

// Without reaching its sync peer, an instance is ready once
// repl-downgrade-after has passed (it then acks without the peer anyway).
func TestReadyAfterDowngradeAfter(t *testing.T) {
	a := newServer(t, t.TempDir(), func(c *engine.Config) {
		c.Replication = &replicate.Config{Listen: "127.0.0.1:0", Destinations: []replicate.Destination{
			{Name: "B", Addr: freeAddr(t), Mode: replicate.Sync}}, Heartbeat: 50 * time.Millisecond, DowngradeAfter: 300 * time.Millisecond}
	})
	l := newAdmin(t, Config{})
	began := time.Now()
	l.SetServer(a)
	if code, body := get(t, l, "/readyz"); code != 503 || !strings.HasPrefix(body, "catching up: B") {
		t.Fatalf("at start: /readyz %d %q", code, body)
	}
	waitFor(t, "/readyz 200 after repl-downgrade-after", 5*time.Second, func() (bool, string) {
		code, body := get(t, l, "/readyz")
		return code == 200 && strings.HasPrefix(body, "ready (repl-downgrade-after passed"), fmt.Sprintf("%d %q", code, body)
	})
	if e := time.Since(began); e < 300*time.Millisecond {
		t.Errorf("ready after %v, before repl-downgrade-after", e)
	}
}

func TestStatDocumentAndConsole(t *testing.T) {
	s := newServer(t, t.TempDir(), nil)
	l := newAdmin(t, Config{})
	l.SetServer(s)
	code, body := get(t, l, "/v1/stat")
	var st wire.Stats
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Instance != "A" || st.Storage != "ok" || st.Journal.UsedBytes != 64 {
		t.Fatalf("/v1/stat: %d %s", code, body)
	}
	code, body = get(t, l, "/")
	if code != 200 || !strings.Contains(body, `<script src="console.js">`) {
		t.Fatalf("/: %d %.200s", code, body)
	}
	if code, body = get(t, l, "/console.js"); code != 200 || !strings.Contains(body, "v1/stat") {
		t.Fatalf("/console.js: %d", code)
	}
}

// The authorizer hook guards everything but the probes.
func TestAuthorize(t *testing.T) {
	s := newServer(t, t.TempDir(), nil)
	l := newAdmin(t, Config{Authorize: func(r *http.Request) error {
		if u, p, ok := r.BasicAuth(); ok && u == "admin" && p == "pw" {
			return nil
		}
		return errors.New("admin user required")
	}})
	l.SetServer(s)
	for _, path := range []string{"/metrics", "/v1/stat", "/"} {
		if code, body := get(t, l, path); code != 401 || !strings.Contains(body, "admin user required") {
			t.Errorf("%s without credentials: %d %q", path, code, body)
		}
		req, _ := http.NewRequest("GET", "http://"+l.Addr().String()+path, nil)
		req.SetBasicAuth("admin", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s as admin: %d", path, resp.StatusCode)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, l, path); code != 200 {
			t.Errorf("%s must stay open for probes: %d", path, code)
		}
	}
}

func TestBadAddress(t *testing.T) {
	for _, addr := range []string{"", "nope", "127.0.0.1:notaport"} {
		if _, err := Start(Config{Addr: addr, Logger: quiet}); err == nil {
			t.Errorf("Start(%q) succeeded", addr)
		} else if addr != "127.0.0.1:notaport" && !errors.Is(err, ErrConfig) {
			t.Errorf("Start(%q): %v is not ErrConfig", addr, err)
		}
	}
}

// A subscriber that stops reading is counted as a slow consumer once its
// output reaches write-high-water, and no longer once it has drained.
func TestSlowConsumerMetric(t *testing.T) {
	s := newServer(t, t.TempDir(), func(c *engine.Config) { c.WriteHighWater = 64 << 10 })
	l := newAdmin(t, Config{})
	l.SetServer(s)
	sub := dial(t, s, "stalled")
	sub.send(wire.AppendSubscribe(nil, 1, wire.StartEpoch, wire.MatchExact, []byte("big")))
	pub := dial(t, s, "pub")
	payload := bytes.Repeat([]byte("p"), 60<<10)
	const n = 400 // 24 MB: more than the socket buffers hold
	for i := uint64(1); i <= n; i++ {
		pub.send(wire.AppendPublish(nil, i, wire.AckPersisted, []byte("big"), payload))
		if i%50 == 0 {
			pub.waitAck(i)
		}
	}
	waitFor(t, "one slow consumer", 10*time.Second, func() (bool, string) {
		v := value(t, scrape(t, l), "tandem_slow_consumers")
		return v == 1, fmt.Sprint(v)
	})
	sub.waitDelivers(n) // drain
	waitFor(t, "no slow consumer after draining", 10*time.Second, func() (bool, string) {
		v := value(t, scrape(t, l), "tandem_slow_consumers")
		return v == 0, fmt.Sprint(v)
	})
	if got := value(t, scrape(t, l), "tandem_messages_delivered_total"); got != n {
		t.Errorf("delivered %v, want %d", got, n)
	}
}

// A shared-store passive's /readyz is 503 standby; /healthz stays 200.
func TestReadyStandby(t *testing.T) {
	l := newAdmin(t, Config{})
	l.SetStandby(true)
	if code, body := get(t, l, "/readyz"); code != 503 || body != "standby\n" {
		t.Fatalf("standby: /readyz %d %q", code, body)
	}
	if code, _ := get(t, l, "/healthz"); code != 200 {
		t.Fatalf("standby: /healthz %d", code)
	}
	l.SetStandby(false)
	if code, body := get(t, l, "/readyz"); code != 503 || body != "recovering\n" {
		t.Fatalf("after takeover, before the engine: /readyz %d %q", code, body)
	}
}
