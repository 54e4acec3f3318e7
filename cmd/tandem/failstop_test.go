package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/wire"
)

// smallTmpfs mounts a tmpfs of size bytes on a new directory, unmounted at
// the end of the test. It skips the test when not root or when mounting
// fails.
func smallTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a disk that fills up)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// waitExit waits up to d for the server process to exit and returns its
// exit status.
func (p *serverProc) waitExit(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("server still running %v later:\n%s", d, p.log())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("server: %v", p.err)
	}
	return 0
}

// TestServeExitsThreeWhenItsDiskFills: a serve whose journal fails (its
// data directory is on a 3 MiB tmpfs that fills up) tells the connected
// publisher storage-failed naming the cause, and exits with status 3 with
// the cause in its log. A serve on a disk that cannot hold two segments
// refuses to start.
func TestServeExitsThreeWhenItsDiskFills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	mnt := smallTmpfs(t, 3<<20)
	dir := filepath.Join(mnt, "data")

	code, stderr := runServeToExit(t, 10*time.Second, "--engine", testEngine, "--listen", freeAddr(t), "--data", dir,
		"--segment-size", strconv.Itoa(2<<20))
	if code != 1 || !strings.Contains(stderr, "not enough free space") || !strings.Contains(stderr, dir) {
		t.Fatalf("serve with two 2 MiB segments on a 3 MiB disk: exit %d:\n%s", code, stderr)
	}

	addr := freeAddr(t)
	srv := startServe(t, addr, "serve", "--engine", testEngine, "--listen", addr, "--data", dir, "--name", "full",
		"--segment-size", strconv.Itoa(1<<20))
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addr, client.WithName("filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 200)
	var pubErr error
	for seq := 1; pubErr == nil; seq++ {
		_, pubErr = c.Publish(ctx, "fill", payload)
		if seq > 1000000 {
			t.Fatal("a million publishes on a 3 MiB disk and no error")
		}
	}
	var se *client.ServerError
	if !errors.As(pubErr, &se) || se.Code != wire.CodeStorageFailed || !strings.Contains(se.Text, "no space left on device") {
		t.Fatalf("publisher's error %v: want storage-failed naming ENOSPC", pubErr)
	}
	if code := srv.waitExit(t, 30*time.Second); code != 3 {
		t.Fatalf("serve exited %d after its disk filled, want 3:\n%s", code, srv.log())
	}
	if log := srv.log(); !strings.Contains(log, "storage failed") || !strings.Contains(log, "no space left on device") {
		t.Fatalf("serve's log does not name the cause:\n%s", log)
	}
}

// TestHAPublisherSurvivesFullDisk: a sync pair where A's data directory is
// on a tiny tmpfs. An HA publisher (`tandem pub --servers A,B --store`)
// publishes until A's disk fills; it is told storage-failed; A exits 3
// with the cause in its log; the publisher finishes through B; B holds
// every message exactly once.
func TestHAPublisherSurvivesFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server and client processes")
	}
	mnt := smallTmpfs(t, 3<<20) // two 1 MiB segments fit, a third does not
	dir := t.TempDir()
	replA, replB := freePort(t), freePort(t)
	seg := []string{"--segment-size", strconv.Itoa(1 << 20)}
	b := startPairProc(t, "B", filepath.Join(dir, "b"), replB, append(seg, "--peer", "A")...)
	a := startPairProc(t, "A", filepath.Join(mnt, "a"), replA, append(seg, "--peer", "B="+replB+",sync")...)
	waitPairSync(t, a.addr, b.addr)

	const n = 60000 // about twice what A's two segments hold
	var lines strings.Builder
	for i := 1; i <= n; i++ {
		lines.WriteString(strconv.Itoa(i))
		lines.WriteByte('\n')
	}
	storeFile := filepath.Join(dir, "pub.store")
	pub := startClientProc(t, filepath.Join(dir, "pub.out"), strings.NewReader(lines.String()),
		"pub", "--servers", a.addr+","+b.addr, "--name", "ha-pub", "--topic", "ha.t", "--store", storeFile,
		"--store-sync", "none", "--heartbeat", "100ms")
	if code := a.waitExit(t, 60*time.Second); code != 3 {
		t.Fatalf("A exited %d, want 3:\n%s", code, a.log())
	}
	if log := a.log(); !strings.Contains(log, "storage failed") || !strings.Contains(log, "no space left on device") {
		t.Fatalf("A's log does not name the cause:\n%s", log)
	}
	if code := pub.wait(t, 120*time.Second); code != 0 {
		t.Fatalf("publisher exited %d:\n%s", code, pub.stderr.String())
	}
	if !strings.Contains(pub.stderr.String(), "failed over from "+a.addr+" to "+b.addr) {
		t.Fatalf("the publisher did not fail over from A to B:\n%s", pub.stderr.String())
	}
	// The publisher learnt why (the Error frame is not lost to a reset
	// while it was still sending).
	if !strings.Contains(pub.stderr.String(), "storage-failed") {
		t.Errorf("the publisher was not told storage-failed:\n%s", pub.stderr.String())
	}
	if st := storeState(t, storeFile); st.unpersisted != 0 || st.last != n {
		t.Fatalf("publish store: %d unpersisted, last %d; want 0 and %d", st.unpersisted, st.last, n)
	}
	checkStored(t, b.addr, n)
	t.Logf("publisher: %s", strings.TrimSpace(pub.stderr.String()))
}

