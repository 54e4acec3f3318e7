package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/wire"
)

// TestSharedStoreMountRefusal reads mountinfo fixtures: an NFS mount with
// nolock, local_lock=posix or local_lock=all under the data directory is
// refused naming the option; NFS with its locks on the server, a local
// file system, and an NFS mount that is not the one holding the directory
// (a longer mount point wins) are accepted.
func TestSharedStoreMountRefusal(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "shared", "data") // does not exist yet: judged by its parent
	if err := os.MkdirAll(filepath.Join(base, "shared"), 0o700); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(base)
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(real, "shared")
	esc := strings.ReplaceAll(shared, " ", `\040`)
	root := "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	for _, tc := range []struct {
		name, table, refuse string // refuse: "" = accepted, else the option named
	}{
		{"local", root, ""},
		{"nfs4 default", root + "40 22 0:50 / " + esc + " rw,relatime shared:9 - nfs4 filer:/vol rw,vers=4.2,hard,proto=tcp,local_lock=none\n", ""},
		{"nfs nolock", root + "40 22 0:50 / " + esc + " rw,relatime - nfs filer:/vol rw,vers=3,nolock,proto=tcp\n", "nolock"},
		{"nfs local_lock=all", root + "40 22 0:50 / " + esc + " rw - nfs filer:/vol rw,vers=3,local_lock=all\n", "local_lock=all"},
		{"nfs local_lock=posix", root + "40 22 0:50 / " + esc + " rw - nfs4 filer:/vol rw,local_lock=posix\n", "local_lock=posix"},
		{"nfs local_lock=flock", root + "40 22 0:50 / " + esc + " rw - nfs4 filer:/vol rw,local_lock=flock\n", ""},
		// nolock on a parent NFS mount, a local file system mounted below it
		// holds the directory.
		{"nested local", root + "40 22 0:50 / " + real + " rw - nfs filer:/vol rw,nolock\n" +
			"41 40 8:2 / " + esc + " rw - xfs /dev/sdb1 rw\n", ""},
		// a sibling whose name merely starts like the directory's
		{"prefix sibling", root + "40 22 0:50 / " + esc + "-other rw - nfs filer:/vol rw,nolock\n", ""},
	} {
		f := filepath.Join(t.TempDir(), "mountinfo")
		if err := os.WriteFile(f, []byte(tc.table), 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkSharedStoreMount(data, f)
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.refuse != "" && (!errors.Is(err, errSharedStoreRefused) || !strings.Contains(err.Error(), "with option "+tc.refuse)):
			t.Errorf("%s: %v, want a refusal naming %s", tc.name, err, tc.refuse)
		}
	}
	if _, err := os.Stat(data); err == nil {
		t.Error("the check created the data directory")
	}
}

// TestSharedStoreConfigRefusals: --shared-store refuses on-storage-failure
// stay (the lock would never pass) and a missing --name (status 2); a
// process with another --name than the directory's instance is refused
// naming both (status 1).
func TestSharedStoreConfigRefusals(t *testing.T) {
	dir := t.TempDir()
	code, stderr := runServeToExit(t, 10*time.Second, "--shared-store", "--on-storage-failure", "stay", "--name", "s", "--data", dir, "--listen", freeAddr(t))
	if code != 2 || !strings.Contains(stderr, "shared-store with on-storage-failure stay") {
		t.Fatalf("stay: exit %d\n%s", code, stderr)
	}
	code, stderr = runServeToExit(t, 10*time.Second, "--shared-store", "--data", dir, "--listen", freeAddr(t))
	if code != 2 || !strings.Contains(stderr, "shared-store needs --name") {
		t.Fatalf("no name: exit %d\n%s", code, stderr)
	}
	code, stderr = runServeToExit(t, 10*time.Second, "--shared-store-stall-limit", "1s", "--data", dir, "--listen", freeAddr(t))
	if code != 2 || !strings.Contains(stderr, "without shared-store") {
		t.Fatalf("stall limit alone: exit %d\n%s", code, stderr)
	}
	addr := freeAddr(t)
	a := startServe(t, addr, sharedArgs(dir, addr, "shared")...)
	code, stderr = runServeToExit(t, 10*time.Second, sharedArgs(dir, freeAddr(t), "other")[1:]...)
	if code != 1 || !strings.Contains(stderr, `belongs to instance "shared"`) || !strings.Contains(stderr, `not "other"`) {
		t.Fatalf("other name while active: exit %d\n%s", code, stderr)
	}
	a.terminate(t)
	// The directory keeps its identity with nobody running on it.
	code, stderr = runServeToExit(t, 10*time.Second, sharedArgs(dir, freeAddr(t), "other")[1:]...)
	if code != 1 || !strings.Contains(stderr, `belongs to instance "shared"`) {
		t.Fatalf("other name on an idle directory: exit %d\n%s", code, stderr)
	}
}

