package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/internal/enginetest"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

var tandemBin string

// testEngine is the backend every server the tests start uses (in process,
// or `tandem serve --engine`): TestMain runs the suite once per backend.
var testEngine string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tandem-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tandemBin = filepath.Join(dir, "tandem")
	if out, err := exec.Command("go", "build", "-o", tandemBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := enginetest.Main(m, "cmd/tandem", func(e string) { testEngine = e })
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func startServer(t *testing.T, name string) string {
	t.Helper()
	s, err := engine.New(engine.Config{Engine: testEngine, Name: name, Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr().String()
}

type result struct {
	stdout, stderr string
	code           int
}

func tandem(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(tandemBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("tandem %v did not finish; stderr:\n%s", args, errb.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func lines(n int, f string) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, f+"\n", i)
	}
	return b.String()
}

func TestUsage(t *testing.T) {
	r := tandem(t, "")
	if r.code != 2 || !strings.Contains(r.stderr, "Usage:") {
		t.Fatalf("no command: %+v", r)
	}
	r = tandem(t, "", "frobnicate")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) || !strings.Contains(r.stderr, "pub") {
		t.Fatalf("unknown command: %+v", r)
	}
	r = tandem(t, "", "help")
	if r.code != 0 || !strings.Contains(r.stdout, "serve") || !strings.Contains(r.stdout, "stat") {
		t.Fatalf("help: %+v", r)
	}
	for _, c := range []string{"pub", "sub", "stat"} {
		r = tandem(t, "", "help", c)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: tandem "+c) || !strings.Contains(r.stdout, "-servers") && c != "stat" {
			t.Fatalf("help %s: %+v", c, r)
		}
	}
	r = tandem(t, "", "pub", "--bogus")
	if r.code != 2 {
		t.Fatalf("bad flag: %+v", r)
	}
	r = tandem(t, "", "pub")
	if r.code != 2 || !strings.Contains(r.stderr, "--topic") {
		t.Fatalf("pub without topic: %+v", r)
	}
}

func TestPubThenSub(t *testing.T) {
	addr := startServer(t, "cli-1")
	in := lines(1000, "message %d") + "\n" + strings.Repeat("L", 1<<20) + "\nlast without newline"
	r := tandem(t, in, "pub", "--servers", addr+",127.0.0.1:1", "--name", "p", "--topic", "orders.new")
	if r.code != 0 || !strings.Contains(r.stderr, "1003 messages") || !strings.Contains(r.stderr, "all persisted") {
		t.Fatalf("pub: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "orders.new", "--from", "epoch", "--count", "1003")
	if r.code != 0 {
		t.Fatalf("sub: code %d stderr %s", r.code, r.stderr)
	}
	want := strings.TrimSuffix(in, "last without newline") + "last without newline\n"
	if r.stdout != want {
		t.Fatalf("sub printed %d bytes, want %d", len(r.stdout), len(want))
	}

	// A second run under the same name appends (publisher sequences
	// continue) instead of being de-duplicated away.
	r = tandem(t, "again\n", "pub", "--servers", addr, "--name", "p", "--topic", "orders.new")
	if r.code != 0 {
		t.Fatalf("second pub: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "orders.*", "--from", "epoch", "--idle", "300ms")
	if r.code != 0 || !strings.HasSuffix(r.stdout, "last without newline\nagain\n") || strings.Count(r.stdout, "\n") != 1004 {
		t.Fatalf("prefix sub with --idle: code %d, %d lines, tail %q, stderr %s", r.code, strings.Count(r.stdout, "\n"), r.stdout[max(0, len(r.stdout)-40):], r.stderr)
	}
}

func TestSubJSONAndBookmark(t *testing.T) {
	addr := startServer(t, "cli-2")
	if r := tandem(t, "one\n\"quoted\"\tand tab\nthree\n", "pub", "--servers", addr, "--name", "pj", "--topic", "t.j", "--ack", "received"); r.code != 0 {
		t.Fatalf("pub: %+v", r)
	}
	r := tandem(t, "", "sub", "--servers", addr, "--topic", "^t\\.", "--regex", "--from", "epoch", "--count", "3", "--format", "json")
	if r.code != 0 {
		t.Fatalf("sub: %+v", r)
	}
	type line struct {
		Bookmark, Topic, Timestamp, Payload string
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var x line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		if _, err := time.Parse(time.RFC3339Nano, x.Timestamp); err != nil {
			t.Fatalf("timestamp %q: %v", x.Timestamp, err)
		}
		b, err := record.ParseBookmark(x.Bookmark)
		if err != nil || b.Publisher != record.ID("pj") {
			t.Fatalf("bookmark %q: %v %v", x.Bookmark, b, err)
		}
		got = append(got, x)
	}
	if len(got) != 3 || got[1].Payload != "\"quoted\"\tand tab" || got[0].Topic != "t.j" {
		t.Fatalf("json lines %+v", got)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "t.j", "--from", got[0].Bookmark, "--count", "2")
	if r.code != 0 || r.stdout != "\"quoted\"\tand tab\nthree\n" {
		t.Fatalf("sub from bookmark: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "t.j", "--from", "nonsense")
	if r.code != 2 {
		t.Fatalf("bad bookmark text: %+v", r)
	}
}

func TestStat(t *testing.T) {
	addr := startServer(t, "cli-stat")
	if r := tandem(t, lines(5, "%d"), "pub", "--servers", addr, "--name", "ps", "--topic", "alpha"); r.code != 0 {
		t.Fatalf("pub: %+v", r)
	}
	r := tandem(t, "", "stat", "--server", addr)
	if r.code != 0 || !strings.Contains(r.stdout, "cli-stat") || !strings.Contains(r.stdout, "alpha") || !strings.Contains(r.stdout, "messages stored") {
		t.Fatalf("stat: %+v", r)
	}
	r = tandem(t, "", "stat", "--server", addr, "--json")
	var st wire.Stats
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Instance != "cli-stat" || st.Stored != 5 {
		t.Fatalf("stat --json: %+v", r)
	}
}

func TestPubFailures(t *testing.T) {
	r := tandem(t, "x\n", "pub", "--servers", "127.0.0.1:1", "--topic", "t")
	if r.code == 0 || !strings.Contains(r.stderr, "dial") {
		t.Fatalf("unreachable server: %+v", r)
	}
	addr := startServer(t, "cli-3")
	r = tandem(t, strings.Repeat("x", 5<<20)+"\n", "pub", "--servers", addr, "--topic", "t")
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("line 1: too-large: %d bytes > max-frame %d", wire.PublishOverhead+1+5<<20, wire.DefaultMaxFrame)) {
		t.Fatalf("oversized line: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "(", "--regex")
	if r.code != 1 || !strings.Contains(r.stderr, "bad pattern") {
		t.Fatalf("bad regex: %+v", r)
	}
}

// TestPubRefusedLines (issue 10 item 7): lines that can never be stored
// are reported one by one, the others are published, and pub exits 1
// without retrying.
func TestPubRefusedLines(t *testing.T) {
	addr := startServer(t, "cli-4")
	in := "a\n" + strings.Repeat("x", 5000) + "\nc\n" + strings.Repeat("y", 100000) + "\ne"
	r := tandem(t, in, "pub", "--servers", addr, "--name", "pr", "--topic", "t.r", "--max-frame", "4096")
	want2 := fmt.Sprintf("line 2: too-large: %d bytes > max-frame 4096\n", wire.PublishOverhead+len("t.r")+5000)
	want4 := fmt.Sprintf("line 4: too-large: %d bytes > max-frame 4096\n", wire.PublishOverhead+len("t.r")+100000)
	if r.code != 1 || !strings.Contains(r.stderr, want2+want4) || !strings.Contains(r.stderr, "3 persisted, 2 refused") {
		t.Fatalf("pub: code %d, stderr:\n%s", r.code, r.stderr)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "t.r", "--from", "epoch", "--count", "3")
	if r.code != 0 || r.stdout != "a\nc\ne\n" {
		t.Fatalf("sub: %+v", r)
	}
	if !strings.Contains(r.stderr, "subscription id auto-") {
		t.Fatalf("sub did not print its generated id: %s", r.stderr)
	}
}

// TestRefusalLines: refusals reported by publisher sequence map back to
// input lines across skipped lines and sequence jumps, in line order.
func TestRefusalLines(t *testing.T) {
	var r refusals
	r.published(1, 1)
	r.skip(2, wire.CodeTooLarge, "big")
	r.published(2, 3)
	r.published(3, 4)
	r.published(10, 5) // the sequence jumped (a reconnect)
	r.published(11, 6)
	r.failed(11, wire.CodeNotPermitted, "no")
	r.failed(3, wire.CodeBadTopic, "bad")
	var b strings.Builder
	if n := r.print(&b); n != 3 {
		t.Fatalf("%d refusals", n)
	}
	want := "line 2: too-large: big\nline 4: bad topic: bad\nline 6: not-permitted: no\n"
	if b.String() != want {
		t.Fatalf("got:\n%swant:\n%s", b.String(), want)
	}
}

// TestPubErrorsCounted: a retry loop's errors are printed once, with a
// count at exit.
func TestPubErrorsCounted(t *testing.T) {
	r := tandem(t, "x\n", "pub", "--servers", "127.0.0.1:1", "--topic", "t", "--connect-for", "300ms")
	if r.code != 1 {
		t.Fatalf("pub: %+v", r)
	}
	const attempt = "tandem pub: client: connect to 127.0.0.1:1:"
	if n := strings.Count(r.stderr, attempt); n != 1 {
		t.Fatalf("the failed attempt printed %d times, want once:\n%s", n, r.stderr)
	}
	if !regexp.MustCompile(`tandem pub: \d+ times in all: client: connect to 127\.0\.0\.1:1:`).MatchString(r.stderr) {
		t.Fatalf("no count:\n%s", r.stderr)
	}
}

func TestJSONString(t *testing.T) {
	for _, in := range []string{"plain", "q\"b\\", "ctl\x01\x1f\x7f\n\r\t", "utf8 é ☃", "bad \xff\xfe end", ""} {
		got := appendJSONString(nil, []byte(in))
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q -> %s: %v", in, got, err)
		}
		var want string // encoding/json's reading: one U+FFFD per invalid byte
		enc, _ := json.Marshal(in)
		json.Unmarshal(enc, &want)
		if back != want {
			t.Fatalf("%q -> %s -> %q", in, got, back)
		}
	}
	b := record.Bookmark{Publisher: 0xab, PubSeq: 7, Seq: 99}
	if got := string(appendBookmark(nil, b)); got != b.String() {
		t.Fatalf("bookmark %q, want %q", got, b.String())
	}
}
