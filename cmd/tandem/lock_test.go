package main

import (
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/internal/testnet"
)

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	return testnet.FreeAddr(t)
}

// runServeToExit runs `tandem serve args...`, which must exit within
// limit; it returns the exit code and the process's standard error.
func runServeToExit(t *testing.T, limit time.Duration, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(tandemBin, append([]string{"serve"}, args...)...)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stderr.String()
		}
		if err != nil {
			t.Fatalf("serve %v: %v", args, err)
		}
		return 0, stderr.String()
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("serve %v still running after %v (it should have refused at once):\n%s", args, limit, stderr.String())
		return 0, ""
	}
}

// TestSecondServeOnOneDataDirRefused: a data directory belongs to one
// process. A second `serve` on the same --data (another port, another
// name) exits non-zero at once naming the directory and the holder (host,
// pid, name); once the holder is killed with SIGKILL, the kernel has
// dropped its lock and a new instance starts on the directory.
func TestSecondServeOnOneDataDirRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	dir := t.TempDir()
	addrA := freeAddr(t)
	a := startServe(t, addrA, "serve", "--engine", testEngine, "--listen", addrA, "--data", dir, "--name", "lock-a")

	start := time.Now()
	code, stderr := runServeToExit(t, 10*time.Second, "--engine", testEngine, "--listen", freeAddr(t), "--data", dir, "--name", "lock-b")
	took := time.Since(start)
	if code == 0 {
		t.Fatalf("second serve on %s exited 0:\n%s", dir, stderr)
	}
	pid := strconv.Itoa(a.cmd.Process.Pid)
	for _, want := range []string{dir, "lock-a", "pid " + pid} {
		if !strings.Contains(stderr, want) {
			t.Errorf("second serve's error does not name %q:\n%s", want, stderr)
		}
	}
	t.Logf("second serve refused in %v with exit %d: %s", took.Round(time.Millisecond), code, strings.TrimSpace(stderr))

	a.kill(t)
	addrC := freeAddr(t)
	c := startServe(t, addrC, "serve", "--engine", testEngine, "--listen", addrC, "--data", dir, "--name", "lock-c")
	c.terminate(t)
}
