package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
)

// storeRecords returns the offsets of the records of a store file.
func storeRecords(t *testing.T, b []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(b); {
		offs = append(offs, off)
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n < 8 || off+n > len(b) {
			t.Fatalf("bad store file at %d", off)
		}
		off += n
	}
	return offs
}

// flipAt flips a bit in the body of the record at off and returns the
// file's original bytes.
func flipAt(t *testing.T, path string, off int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := bytes.Clone(b)
	c[off+8+3] ^= 0x04
	if err := os.WriteFile(path, c, 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPubStoreCorruptExitsAndRepairs(t *testing.T) {
	addr := startServer(t, "cli-store")
	path := filepath.Join(t.TempDir(), "pub.store")
	s, err := client.OpenFilePublishStore(path, client.SyncBatch, client.StoreLimits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ { // unpersisted: a publisher that died
		s.Store(uint64(i), []byte("st"), []byte("message "+strconv.Itoa(i)))
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	b, _ := os.ReadFile(path)
	offs := storeRecords(t, b)
	third := offs[len(offs)-10+2] // after the header and persisted-up-to records
	damaged := flipAt(t, path, third)

	args := []string{"pub", "--servers", addr, "--topic", "st", "--name", "cli-store-pub", "--store", path}
	r := tandem(t, "", args...)
	if r.code != 1 || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, fmt.Sprintf("offset %d", third)) {
		t.Fatalf("pub on a corrupt store: %+v; want exit 1 naming %s and offset %d", r, path, third)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, damaged) {
		t.Fatal("pub changed the corrupt store")
	}
	r = tandem(t, "", append(args, "--repair-store")...)
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("corrupt bytes at offset %d (between records with sequence 2 and 4)", third)) ||
		!strings.Contains(r.stderr, "9 unpersisted messages") {
		t.Fatalf("pub --repair-store: %+v", r)
	}
	r = tandem(t, "", "sub", "--servers", addr, "--topic", "st", "--from", "epoch", "--count", "9")
	want := ""
	for _, i := range []int{1, 2, 4, 5, 6, 7, 8, 9, 10} {
		want += "message " + strconv.Itoa(i) + "\n"
	}
	if r.code != 0 || r.stdout != want {
		t.Fatalf("re-published after the repair: %+v", r)
	}
}

func TestSubBookmarkStoreCorruptExitsAndRepairs(t *testing.T) {
	addr := startServer(t, "cli-bstore")
	path := filepath.Join(t.TempDir(), "sub.bookmarks")
	s, err := client.OpenFileBookmarkStore(path, client.SyncBatch)
	if err != nil {
		t.Fatal(err)
	}
	s.SetPosition("s", nil)
	for i := uint64(1); i <= 5; i++ {
		s.Discard(&client.Message{SubName: "s", Origin: 1, OriginSeq: i, Bookmark: record.Bookmark{Publisher: 2, PubSeq: i}})
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	b, _ := os.ReadFile(path)
	offs := storeRecords(t, b)
	bad := offs[len(offs)-4]
	damaged := flipAt(t, path, bad)

	args := []string{"sub", "--servers", addr, "--topic", "bt", "--sub-id", "s", "--bookmark-store", path, "--from", "epoch", "--count", "1"}
	r := tandem(t, "", args...)
	if r.code != 1 || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, fmt.Sprintf("offset %d", bad)) {
		t.Fatalf("sub on a corrupt bookmark store: %+v; want exit 1 naming %s and offset %d", r, path, bad)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, damaged) {
		t.Fatal("sub changed the corrupt store")
	}
	if r := tandem(t, "one\n", "pub", "--servers", addr, "--topic", "bt"); r.code != 0 {
		t.Fatalf("pub: %+v", r)
	}
	r = tandem(t, "", append(args, "--repair-store")...)
	if r.code != 0 || r.stdout != "one\n" || !strings.Contains(r.stderr, fmt.Sprintf("corrupt bytes at offset %d", bad)) {
		t.Fatalf("sub --repair-store: %+v", r)
	}
}

// TestSubLateMessagesAfterSplitBrain is issue 11 item 1's reproduction with
// processes: A acknowledges 1..100 alone while B is down, B acknowledges
// 101..150 alone while A is down, the pair converges (B now holds 101..150
// before 1..100); `sub --sub-id fresh --bookmark-store F --from epoch` on
// B must print all 150, and a second run with the same id nothing more.
func TestSubLateMessagesAfterSplitBrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	dir := t.TempDir()
	replA, replB := freePort(t), freePort(t)
	addrA, addrB := freePort(t), freePort(t)
	serveArgs := func(name, repl, peer string) []string {
		return []string{"serve", "--engine", testEngine, "--listen", map[string]string{"A": addrA, "B": addrB}[name],
			"--data", filepath.Join(dir, name), "--name", name, "--segment-size", strconv.Itoa(8 << 20),
			"--loops", "1", "--repl-listen", repl, "--repl-secret", "s3cret", "--repl-heartbeat", "50ms",
			"--repl-downgrade-after", "10s", "--repl-upgrade-below", "50ms", "--peer", peer}
	}
	startB := func() *serverProc { return startServe(t, addrB, serveArgs("B", replB, "A")...) }
	startA := func() *serverProc { return startServe(t, addrA, serveArgs("A", replA, "B="+replB+",sync")...) }
	b := startB()
	a := startA()
	t.Cleanup(func() { a.kill(t); b.kill(t) })
	waitPairSync(t, addrA, addrB)

	store := filepath.Join(dir, "pub.store") // carries the publisher sequence across runs
	pub := func(addr string, from, to int) {
		t.Helper()
		var in strings.Builder
		for i := from; i <= to; i++ {
			fmt.Fprintf(&in, "%d\n", i)
		}
		r := tandem(t, in.String(), "pub", "--servers", addr, "--name", "late-pub", "--topic", "late.t", "--store", store, "--retry-for", "10s")
		if r.code != 0 {
			t.Fatalf("pub %d..%d on %s: %+v", from, to, addr, r)
		}
	}
	b.kill(t)
	pub(addrA, 1, 100)
	b = startB()
	waitLogon(t, addrB)
	a.kill(t)
	pub(addrB, 101, 150)
	a = startA()
	waitLogon(t, addrA)
	waitLogon(t, addrB)
	waitPairSync(t, addrA, addrB)
	deadline := time.Now().Add(15 * time.Second)
	for storedOn(t, addrA) != 150 || storedOn(t, addrB) != 150 {
		if time.Now().After(deadline) {
			t.Fatalf("not converged: A holds %d, B %d", storedOn(t, addrA), storedOn(t, addrB))
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}

	bm := filepath.Join(dir, "sub.bookmarks")
	args := []string{"sub", "--servers", addrB, "--topic", "late.t", "--sub-id", "fresh", "--bookmark-store", bm}
	r := tandem(t, "", append(args, "--from", "epoch", "--count", "150", "--idle", "3s")...)
	got := strings.Fields(r.stdout)
	nums := make([]int, 0, len(got))
	for _, g := range got {
		n, _ := strconv.Atoi(g)
		nums = append(nums, n)
	}
	slices.Sort(nums)
	want := make([]int, 150)
	for i := range want {
		want[i] = i + 1
	}
	if r.code != 0 || !slices.Equal(nums, want) {
		t.Fatalf("sub --sub-id fresh --from epoch on B printed %d lines, want 1..150 once each: %+v", len(got), r)
	}
	pub(addrB, 151, 151)
	r = tandem(t, "", append(args, "--count", "1", "--idle", "3s")...)
	if r.code != 0 || r.stdout != "151\n" {
		t.Fatalf("resumed sub: %+v, want only 151", r)
	}
}

// waitLogon waits until a (re)started server accepts a logon: one that has
// just started may still refuse connections.
func waitLogon(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := client.Connect(ctx, addr, client.WithName(fmt.Sprintf("logon-check-%d", time.Now().UnixNano())))
		cancel()
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s refuses logons: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}
