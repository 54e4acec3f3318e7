package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tandemhq/tandem/record"
	"github.com/tandemhq/tandem/uring"
)

// syncEnv selects the sync path for journals whose Options.SyncVia is
// empty, in the whole test binary (and in the kill test's writer, which
// inherits it): TANDEM_JOURNAL_SYNC=uring go test ./journal runs every
// test on the ring where the file system has descriptors (OSFS).
const syncEnv = "TANDEM_JOURNAL_SYNC"

func init() {
	if v := os.Getenv(syncEnv); v != "" {
		defaultSyncVia = v
	}
}

// needRing skips the test when io_uring cannot be used here.
func needRing(t testing.TB) {
	t.Helper()
	if err := uring.Available(); err != nil {
		t.Skipf("io_uring not available, the ring sync path cannot be tested here: %v", err)
	}
}

func ringOpts(t testing.TB, dir string) Options {
	opts := memOpts(t, OSFS{})
	opts.Dir = dir
	opts.SyncVia = SyncUring
	return opts
}

// logBuffer collects log output from every goroutine of a journal.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// roundTrip appends n deterministic records (several rotations with
// 16 KiB segments), checks them and the stats, reopens with reopen and
// checks everything again, appends 100 more and checks those.
func roundTrip(t *testing.T, opts, reopen Options, n uint64, wantVia string) {
	t.Helper()
	j := mustOpen(t, opts)
	for i := uint64(0); i < n; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, n)
	verifyDet(t, j, 1, n, true)
	st := j.Stats()
	if st.SyncVia != wantVia || st.Rotations < 5 || st.SyncedSeq != n || st.Syncs == 0 || st.Err != nil {
		t.Fatalf("stats %+v, want SyncVia %q and several rotations", st, wantVia)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Check(opts.Dir, nil); err != nil {
		t.Fatalf("Check after Close: %+v, %v", rep, err)
	}
	j = mustOpen(t, reopen)
	defer j.Close()
	if j.LastSeq() != n || j.SyncedSeq() != n || j.FirstSeq() != 1 {
		t.Fatalf("reopened: first %d last %d synced %d", j.FirstSeq(), j.LastSeq(), j.SyncedSeq())
	}
	verifyDet(t, j, 1, n, true)
	for i := 0; i < 100; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, n+100)
	verifyDet(t, j, 1, n+100, true)
}

func TestRingSyncRoundTrip(t *testing.T) {
	needRing(t)
	opts := ringOpts(t, t.TempDir())
	roundTrip(t, opts, opts, 3000, SyncUring)
	// The files are ordinary segments: the syscall path reads them too.
	opts.SyncVia = SyncSyscall
	j := mustOpen(t, opts)
	defer j.Close()
	verifyDet(t, j, 1, 3100, true)
	if via := j.Stats().SyncVia; via != SyncSyscall {
		t.Fatalf("SyncVia %q, want %q", via, SyncSyscall)
	}
}

// TestSyncViaFromEnv checks that TANDEM_JOURNAL_SYNC reaches journals
// opened with the default Options.SyncVia (TestOSTestsOnRing relies on it).
func TestSyncViaFromEnv(t *testing.T) {
	want := SyncSyscall
	if v := os.Getenv(syncEnv); v != "" {
		want = v
	}
	if want == SyncUring {
		needRing(t)
	}
	j := mustOpen(t, Options{Dir: t.TempDir(), SegmentSize: 64 << 10, Logger: testLogger(t)})
	defer j.Close()
	waitSynced(t, j, appendDet(t, j))
	if via := j.Stats().SyncVia; via != want {
		t.Fatalf("SyncVia %q, want %q (%s=%q)", via, want, syncEnv, os.Getenv(syncEnv))
	}
	// MemFS files have no descriptor: always the syscall path.
	m := mustOpen(t, Options{Dir: "/j", FS: NewMemFS(), SyncVia: SyncUring, Logger: testLogger(t)})
	defer m.Close()
	waitSynced(t, m, appendDet(t, m))
	if via := m.Stats().SyncVia; via != SyncSyscall {
		t.Fatalf("MemFS: SyncVia %q, want %q", via, SyncSyscall)
	}
}

