package engine

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/enginetest"
	"github.com/tandemhq/tandem/journal"
	"github.com/tandemhq/tandem/wire"
)

// testEngine is the backend the tests run on: TestMain runs the whole suite
// once per backend (a matrix, not a copy of the tests).
var testEngine = "epoll"

func TestMain(m *testing.M) {
	os.Exit(enginetest.Main(m, "engine", func(e string) { testEngine = e }))
}

// testServer starts a server on a loopback port with its journal in dir.
func testServer(t testing.TB, dir string, mod ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Name: "test", Listen: "127.0.0.1:0", DataDir: dir, Loops: 2, Engine: testEngine,
		Journal: journal.Options{SegmentSize: 4 << 20},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if os.Getenv("TANDEM_TEST_LOG") != "" {
		cfg.Logger = slog.Default()
	}
	// TANDEM_JOURNAL_SYNC=syscall|uring overrides the backend's choice of
	// group-commit path (to compare them in benchmarks).
	cfg.Journal.SyncVia = os.Getenv("TANDEM_JOURNAL_SYNC")
	for _, f := range mod {
		f(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

// rawClient speaks the wire protocol over a plain socket, frame by frame,
// so tests see exactly what the server sends.
type rawClient struct {
	t    testing.TB
	c    net.Conn
	buf  []byte
	off  int // start of unread bytes in buf
	n    int // end of bytes in buf
	wbuf []byte
}

func dialRaw(t testing.TB, s *Server) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, buf: make([]byte, 8<<20)}
}

func (r *rawClient) send(frame []byte) {
	r.t.Helper()
	r.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.c.Write(frame); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame (a copy of its body), failing the test after
// the deadline. io.EOF-style errors are returned, not fatal.
func (r *rawClient) next(d time.Duration) (wire.Frame, error) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		f, n, err := wire.Split(r.buf[r.off:r.n], len(r.buf))
		if err != nil {
			r.t.Fatalf("client split: %v", err)
		}
		if n > 0 {
			body := append([]byte(nil), f.Body...)
			r.off += n
			return wire.Frame{Type: f.Type, Body: body}, nil
		}
		r.n = copy(r.buf, r.buf[r.off:r.n])
		r.off = 0
		r.c.SetReadDeadline(deadline)
		m, err := r.c.Read(r.buf[r.n:])
		r.n += m
		if err != nil && m == 0 {
			return wire.Frame{}, err
		}
	}
}

func (r *rawClient) mustNext(d time.Duration) wire.Frame {
	r.t.Helper()
	f, err := r.next(d)
	if err != nil {
		r.t.Fatalf("reading frame: %v", err)
	}
	return f
}

// nextSkipping returns the next frame that is not a heartbeat or a
// subscription's Position.
func (r *rawClient) nextSkipping(d time.Duration) wire.Frame {
	r.t.Helper()
	for {
		f := r.mustNext(d)
		if f.Type != wire.TypeHeartbeat && f.Type != wire.TypePosition {
			return f
		}
	}
}

func (r *rawClient) logon(name string, hbMillis uint32) wire.LogonReply {
	r.t.Helper()
	r.send(wire.AppendLogon(nil, &wire.Logon{MinVersion: wire.MinVersion, MaxVersion: wire.MaxVersion, HeartbeatMillis: hbMillis, Name: []byte(name)}))
	f := r.mustNext(5 * time.Second)
	if f.Type != wire.TypeLogonReply {
		r.t.Fatalf("logon %q: got %s %s", name, f.Type, describe(f))
	}
	var m wire.LogonReply
	if err := wire.DecodeLogonReply(f.Body, &m); err != nil {
		r.t.Fatal(err)
	}
	return m
}

