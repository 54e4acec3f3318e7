package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stat takes --servers like every other command (--server stays as an
// alias) and shows the journal's used bytes and the storage state.
func TestStatServersUsedBytesAndStorage(t *testing.T) {
	addr := startServer(t, "cli-stat-used")
	if r := tandem(t, lines(5, "%d"), "pub", "--servers", addr, "--name", "ps", "--topic", "alpha"); r.code != 0 {
		t.Fatalf("pub: %+v", r)
	}
	r := tandem(t, "", "stat", "--servers", addr)
	if r.code != 0 {
		t.Fatalf("stat --servers: %+v", r)
	}
	// 64-byte segment header and 5 records of 72 + 5 + 1 bytes: 454 B of a
	// 64 MiB preallocated segment.
	if !regexp.MustCompile(`journal used\s+454 B in 1 segments \(64\.0 MiB preallocated\)`).MatchString(r.stdout) {
		t.Errorf("stat does not show the used bytes:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`(?m)^storage\s+ok$`).MatchString(r.stdout) {
		t.Errorf("stat does not show the storage state:\n%s", r.stdout)
	}
	if r := tandem(t, "", "stat", "--server", addr); r.code != 0 || !strings.Contains(r.stdout, "cli-stat-used") {
		t.Errorf("stat --server (alias): %+v", r)
	}
}

// help, -h and --help print a command's usage to standard output and exit 0.
func TestHelpOnEveryCommand(t *testing.T) {
	for _, c := range commands {
		for _, args := range [][]string{{"help", c.name}, {c.name, "-h"}, {c.name, "--help"}, {c.name, "help"}} {
			r := tandem(t, "", args...)
			if r.code != 0 || !strings.Contains(r.stdout, "tandem "+c.name) || !strings.Contains(r.stdout, "-") || r.stderr != "" {
				t.Errorf("tandem %s: exit %d\nstdout:\n%.300s\nstderr:\n%.300s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		if r := tandem(t, "", args...); r.code != 0 || !strings.Contains(r.stdout, "Commands:") || r.stderr != "" {
			t.Errorf("tandem %v: %+v", args, r)
		}
	}
}

// tandem version: the first line is "tandem VERSION (COMMIT) GOVERSION",
// then which event-loop engines this machine allows.
func TestVersion(t *testing.T) {
	r := tandem(t, "", "version")
	if r.code != 0 {
		t.Fatalf("version: %+v", r)
	}
	out := strings.Split(strings.TrimSpace(r.stdout), "\n")
	first := regexp.MustCompile(`^tandem \S+ \(\S+\) go\d+\.\d+`)
	if !first.MatchString(out[0]) || !strings.HasSuffix(out[0], runtime.Version()) {
		t.Errorf("first line %q, want %s ... %s", out[0], first, runtime.Version())
	}
	if !strings.Contains(r.stdout, "epoll: available") || !regexp.MustCompile(`io_uring: (available|unavailable \(.+\))`).MatchString(r.stdout) {
		t.Errorf("engine availability missing:\n%s", r.stdout)
	}
	if r := tandem(t, "", "version", "--help"); r.code != 0 || !strings.Contains(r.stdout, "tandem version") {
		t.Errorf("version --help: %+v", r)
	}
}

// serve --admin: the admin listener comes up with the instance, answers
// its probes and metrics, and goes with it.
func TestServeAdmin(t *testing.T) {
	adminAddr := freePort(t)
	cmd := exec.Command(tandemBin, "serve", "--engine", testEngine, "--listen", "127.0.0.1:0", "--data", t.TempDir(),
		"--name", "adm", "--admin", adminAddr, "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	base := "http://" + adminAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body, err := httpGet(base + "/readyz")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q %v", code, body, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	if code, body, _ := httpGet(base + "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz %d %q", code, body)
	}
	if code, body, _ := httpGet(base + "/metrics"); code != 200 || !strings.Contains(body, "tandem_messages_stored_total 0") {
		t.Errorf("/metrics %d %.300s", code, body)
	}
	if code, body, _ := httpGet(base + "/v1/stat"); code != 200 || !strings.Contains(body, `"instance":"adm"`) {
		t.Errorf("/v1/stat %d %.300s", code, body)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve exit: %v", err)
	}
	if _, _, err := httpGet(base + "/healthz"); err == nil {
		t.Errorf("admin listener still answers after the instance stopped")
	}
}

func TestServeAdminBadAddress(t *testing.T) {
	r := tandem(t, "", "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--admin", "nohost")
	if r.code == 0 || !strings.Contains(r.stderr, "admin") {
		t.Errorf("bad --admin: %+v", r)
	}
}

func httpGet(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("read %s: %w", url, err)
	}
	return resp.StatusCode, string(b), nil
}

// sub --from RFC3339: the first message stored at or after the time, then
// the rest; with --sub-id it resumes from its bookmarks afterwards; a bad
// time is a clear error.
func TestSubFromTime(t *testing.T) {
	addr := startServer(t, "cli-time")
	for _, m := range []string{"m1", "m2", "m3"} { // one pub each: three record times
		if r := tandem(t, m+"\n", "pub", "--servers", addr, "--name", "pt", "--topic", "tt"); r.code != 0 {
			t.Fatalf("pub: %+v", r)
		}
	}
	r := tandem(t, "", "sub", "--servers", addr, "--topic", "tt", "--from", "epoch", "--count", "3", "--format", "json")
	if r.code != 0 {
		t.Fatalf("sub: %+v", r)
	}
	var stamps []string
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var x struct{ Timestamp string }
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatal(err)
		}
		stamps = append(stamps, x.Timestamp)
	}
	if len(stamps) != 3 || stamps[0] == stamps[1] || stamps[1] == stamps[2] {
		t.Fatalf("record times %v: want three distinct", stamps)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "tt", "--from", stamps[1], "--count", "2")
	if r.code != 0 || r.stdout != "m2\nm3\n" {
		t.Fatalf("sub --from %s: %+v", stamps[1], r)
	}
	// A time between two records: the later one. In another zone's offset too.
	t1, _ := time.Parse(time.RFC3339Nano, stamps[0])
	between := t1.Add(time.Nanosecond).In(time.FixedZone("X", 5*3600+30*60)).Format(time.RFC3339Nano)
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "tt", "--from", between, "--count", "1")
	if r.code != 0 || r.stdout != "m2\n" {
		t.Fatalf("sub --from %s: %+v", between, r)
	}
	store := filepath.Join(t.TempDir(), "bm")
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "tt", "--from", stamps[1], "--sub-id", "s", "--bookmark-store", store, "--count", "1")
	if r.code != 0 || r.stdout != "m2\n" {
		t.Fatalf("sub --from TIME --sub-id: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "tt", "--sub-id", "s", "--bookmark-store", store, "--count", "1")
	if r.code != 0 || r.stdout != "m3\n" {
		t.Fatalf("sub --sub-id resumed after a time start: %+v", r)
	}
	for _, bad := range []string{"2026-13-45T00:00:00Z", "2026-12-04", "2026-12-04T09:30:00"} {
		r = tandem(t, "", "sub", "--servers", addr, "--topic", "tt", "--from", bad)
		if r.code != 2 || !strings.Contains(r.stderr, "RFC 3339") {
			t.Errorf("--from %s: %+v", bad, r)
		}
	}
}