// TestOSTestsOnRing runs the tests that write real files (the round trip
// on OSFS and the SIGKILL writer, which inherits the environment) again
// in a child process with TANDEM_JOURNAL_SYNC=uring, so that they cover
// the ring path without being duplicated.
func TestOSTestsOnRing(t *testing.T) {
	if os.Getenv(syncEnv) != "" {
		t.Skipf("%s is set: this process already runs every test on it", syncEnv)
	}
	needRing(t)
	tests := []string{"TestRoundTripAcrossRotation", "TestKillWriter", "TestSyncViaFromEnv"}
	args := []string{"-test.run=^(" + strings.Join(tests, "|") + ")$", "-test.count=1", "-test.v"}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), syncEnv+"="+SyncUring)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tests with %s=uring: %v\n%s", syncEnv, err, out)
	}
	for _, name := range tests {
		if !bytes.Contains(out, []byte("--- PASS: "+name+" ")) && !(testing.Short() && name == "TestKillWriter") {
			t.Fatalf("%s did not pass with %s=uring:\n%s", name, syncEnv, out)
		}
	}
	if testing.Verbose() {
		t.Logf("with %s=uring:\n%s", syncEnv, out)
	}
}

// shortRunner runs chains as the kernel runs linked SQEs, with pwrite and
// fdatasync, except that it makes writes short: two of every three writes
// longer than a byte write only half their buffer, so the rest of the
// chain completes with -ECANCELED. Every fifth fdatasync comes back with
// -EINTR (not run). It checks that the journal continues exactly where a
// short write stopped, and records whether the last op it ran was a sync
// with no write left unfinished, for OnSync to check.
type shortRunner struct {
	t               *testing.T
	chains, writes  int
	shorts, syncs   int
	eintrs          int
	failSyncAt      int // the n-th sync fails with EIO (0: never)
	failChainAt     int // the n-th chain is refused before it runs (0: never)
	resumeOff       int64
	resumeLen       int
	durable, closed bool
}

var errFakeBusy = fmt.Errorf("%w (fake)", uring.ErrBusy)

func (s *shortRunner) Close() error {
	s.closed = true
	return nil
}

func (s *shortRunner) runChain(fd int, ops []chainOp, res []int32) (bool, error) {
	s.chains++
	if s.chains == s.failChainAt {
		return false, errFakeBusy
	}
	if s.resumeLen > 0 {
		if ops[0].sync || ops[0].off != s.resumeOff || len(ops[0].buf) != s.resumeLen {
			s.t.Errorf("chain after a short write starts with %+v, want the rest: %d bytes at %d", ops[0], s.resumeLen, s.resumeOff)
		}
		s.resumeLen = 0
	}
	cut := false
	for i, op := range ops {
		s.durable = false
		switch {
		case cut:
			res[i] = -int32(unix.ECANCELED)
		case op.sync:
			s.syncs++
			if s.syncs == s.failSyncAt {
				res[i] = -int32(unix.EIO)
				cut = true
				continue
			}
			if s.syncs%5 == 0 {
				s.eintrs++
				res[i] = -int32(unix.EINTR)
				cut = true
				continue
			}
			if err := unix.Fdatasync(fd); err != nil {
				s.t.Errorf("fdatasync: %v", err)
			}
			res[i] = 0
			s.durable = s.resumeLen == 0
		default:
			s.writes++
			b := op.buf
			short := len(b) > 1 && s.writes%3 != 0
			if short {
				b = b[:len(b)/2]
			}
			n, err := unix.Pwrite(fd, b, op.off)
			if err != nil || n != len(b) {
				s.t.Errorf("pwrite: %d, %v", n, err)
			}
			res[i] = int32(n)
			if short {
				s.shorts++
				s.resumeOff, s.resumeLen = op.off+int64(n), len(op.buf)-n
				cut = true
			}
		}
	}
	return true, nil
}

func fakeRing(r chainRunner, err error) ringOpener {
	return func() (chainRunner, error) { return r, err }
}