// expectError waits for an Error frame with the code, then for the close.
func (r *rawClient) expectError(code wire.Code) string {
	r.t.Helper()
	for {
		f, err := r.next(5 * time.Second)
		if err != nil {
			r.t.Fatalf("want error %s, connection ended: %v", code, err)
		}
		if f.Type == wire.TypeHeartbeat || f.Type == wire.TypeAck {
			continue
		}
		if f.Type != wire.TypeError {
			r.t.Fatalf("want error %s, got %s", code, f.Type)
		}
		var e wire.Error
		if err := wire.DecodeError(f.Body, &e); err != nil {
			r.t.Fatal(err)
		}
		if e.Code != code {
			r.t.Fatalf("want error %s, got %s: %s", code, e.Code, e.Text)
		}
		if _, err := r.next(5 * time.Second); !errors.Is(err, io.EOF) && !isReset(err) {
			r.t.Fatalf("after error frame: want close, got %v", err)
		}
		return string(e.Text)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// waitAck reads until an ack of kind with seq >= want arrives.
func (r *rawClient) waitAck(kind wire.AckKind, want uint64) wire.Ack {
	r.t.Helper()
	for {
		f := r.nextSkipping(10 * time.Second)
		if f.Type != wire.TypeAck {
			r.t.Fatalf("waiting for %s ack %d: got %s %s", kind, want, f.Type, describe(f))
		}
		var a wire.Ack
		if err := wire.DecodeAck(f.Body, &a); err != nil {
			r.t.Fatal(err)
		}
		if a.Code != 0 {
			r.t.Fatalf("ack %s refused: %s %s", a.Kind, a.Code, a.Text)
		}
		if a.Kind == kind && a.Seq >= want {
			a.Text = nil
			return a
		}
	}
}

func describe(f wire.Frame) string {
	switch f.Type {
	case wire.TypeError:
		var e wire.Error
		wire.DecodeError(f.Body, &e)
		return fmt.Sprintf("%s: %s", e.Code, e.Text)
	case wire.TypeAck:
		var a wire.Ack
		wire.DecodeAck(f.Body, &a)
		return fmt.Sprintf("%s seq=%d code=%s %s", a.Kind, a.Seq, a.Code, a.Text)
	}
	return ""
}

// delivery is a received message, copied.
type delivery struct {
	sub     uint32
	seq     uint64
	pubSeq  uint64
	topic   string
	payload string
}

func (r *rawClient) nextDelivery(d time.Duration) delivery {
	r.t.Helper()
	f := r.nextSkipping(d)
	if f.Type != wire.TypeDeliver {
		r.t.Fatalf("want delivery, got %s %s", f.Type, describe(f))
	}
	var m wire.Deliver
	if err := wire.DecodeDeliver(f.Body, &m); err != nil {
		r.t.Fatal(err)
	}
	if err := m.Record.Verify(); err != nil {
		r.t.Fatalf("delivered record: %v", err)
	}
	return delivery{sub: m.SubID, seq: m.Record.Seq(), pubSeq: m.Record.PubSeq(), topic: string(m.Record.Topic()), payload: string(m.Record.Payload())}
}

// subscribe sends Subscribe and waits for its ack (or returns the refusal).
func (r *rawClient) subscribe(frame []byte) wire.Ack {
	r.t.Helper()
	r.send(frame)
	f := r.nextSkipping(5 * time.Second)
	if f.Type != wire.TypeAck {
		r.t.Fatalf("subscribe: got %s %s", f.Type, describe(f))
	}
	var a wire.Ack
	wire.DecodeAck(f.Body, &a)
	a.Text = append([]byte(nil), a.Text...)
	if a.Kind != wire.AckKindSubscribed {
		r.t.Fatalf("subscribe: got ack %s", a.Kind)
	}
	return a
}

// publishN publishes payloads "<prefix><i>" for pubSeq from..from+n-1 on topic.
func (r *rawClient) publishN(topic, prefix string, from, n uint64, ack wire.AckWanted) {
	r.t.Helper()
	r.wbuf = r.wbuf[:0]
	for i := from; i < from+n; i++ {
		r.wbuf = wire.AppendPublish(r.wbuf, i, ack, []byte(topic), fmt.Appendf(nil, "%s%d", prefix, i))
		if len(r.wbuf) > 256<<10 {
			r.send(r.wbuf)
			r.wbuf = r.wbuf[:0]
		}
	}
	if len(r.wbuf) > 0 {
		r.send(r.wbuf)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