// TestOnStorageFailureConfig: the TOML key and the flag set the mode
// (exit by default); anything else is refused.
func TestOnStorageFailureConfig(t *testing.T) {
	ec, err := loadAsServe(t, writeConfig(t, "data = \"d\"\n"))
	if err != nil || ec.OnStorageFailure != "exit" {
		t.Fatalf("default: %q, %v", ec.OnStorageFailure, err)
	}
	ec, err = loadAsServe(t, writeConfig(t, "on-storage-failure = \"stay\"\n"))
	if err != nil || ec.OnStorageFailure != "stay" {
		t.Fatalf("TOML stay: %q, %v", ec.OnStorageFailure, err)
	}
	ec, err = loadAsServe(t, writeConfig(t, "on-storage-failure = \"stay\"\n"), "--on-storage-failure", "exit")
	if err != nil || ec.OnStorageFailure != "exit" {
		t.Fatalf("flag over TOML: %q, %v", ec.OnStorageFailure, err)
	}
	if _, err := loadAsServe(t, writeConfig(t, "on-storage-failure = \"retry\"\n")); err == nil || !strings.Contains(err.Error(), "on-storage-failure") {
		t.Fatalf("bad value: %v", err)
	}
}

// TestServeStayAnswersOnlyStat: with --on-storage-failure stay, a serve
// whose disk filled stays up: `tandem stat` shows `storage  failed: ...`
// and other clients are refused with storage-failed; SIGTERM then ends it
// with status 3.
func TestServeStayAnswersOnlyStat(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	mnt := smallTmpfs(t, 3<<20)
	addr := freeAddr(t)
	srv := startServe(t, addr, "serve", "--engine", testEngine, "--listen", addr, "--data", filepath.Join(mnt, "data"),
		"--name", "stay", "--segment-size", strconv.Itoa(1<<20), "--on-storage-failure", "stay")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addr, client.WithName("filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 200)
	for seq := 1; ; seq++ {
		if _, err := c.Publish(ctx, "fill", payload); err != nil {
			break
		}
		if seq > 1000000 {
			t.Fatal("a million publishes on a 3 MiB disk and no error")
		}
	}
	r := tandem(t, "", "stat", "--server", addr)
	if r.code != 0 || !regexpMatch(`storage\s+failed: .*no space left on device`, r.stdout) ||
		!regexpMatch(`segment preallocation failures\s+[1-9]`, r.stdout) {
		t.Fatalf("stat after the failure: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	_, err = client.Connect(ctx, addr, client.WithName("late"))
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != wire.CodeStorageFailed {
		t.Fatalf("logon after the failure: %v", err)
	}
	select {
	case <-srv.exited:
		t.Fatalf("serve exited in stay mode (%v):\n%s", srv.err, srv.log())
	default:
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := srv.waitExit(t, 15*time.Second); code != 3 {
		t.Fatalf("serve in stay mode exited %d after SIGTERM, want 3 (storage failed):\n%s", code, srv.log())
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