// TestRingShortWrites runs the journal on a runner whose writes are mostly
// short: every record must still be written and every sync must come
// after all of its part's bytes.
func TestRingShortWrites(t *testing.T) {
	sr := &shortRunner{t: t}
	opts := ringOpts(t, t.TempDir())
	opts.openRing = fakeRing(sr, nil)
	opts.OnSync = func(uint64) {
		if !sr.durable {
			t.Errorf("SyncedSeq published without a sync after the last write (chain %d)", sr.chains)
		}
	}
	reopen := opts
	reopen.openRing, reopen.OnSync = nil, nil
	reopen.SyncVia = SyncSyscall
	roundTrip(t, opts, reopen, 2000, SyncUring)
	if !sr.closed || sr.shorts < 10 || sr.eintrs == 0 {
		t.Fatalf("runner: closed %v, %d chains, %d writes, %d short, %d syncs, %d EINTR", sr.closed, sr.chains, sr.writes, sr.shorts, sr.syncs, sr.eintrs)
	}
	t.Logf("%d chains, %d writes (%d short), %d syncs (%d EINTR)", sr.chains, sr.writes, sr.shorts, sr.syncs, sr.eintrs)
}

func TestSettleChain(t *testing.T) {
	const (
		canceled = -int32(unix.ECANCELED)
		eintr    = -int32(unix.EINTR)
		eio      = -int32(unix.EIO)
	)
	chain := func() []chainOp {
		var ops [chainMax]chainOp
		n := prepareChain(&ops, make([]byte, 1000), 4096+64, 64<<10, false)
		return ops[:n]
	}
	if ops := chain(); len(ops) != 3 || ops[1].off != 4096+1064 || len(ops[1].buf) != 4096-1064 || !ops[2].sync {
		t.Fatalf("chain %+v", ops)
	}
	// Only a sync for an empty part; no page completion past the end.
	var ops [chainMax]chainOp
	if n := prepareChain(&ops, nil, 64, 64<<10, false); n != 1 || !ops[0].sync {
		t.Fatalf("empty part: %d ops %+v", n, ops[:n])
	}
	if n := prepareChain(&ops, make([]byte, 100), 64<<10-100, 64<<10, false); n != 2 || !ops[1].sync {
		t.Fatalf("part at the end: %d ops %+v", n, ops[:n])
	}

	for _, tc := range []struct {
		name    string
		res     []int32
		next    int
		bad     int
		err     error
		off0    int64 // ops[0].off after settling
		len0    int
		off1    int64
		len1    int
		pending int // len(ops)-next
	}{
		{name: "all done", res: []int32{1000, 3032, 0}, next: 3, bad: -1},
		{name: "short first write", res: []int32{600, canceled, canceled}, next: 0, bad: -1,
			off0: 4096 + 64 + 600, len0: 400},
		{name: "short page completion", res: []int32{1000, 32, canceled}, next: 1, bad: -1,
			off1: 4096 + 1064 + 32, len1: 4096 - 1064 - 32},
		{name: "interrupted sync", res: []int32{1000, 3032, eintr}, next: 2, bad: -1},
		{name: "interrupted write", res: []int32{eintr, canceled, canceled}, next: 0, bad: -1, len0: 1000},
		{name: "write error", res: []int32{eio, canceled, canceled}, bad: 0, err: unix.EIO},
		{name: "sync error", res: []int32{1000, 3032, eio}, bad: 2, err: unix.EIO},
		{name: "sync error after a short write", res: []int32{10, canceled, eio}, bad: 2, err: unix.EIO},
		{name: "unexpected cancel", res: []int32{canceled, canceled, canceled}, bad: 0, err: unix.ECANCELED},
		{name: "wrote nothing", res: []int32{0, canceled, canceled}, bad: 0, err: io.ErrUnexpectedEOF},
		// Not what the kernel does, but safe: after the break everything
		// runs again.
		{name: "ran after a short write", res: []int32{10, 3032, 0}, next: 0, bad: -1, off0: 4096 + 64 + 10, len0: 990},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops := chain()
			next, bad, err := settleChain(ops, tc.res)
			if bad != tc.bad || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("bad %d err %v, want %d %v", bad, err, tc.bad, tc.err)
			}
			if err != nil {
				return
			}
			if next != tc.next {
				t.Fatalf("next %d, want %d", next, tc.next)
			}
			if tc.len0 != 0 && (len(ops[0].buf) != tc.len0 || (tc.off0 != 0 && ops[0].off != tc.off0) || ops[0].at != 4096+64) {
				t.Fatalf("first write now %d bytes at %d (at %d), want %d at %d", len(ops[0].buf), ops[0].off, ops[0].at, tc.len0, tc.off0)
			}
			if tc.len1 != 0 && (len(ops[1].buf) != tc.len1 || ops[1].off != tc.off1 || ops[1].at != 4096+1064) {
				t.Fatalf("page completion now %d bytes at %d, want %d at %d", len(ops[1].buf), ops[1].off, tc.len1, tc.off1)
			}
		})
	}
}

