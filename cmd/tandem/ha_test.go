package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/internal/testnet"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// TestHAPipelineSurvivesKills runs a hot-hot pair of `tandem serve`
// processes, `tandem pub --store` fed line by line, and `tandem sub --sub-id
// --bookmark-store --from recent`, and, at kill points chosen at random
// (TANDEM_SEED replays them):
//
//  1. kill -9 instance A, which both clients are on, mid-stream: both fail
//     over to B;
//  2. kill -9 the subscriber and restart it with the same --sub-id and
//     store: it resumes exactly after the last message it processed (the
//     progress its bookmark store holds), and nothing printed before was
//     processed out of order;
//  3. kill -9 the publisher and restart it on its store with no input: it
//     re-publishes what was not persisted, once; B stores every pubseq
//     exactly once (the server drops what was sent twice);
//  4. restart A: it catches up.
//
// Together the two subscriber runs print every message 1..K exactly once
// in order (cutting the first run's output at its recorded progress).
// TANDEM_HA_MESSAGES sets the stream length (default 100000).
func TestHAPipelineSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server and client processes")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	n := 100000
	if s := os.Getenv("TANDEM_HA_MESSAGES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	rng := rand.New(rand.NewPCG(seed, 4))
	killA := n/10 + rng.IntN(n/5)
	killSub := killA + n/10 + rng.IntN(n/5)
	killPub := killSub + n/10 + rng.IntN(n/5)
	t.Logf("seed %d (replay with TANDEM_SEED=%d): %d lines; kill A at %d, the subscriber at %d, the publisher at %d",
		seed, seed, n, killA, killSub, killPub)

	dir := t.TempDir()
	replA, replB := freePort(t), freePort(t)
	b := startPairProc(t, "B", filepath.Join(dir, "b"), replB, "--peer", "A")
	a := startPairProc(t, "A", filepath.Join(dir, "a"), replA, "--peer", "B="+replB+",sync")
	waitPairSync(t, a.addr, b.addr)
	servers := a.addr + "," + b.addr

	bmFile := filepath.Join(dir, "sub.bookmarks")
	storeFile := filepath.Join(dir, "pub.store")
	subArgs := []string{"sub", "--servers", servers, "--name", "ha-sub", "--topic", "ha.t", "--sub-id", "s1",
		"--bookmark-store", bmFile, "--from", "recent", "--heartbeat", "100ms"}
	pubArgs := []string{"pub", "--servers", servers, "--name", "ha-pub", "--topic", "ha.t", "--store", storeFile,
		"--store-sync", "none", "--heartbeat", "100ms"}

	out1 := filepath.Join(dir, "out1")
	s1 := startClientProc(t, out1, nil, subArgs...)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p1 := startClientProc(t, filepath.Join(dir, "pub1.out"), pr, pubArgs...)
	pr.Close()

	// Feed the publisher; the kill points are counted in lines written.
	w := bufio.NewWriterSize(pw, 4096)
	var s2 *clientProc
	out2 := filepath.Join(dir, "out2")
	var discarded uint64
	for i := 1; i <= killPub; i++ {
		fmt.Fprintf(w, "%d\n", i)
		if i%500 == 0 { // pace the stream: ~250k lines/s
			w.Flush()
			time.Sleep(2 * time.Millisecond)
		}
		switch i {
		case killA:
			w.Flush()
			time.Sleep(20 * time.Millisecond) // let the line reach the wire
			a.kill(t)
		case killSub:
			w.Flush()
			s1.kill(t)
			discarded = subProgress(t, bmFile)
			s2 = startClientProc(t, out2, nil, subArgs...)
		}
	}
	w.Flush()
	time.Sleep(20 * time.Millisecond)
	p1.kill(t)
	pw.Close()
	before := storeState(t, storeFile)
	t.Logf("publisher killed with %d unpersisted messages in its store (last pubseq %d)", before.unpersisted, before.last)

	// Restart the publisher on its store, with no input.
	p2 := startClientProc(t, filepath.Join(dir, "pub2.out"), strings.NewReader(""), pubArgs...)
	if code := p2.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("restarted publisher exited %d:\n%s", code, p2.stderr.String())
	}
	for _, c := range []*clientProc{s1, p1} {
		if !strings.Contains(c.stderr.String(), "failed over from "+a.addr+" to "+b.addr) {
			t.Fatalf("%v did not fail over from A to B:\n%s", c.cmd.Args[:2], c.stderr.String())
		}
	}
	after := storeState(t, storeFile)
	if after.unpersisted != 0 || after.last != before.last {
		t.Fatalf("after the restarted publisher: %d unpersisted, last %d (before: last %d)", after.unpersisted, after.last, before.last)
	}
	k := after.last
	t.Logf("restarted publisher: %s", strings.TrimSpace(p2.stderr.String()))

	// B holds pubseq 1..k exactly once.
	checkStored(t, b.addr, k)

	// The resumed subscriber prints discarded+1..k.
	waitLines(t, out2, int(k-discarded), 60*time.Second, s2)
	s2.kill(t)
	first := readLines(t, out1)
	second := readLines(t, out2)
	if uint64(len(first)) < discarded {
		t.Fatalf("the first subscriber recorded progress %d but printed only %d lines", discarded, len(first))
	}
	for i, l := range first {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("first subscriber line %d is %q", i+1, l)
		}
	}
	for i, l := range second {
		if l != strconv.FormatUint(discarded+uint64(i)+1, 10) {
			t.Fatalf("resumed subscriber line %d is %q, want %d (resumed after %d)", i+1, l, discarded+uint64(i)+1, discarded)
		}
	}
	if uint64(len(second)) != k-discarded {
		t.Fatalf("resumed subscriber printed %d lines, want %d", len(second), k-discarded)
	}
	t.Logf("subscriber killed after printing %d lines with progress %d recorded; resumed at %d; %d messages in all",
		len(first), discarded, discarded+1, k)

	// A comes back and catches up.
	a = startPairProc(t, "A", filepath.Join(dir, "a"), replA, "--peer", "B="+replB+",sync")
	deadline := time.Now().Add(30 * time.Second)
	for storedOn(t, a.addr) != k {
		if time.Now().After(deadline) {
			t.Fatalf("restarted A holds %d of %d messages", storedOn(t, a.addr), k)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	checkStored(t, a.addr, k)
}

func freePort(t *testing.T) string {
	t.Helper()
	return testnet.FreeAddr(t)
}

// startPairProc starts `tandem serve` as one instance of a pair.
func startPairProc(t *testing.T, name, dir, repl string, extra ...string) *serverProc {
	t.Helper()
	addr := freePort(t)
	args := append([]string{"serve", "--engine", testEngine, "--listen", addr, "--data", dir, "--name", name, "--segment-size", strconv.Itoa(8 << 20),
		"--loops", "1", "--repl-listen", repl, "--repl-secret", "s3cret", "--repl-heartbeat", "50ms",
		"--repl-downgrade-after", "10s", "--repl-upgrade-below", "50ms"}, extra...)
	return startServe(t, addr, args...)
}

func stats(t *testing.T, addr string) *wire.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addr, client.WithName(fmt.Sprintf("ha-test-%d", time.Now().UnixNano())))
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	defer c.Close()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func storedOn(t *testing.T, addr string) uint64 { return stats(t, addr).Stored }