// TestSharedStoreConfigKeys: shared-store and shared-store-stall-limit are
// TOML keys; the stall limit reaches the engine (default 5s with
// shared-store, none without it), a flag overriding the file.
func TestSharedStoreConfigKeys(t *testing.T) {
	ec, err := loadAsServe(t, writeConfig(t, "shared-store = true\nname = \"s\"\n"))
	if err != nil || ec.StallLimit != defaultStallLimit {
		t.Fatalf("shared-store: stall limit %v, %v", ec.StallLimit, err)
	}
	file := writeConfig(t, "shared-store = true\nname = \"s\"\nshared-store-stall-limit = \"2s\"\n")
	if ec, err := loadAsServe(t, file); err != nil || ec.StallLimit != 2*time.Second {
		t.Fatalf("shared-store-stall-limit 2s: %v, %v", ec.StallLimit, err)
	}
	if ec, err := loadAsServe(t, file, "--shared-store-stall-limit", "750ms"); err != nil || ec.StallLimit != 750*time.Millisecond {
		t.Fatalf("flag over file: %v, %v", ec.StallLimit, err)
	}
	if ec, err := loadAsServe(t, writeConfig(t, "name = \"s\"\n")); err != nil || ec.StallLimit != 0 {
		t.Fatalf("without shared-store: stall limit %v, %v", ec.StallLimit, err)
	}
	if _, err := loadAsServe(t, writeConfig(t, "shared-store = true\nname = \"s\"\nshared-store-stall-limit = \"-1s\"\n")); err == nil ||
		!strings.Contains(err.Error(), "negative") {
		t.Fatalf("negative stall limit: %v", err)
	}
}

func sharedArgs(dir, addr, name string, extra ...string) []string {
	return append([]string{"serve", "--engine", testEngine, "--shared-store", "--listen", addr, "--data", dir, "--name", name,
		"--segment-size", strconv.Itoa(8 << 20), "--loops", "1"}, extra...)
}

// sharedState logs on as `tandem stat` does and returns the stats: State
// "standby" from a passive, "" from the active.
func sharedState(t *testing.T, addr string) (*wire.Stats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addr, client.WithName(fmt.Sprintf("tandem-stat-test-%d", time.Now().UnixNano())))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Stats(ctx)
}

// waitActive waits until addr is served by the real engine (a stat
// document without state standby).
func waitActive(t *testing.T, addr string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		st, err := sharedState(t, addr)
		if err == nil && st.State == "" {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s not active after %v (last: %+v, %v)", addr, d, st, err)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
	}
}

// openDataFiles lists the files of dir (other than LOCK) process pid has
// open.
func openDataFiles(t *testing.T, pid int, dir string) []string {
	t.Helper()
	real, _ := filepath.EvalSymlinks(dir)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list open files of %d: %v", pid, err)
	}
	var open []string
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		if strings.HasPrefix(target, real+"/") && filepath.Base(target) != "LOCK" {
			open = append(open, target)
		}
	}
	return open
}