// TestRingUnavailableFallsBack: when the ring cannot be set up the journal
// says why once and syncs with fdatasync.
func TestRingUnavailableFallsBack(t *testing.T) {
	var logs logBuffer
	opts := ringOpts(t, t.TempDir())
	opts.Logger = logs.logger()
	opts.openRing = fakeRing(nil, fmt.Errorf("%w: io_uring_setup: %w", uring.ErrUnavailable, unix.EPERM))
	roundTrip(t, opts, opts, 1000, SyncSyscall)
	if n := logs.count("cannot use io_uring"); n != 2 { // once per Open
		t.Fatalf("fallback logged %d times for two opens:\n%s", n, logs.b.String())
	}
	if !strings.Contains(logs.b.String(), "operation not permitted") {
		t.Fatalf("the reason is not logged:\n%s", logs.b.String())
	}
}

// TestRingFailureFallsBack: io_uring_enter refusing a chain (nothing ran)
// moves the journal to the syscall path for good, losing nothing.
func TestRingFailureFallsBack(t *testing.T) {
	var logs logBuffer
	sr := &shortRunner{t: t, failChainAt: 20}
	opts := ringOpts(t, t.TempDir())
	opts.Logger = logs.logger()
	opts.openRing = fakeRing(sr, nil)
	j := mustOpen(t, opts)
	for i := 0; i < 1500; i++ {
		appendDet(t, j)
	}
	waitSynced(t, j, 1500)
	verifyDet(t, j, 1, 1500, true)
	st := j.Stats()
	if st.SyncVia != SyncSyscall || st.Err != nil || !sr.closed || sr.chains != 20 {
		t.Fatalf("stats %+v; runner closed %v after %d chains", st, sr.closed, sr.chains)
	}
	if n := logs.count("io_uring failed"); n != 1 {
		t.Fatalf("logged %d times:\n%s", n, logs.b.String())
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	opts.openRing = nil
	opts.SyncVia = SyncSyscall
	j = mustOpen(t, opts)
	defer j.Close()
	verifyDet(t, j, 1, 1500, true)
}

// TestRingSyncErrorIsFatal: a failed fdatasync fails the journal with the
// syscall path's message, and SyncedSeq never covers the batch.
func TestRingSyncErrorIsFatal(t *testing.T) {
	sr := &shortRunner{t: t, failSyncAt: 7}
	opts := ringOpts(t, t.TempDir())
	opts.Logger = quietLogger()
	opts.openRing = fakeRing(sr, nil)
	j := mustOpen(t, opts)
	defer j.Close()
	var synced uint64
	for j.Err() == nil {
		seq, err := appendDetErr(j)
		if err != nil {
			break
		}
		if err := j.WaitSynced(t.Context(), seq); err == nil {
			synced = seq
		}
	}
	err := j.Err()
	tail := j.tail // the flusher has stopped
	want := fmt.Sprintf("journal: sync %s: fdatasync %s: %v", tail.name, tail.f.(fdFile).Name(), unix.EIO)
	if err == nil || err.Error() != want || !errors.Is(err, unix.EIO) {
		t.Fatalf("Err() = %v, want %s", err, want)
	}
	if got := j.SyncedSeq(); got != synced {
		t.Fatalf("SyncedSeq %d after the failed sync, last acknowledged %d", got, synced)
	}
	if _, err := appendDetErr(j); err == nil {
		t.Fatal("append after a failed sync succeeded")
	}
}

// TestRingErrorsMatchSyscall: a write the kernel refuses (a read-only
// descriptor) gives the same error through the real ring as through
// pwrite; the ring's chain is cancelled, not retried, and it stays in use.
func TestRingErrorsMatchSyscall(t *testing.T) {
	needRing(t)
	path := filepath.Join(t.TempDir(), segmentName(1))
	if err := os.WriteFile(path, make([]byte, 16<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f := newOSFile(rf)
	defer f.Close()
	seg := &segment{name: segmentName(1), path: path, f: f, size: 16 << 10}
	run, err := openSyncRing()
	if err != nil {
		t.Fatal(err)
	}
	j := &Journal{log: quietLogger(), ring: &ringSync{run: run}}
	defer j.closeRing()
	b := make([]byte, 100)
	ringErr := j.writeSync(seg, b, segHeaderSize)
	sysErr := (&Journal{log: quietLogger()}).writeSync(seg, b, segHeaderSize)
	if ringErr == nil || sysErr == nil || ringErr.Error() != sysErr.Error() || !errors.Is(ringErr, unix.EBADF) {
		t.Fatalf("ring: %v\nsyscalls: %v", ringErr, sysErr)
	}
	if j.ring == nil {
		t.Fatal("a failed write closed the ring")
	}
	// And the ring works on a writable descriptor afterwards.
	wf, err := OSFS{}.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	seg.f = wf
	want := bytes.Repeat([]byte{7}, 5000)
	if err := j.writeSync(seg, want, segHeaderSize); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096*2-segHeaderSize)
	if err := readFull(wf, got, segHeaderSize); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:5000], want) || !bytes.Equal(got[5000:], make([]byte, len(got)-5000)) {
		t.Fatal("file content differs from what was written")
	}
}