func waitPairSync(t *testing.T, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, a := range addrs {
			st := stats(t, a)
			if len(st.Replication) == 0 || st.Replication[0].State != "sync" {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("pair not in sync after 15s")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// checkStored checks that addr holds ha-pub's pubseq 1..k exactly once,
// each with its line as payload.
func checkStored(t *testing.T, addr string, k uint64) {
	t.Helper()
	if st := storedOn(t, addr); st != k {
		t.Fatalf("%s stores %d messages, want %d", addr, st, k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addr, client.WithName("ha-check"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	next := uint64(1)
	done := make(chan error, 1)
	pub := record.ID("ha-pub")
	_, err = c.Subscribe(ctx, "ha.t", client.From(client.Epoch), client.WithHandler(func(m *client.Message) {
		if next == 0 {
			return
		}
		if m.Bookmark.Publisher != pub || m.Bookmark.PubSeq != next || string(m.Payload) != strconv.FormatUint(next, 10) {
			done <- fmt.Errorf("message %d: pubseq %d payload %q", next, m.Bookmark.PubSeq, m.Payload)
			next = 0
			return
		}
		if next == k {
			done <- nil
		}
		next++
	}))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
	case <-ctx.Done():
		t.Fatalf("%s: epoch replay stalled at %d of %d", addr, next, k)
	}
}

type storeInfo struct {
	unpersisted int
	last        uint64
}

func storeState(t *testing.T, path string) storeInfo {
	t.Helper()
	s, err := client.OpenFilePublishStore(path, client.SyncNone, client.StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return storeInfo{s.UnpersistedCount(), s.LastSeq()}
}

// subProgress returns the publisher progress recorded for ha-pub in the
// bookmark store.
func subProgress(t *testing.T, path string) uint64 {
	t.Helper()
	s, err := client.OpenFileBookmarkStore(path, client.SyncNone)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entries, _ := s.MostRecent("s1")
	for _, e := range entries {
		if e.Kind == wire.ResumePublisher && e.ID == record.ID("ha-pub") {
			return e.Seq
		}
	}
	return 0
}

// clientProc is a `tandem pub` or `tandem sub` process.
type clientProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	exited chan struct{}
	out    *os.File
}

func startClientProc(t *testing.T, outFile string, stdin io.Reader, args ...string) *clientProc {
	t.Helper()
	f, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	p := &clientProc{stderr: &lockedBuffer{}, exited: make(chan struct{}), out: f}
	p.cmd = exec.Command(tandemBin, args...)
	p.cmd.Stdout = f
	p.cmd.Stderr = p.stderr
	p.cmd.Stdin = stdin
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(t) })
	return p
}

func (p *clientProc) kill(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("client process did not die within 10s of SIGKILL")
	}
}

func (p *clientProc) wait(t *testing.T, d time.Duration) int {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.kill(t)
		t.Fatalf("%v did not finish in %v:\n%s", p.cmd.Args, d, p.stderr.String())
	}
	return -1
}

func readLines(t *testing.T, path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func waitLines(t *testing.T, path string, n int, d time.Duration, p *clientProc) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if got := len(readLines(t, path)); got >= n {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("subscriber exited with %d of %d lines:\n%s", len(readLines(t, path)), n, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber printed %d of %d lines in %v:\n%s", len(readLines(t, path)), n, d, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}