// TestSharedStoreStandbyThenTakeover: a second process on the directory is
// a passive: a client's logon gets Error standby naming the active's host
// and pid, stat says standby, and it holds no journal file open while the
// active lives. After kill -9 of the active it takes over with every
// acknowledged message.
func TestSharedStoreStandbyThenTakeover(t *testing.T) {
	dir := t.TempDir()
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startServe(t, addrA, sharedArgs(dir, addrA, "shared")...)
	b := startServe(t, addrB, sharedArgs(dir, addrB, "shared")...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	host, _ := os.Hostname()
	_, err := client.Connect(ctx, addrB, client.WithName("app"))
	want := fmt.Sprintf("standby: active is %s pid %d", host, a.cmd.Process.Pid)
	if !errors.Is(err, client.ErrStandby) || !strings.Contains(err.Error(), want) {
		t.Fatalf("logon at the passive: %v, want ErrStandby with %q", err, want)
	}
	st, err := sharedState(t, addrB)
	if err != nil || st.State != "standby" || st.Instance != "shared" || !strings.HasSuffix(want, st.Active) {
		t.Fatalf("passive stats %+v, %v", st, err)
	}

	c, err := client.Connect(ctx, addrA, client.WithName("pub"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := 1; i <= n; i++ {
		if _, err := c.Publish(ctx, "t", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if open := openDataFiles(t, b.cmd.Process.Pid, dir); len(open) > 0 {
		t.Fatalf("the passive holds journal files open: %v", open)
	}
	if open := openDataFiles(t, a.cmd.Process.Pid, dir); len(open) == 0 {
		t.Fatal("the active holds no journal file open: the check above proves nothing")
	}
	c.Close()
	a.kill(t)
	took := waitActive(t, addrB, 15*time.Second)
	t.Logf("takeover in %v", took)
	if st := stats(t, addrB); st.Stored != n {
		t.Fatalf("after takeover %d messages stored, want %d", st.Stored, n)
	}
	if !strings.Contains(b.log(), "taking over") {
		t.Fatalf("passive log:\n%s", b.log())
	}
}

// TestSharedStoreTakeoverKills: two processes on one directory, an HA
// publisher (`tandem pub --store`) and an HA subscriber (`tandem sub
// --bookmark-store`) given both addresses. The active is killed with
// SIGKILL mid-stream again and again (kill points seeded: TANDEM_SEED
// replays them; TANDEM_SHARED_KILLS sets the count, default 6), the dead
// one restarted as the new passive each time, so the roles alternate;
// finally both are down at once while the publisher goes on (a durable
// connection: its file store buffers), then one comes back. The
// subscriber prints every message exactly once in order and the
// publisher's store ends with nothing unpersisted.
func TestSharedStoreTakeoverKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server and client processes")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	kills := 6
	if s := os.Getenv("TANDEM_SHARED_KILLS"); s != "" {
		kills, _ = strconv.Atoi(s)
	}
	rng := rand.New(rand.NewPCG(seed, 16))
	per := 6000
	t.Logf("seed %d (replay with TANDEM_SEED=%d): %d kills", seed, seed, kills)

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addrs := [2]string{freeAddr(t), freeAddr(t)}
	var procs [2]*serverProc
	procs[0] = startServe(t, addrs[0], sharedArgs(data, addrs[0], "shared")...)
	procs[1] = startServe(t, addrs[1], sharedArgs(data, addrs[1], "shared")...)
	active := 0
	servers := addrs[0] + "," + addrs[1]

	bmFile := filepath.Join(dir, "sub.bookmarks")
	storeFile := filepath.Join(dir, "pub.store")
	out := filepath.Join(dir, "out")
	sub := startClientProc(t, out, nil, "sub", "--servers", servers, "--name", "ha-sub", "--topic", "ha.t", "--sub-id", "s1",
		"--bookmark-store", bmFile, "--from", "recent", "--heartbeat", "100ms")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pub := startClientProc(t, filepath.Join(dir, "pub.out"), pr, "pub", "--servers", servers, "--name", "ha-pub", "--topic", "ha.t",
		"--store", storeFile, "--store-sync", "none", "--heartbeat", "100ms")
	pr.Close()
	w := bufio.NewWriterSize(pw, 4096)
	line := 0
	feed := func(k int) {
		for i := 0; i < k; i++ {
			line++
			fmt.Fprintf(w, "%d\n", line)
			if line%500 == 0 {
				w.Flush()
				time.Sleep(2 * time.Millisecond) // pace the stream
			}
		}
		w.Flush()
	}
	var takeovers []time.Duration
	for k := 0; k < kills; k++ {
		feed(per/2 + rng.IntN(per))
		procs[active].kill(t)
		passive := 1 - active
		takeovers = append(takeovers, waitActive(t, addrs[passive], 15*time.Second))
		// The dead one comes back as the new passive.
		procs[active] = startServe(t, addrs[active], sharedArgs(data, addrs[active], "shared")...)
		if st, err := sharedState(t, addrs[active]); err != nil || st.State != "standby" {
			t.Fatalf("restarted process: %+v, %v", st, err)
		}
		active = passive
	}
	t.Logf("takeovers (kill to serving): %v", takeovers)
	// Both down: the publisher keeps what it is given in its store (a
	// durable connection) while no server is up.
	procs[0].kill(t)
	procs[1].kill(t)
	feed(per / 2)
	time.Sleep(time.Second) // the outage itself: both stay down a while (not a synchronisation)
	procs[active] = startServe(t, addrs[active], sharedArgs(data, addrs[active], "shared")...)
	waitActive(t, addrs[active], 15*time.Second)
	feed(per / 4)
	pw.Close()
	if code := pub.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("publisher exited %d:\n%s", code, pub.stderr.String())
	}
	after := storeState(t, storeFile)
	if after.unpersisted != 0 || after.last != uint64(line) {
		t.Fatalf("publisher store: %d unpersisted, last %d, want 0 and %d", after.unpersisted, after.last, line)
	}
	checkStored(t, addrs[active], uint64(line))
	waitLines(t, out, line, 60*time.Second, sub)
	sub.kill(t)
	got := readLines(t, out)
	for i, l := range got {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("subscriber line %d is %q (seed %d)", i+1, l, seed)
		}
	}
	if len(got) != line {
		t.Fatalf("subscriber printed %d lines, want %d", len(got), line)
	}
}

// TestSharedStoreReplicationAcrossTakeover: a shared-store instance S
// (two processes on one directory, each with its own --repl-listen)
// replicates with a peer P that lists both of S's replication addresses
// (--peer S=R1|R2; S accepts only, so every link is P's dial). After kill -9 of S's active, the passive takes over
// and replication continues both ways from the journal's positions: P
// reaches S at the second address, and each ends holding every message of
// both once.
func TestSharedStoreReplicationAcrossTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	dir := t.TempDir()
	sData := filepath.Join(dir, "s")
	r1, r2, rP := freePort(t), freePort(t), freePort(t)
	a1, a2 := freeAddr(t), freeAddr(t)
	repl := func(listen string) []string {
		return []string{"--repl-listen", listen, "--repl-secret", "s3cret", "--repl-heartbeat", "50ms",
			"--repl-downgrade-after", "10s", "--repl-upgrade-below", "50ms", "--peer", "P,sync"} // accept-only: P must dial S
	}
	p := startPairProc(t, "P", filepath.Join(dir, "p"), rP, "--peer", "S="+r1+"|"+r2+",sync")
	s1 := startServe(t, a1, sharedArgs(sData, a1, "S", repl(r1)...)...)
	startServe(t, a2, sharedArgs(sData, a2, "S", repl(r2)...)...)
	waitPairSync(t, a1, p.addr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(addr, name string, k int) {
		t.Helper()
		c, err := client.Connect(ctx, addr, client.WithName(name))
		if err != nil {
			t.Fatalf("connect %s: %v", addr, err)
		}
		defer c.Close()
		for i := 0; i < k; i++ {
			if _, err := c.Publish(ctx, "rt", []byte(name)); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitStored := func(addr string, want uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for storedOn(t, addr) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s stores %d messages, want %d", addr, storedOn(t, addr), want)
			}
			time.Sleep(10 * time.Millisecond) // polling a condition with a deadline
		}
	}
	publish(a1, "s-pub", 100)
	publish(p.addr, "p-pub", 50)
	waitStored(p.addr, 150)
	waitStored(a1, 150)

	s1.kill(t)
	waitActive(t, a2, 15*time.Second)
	waitPairSync(t, a2, p.addr) // P dialed S at its second address
	publish(a2, "s-pub", 100)
	publish(p.addr, "p-pub", 50)
	waitStored(p.addr, 300)
	waitStored(a2, 300)
	// Nothing was sent twice: each side holds 200 + 100 messages
	// (stored counts every record once; duplicates are dropped and
	// counted apart).
	for _, addr := range []string{a2, p.addr} {
		if st := stats(t, addr); st.Stored != 300 {
			t.Fatalf("%s: %d stored, %d duplicates dropped", addr, st.Stored, st.Duplicates)
		}
	}
}

// TestSharedStoreTakeoverRecoversTornTail: the active dies as a machine
// would, leaving the end of its last record unwritten (a lost writeback:
// that record's last sector is zeros). The passive (stopped meanwhile with
// SIGSTOP, so the damage is in place before it looks) takes over: it
// zeroes the torn tail, logs it, serves every record before it, and
// appends after it.
func TestSharedStoreTakeoverRecoversTornTail(t *testing.T) {
	dir := t.TempDir()
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startServe(t, addrA, sharedArgs(dir, addrA, "shared")...)
	b := startServe(t, addrB, sharedArgs(dir, addrB, "shared")...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Connect(ctx, addrA, client.WithName("pub"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := 1; i <= n; i++ {
		if _, err := c.Publish(ctx, "t", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Publish(ctx, "t", []byte(strings.Repeat("x", 4096))); err != nil { // the record to tear
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()

	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	a.kill(t)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) == 0 {
		t.Fatal("no journal segment")
	}
	sort.Strings(segs)
	seg := segs[0] // the only one written: the segment size holds every record
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	off, last := 64, -1
	for off+4 <= len(data) {
		l := record.Length(data[off:])
		if l == 0 {
			break
		}
		last = off
		off += l
	}
	if last < 0 || off-last < 4096 {
		t.Fatalf("last record at %d, %d bytes: not the big one", last, off-last)
	}
	sector := max((off-1)/512*512, last+record.HeaderSize)
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, off-sector), int64(sector)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitActive(t, addrB, 15*time.Second)
	if !strings.Contains(b.log(), "truncating torn tail") {
		t.Fatalf("the new active did not report the torn tail:\n%s", b.log())
	}
	if st := stats(t, addrB); st.Stored != n {
		t.Fatalf("after the takeover %d messages stored, want %d (the torn one dropped)", st.Stored, n)
	}
	c, err = client.Connect(ctx, addrB, client.WithName("pub"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Publish(ctx, "t", []byte("after")); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := stats(t, addrB); st.Stored != n+1 {
		t.Fatalf("after a publish on the new active %d stored, want %d", st.Stored, n+1)
	}
}

// TestSharedStorePassiveStopsOnSIGTERM: a passive waiting for the lock
// exits 0 at SIGTERM, leaving the active serving.
func TestSharedStorePassiveStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	addrA, addrB := freeAddr(t), freeAddr(t)
	startServe(t, addrA, sharedArgs(dir, addrA, "shared")...)
	b := startServe(t, addrB, sharedArgs(dir, addrB, "shared")...)
	if st, err := sharedState(t, addrB); err != nil || st.State != "standby" {
		t.Fatalf("second process: %+v, %v", st, err)
	}
	b.terminate(t) // exit status 0 within 15s, or the test fails
	if !strings.Contains(b.log(), "shutting down (passive)") {
		t.Fatalf("passive log:\n%s", b.log())
	}
	if st, err := sharedState(t, addrA); err != nil || st.State != "" {
		t.Fatalf("the active after the passive left: %+v, %v", st, err)
	}
}