// TestFlusherNoAllocs: once warmed up, a group commit (one record, one
// batch) allocates nothing, on either path. Background goroutines (the
// preallocator) may allocate a little meanwhile; averaged over many runs
// that rounds to 0, while one allocation per batch would not.
func TestFlusherNoAllocs(t *testing.T) {
	for _, via := range []string{SyncSyscall, SyncUring} {
		t.Run(via, func(t *testing.T) {
			if via == SyncUring {
				needRing(t)
			}
			opts := ringOpts(t, t.TempDir())
			opts.SyncVia = via
			opts.SegmentSize = 8 << 20 // no rotation while measuring
			opts.Logger = quietLogger()
			j := mustOpen(t, opts)
			defer j.Close()
			h := detHeader(1)
			topic, payload := []byte("t/alloc"), make([]byte, 128)
			commit := func() {
				h.Time = 1
				seq, err := j.Append(&h, topic, payload)
				if err != nil {
					t.Fatal(err)
				}
				for j.SyncedSeq() < seq && j.Err() == nil {
					runtime.Gosched()
				}
			}
			for i := 0; i < 200; i++ {
				commit()
			}
			syncs := j.Stats().Syncs
			allocs := testing.AllocsPerRun(500, commit)
			st := j.Stats()
			if st.Err != nil || st.SyncVia != via {
				t.Fatalf("stats %+v", st)
			}
			if n := st.Syncs - syncs; n < 500 {
				t.Fatalf("%d syncs for 501 commits", n)
			}
			if allocs != 0 {
				t.Fatalf("%v allocations per group commit", allocs)
			}
		})
	}
}

// BenchmarkGroupCommit measures one group commit per op (one record
// appended and waited for: a batch of one record, one write, one page
// completion, one fdatasync) on each sync path: the per-batch cost that
// BenchmarkAppendSync's large batches hide.
func BenchmarkGroupCommit(b *testing.B) {
	for _, via := range []string{SyncUring, SyncSyscall} {
		b.Run("sync="+via, func(b *testing.B) {
			if via == SyncUring {
				needRing(b)
			}
			j, err := Open(Options{Dir: b.TempDir(), SyncVia: via, RetentionBytes: 1 << 30, Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			topic, payload := []byte("bench/topic"), make([]byte, 128)
			var h record.Header
			b.ReportAllocs()
			for b.Loop() {
				h.Time = 0
				seq, err := j.Append(&h, topic, payload)
				if err != nil {
					b.Fatal(err)
				}
				if err := j.WaitSynced(b.Context(), seq); err != nil {
					b.Fatal(err)
				}
			}
			if got := j.Stats().SyncVia; got != via {
				b.Fatalf("synced via %s, want %s", got, via)
			}
		})
	}
}
