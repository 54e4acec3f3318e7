package bench

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A /proc/PID/stat line: the command name may hold spaces and parentheses.
func statLine(pid int, utime, stime uint64) string {
	return fmt.Sprintf("%d (tandem (serve) x) S 1 %d %d 0 -1 4194560 2300 0 0 0 %d %d 0 0 20 0 7 0 952353 1264263168 3041 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0\n",
		pid, pid, pid, utime, stime)
}

func statusText(vol, invol uint64) string {
	return fmt.Sprintf("Name:\ttandem\nState:\tS (sleeping)\nThreads:\t7\nCpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t%d\n", vol, invol)
}

func procStatText(user, nice, system, idle, iowait, irq, softirq, steal uint64) string {
	return fmt.Sprintf("cpu  %d %d %d %d %d %d %d %d 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n", user, nice, system, idle, iowait, irq, softirq, steal)
}

func TestParseProcFiles(t *testing.T) {
	cpu, err := parseStatCPU(statLine(4242, 1234, 567))
	if err != nil || cpu != 1801 {
		t.Errorf("parseStatCPU = %d, %v; want 1801", cpu, err)
	}
	for _, bad := range []string{"", "4242 (tandem", "4242 (x) S 1 2 3", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 u s 0"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
	c, err := parseStatusCtx(statusText(150, 12))
	if err != nil || c != (ctxSwitches{150, 12}) {
		t.Errorf("parseStatusCtx = %+v, %v", c, err)
	}
	if _, err := parseStatusCtx("Name:\tx\nvoluntary_ctxt_switches:\t3\n"); err == nil {
		t.Error("parseStatusCtx without nonvoluntary: no error")
	}
	busy, err := parseMachineBusy(procStatText(100, 1, 50, 900, 40, 2, 3, 4))
	if err != nil || busy != 100+1+50+2+3+4 {
		t.Errorf("parseMachineBusy = %d, %v", busy, err)
	}
	if _, err := parseMachineBusy("intr 1 2\n"); err == nil {
		t.Error("parseMachineBusy: no error")
	}
}

// fakeProc writes a /proc with the process pid: its stat (utime, stime)
// and its threads' status (tid -> switches), and /proc/stat.
func fakeProc(t *testing.T, root string, pid int, utime, stime uint64, threads map[int]ctxSwitches, machineBusy uint64) {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprint(pid))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	write := func(path, s string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "stat"), statLine(pid, utime, stime))
	for tid, c := range threads {
		write(filepath.Join(dir, "task", fmt.Sprint(tid), "status"), statusText(c.voluntary, c.involuntary))
	}
	write(filepath.Join(root, "stat"), procStatText(machineBusy, 0, 0, 5000, 0, 0, 0, 0))
}

// CPU and context switches per million messages from two samples of a
// fake /proc: a thread that exits in between is counted as such, one that
// starts counts from zero.
func TestUsageFromFakeProc(t *testing.T) {
	root := t.TempDir()
	old, oldClock := procRoot, processCPUClock
	procRoot = root
	// The fake process has no CPU-time clock: the figures come from stat.
	processCPUClock = func(int) (time.Duration, error) { return 0, fmt.Errorf("no clock") }
	defer func() { procRoot, processCPUClock = old, oldClock }()

	fakeProc(t, root, 4242, 1000, 200, map[int]ctxSwitches{4242: {10, 1}, 4243: {500, 20}, 4245: {7, 0}}, 10000)
	before, err := takeSample([]int{4242})
	if err != nil {
		t.Fatal(err)
	}
	if len(before.procs) != 1 || before.procs[0].cpu != 12*time.Second || len(before.procs[0].threads) != 3 || before.machineBusy != 10000 {
		t.Fatalf("before: %+v", before)
	}
	// 2.5 s of CPU later: 4242 +100/+5, 4243 +40/+3, 4245 exited, 4244 new.
	fakeProc(t, root, 4242, 1150, 300, map[int]ctxSwitches{4242: {110, 6}, 4243: {540, 23}, 4244: {7, 1}}, 10600)
	after, err := takeSample([]int{4242})
	if err != nil {
		t.Fatal(err)
	}
	// Fixed times, so the figures are exact.
	before.at, after.at = time.Unix(100, 0), time.Unix(103, 0)
	before.benchCPU, after.benchCPU = time.Second, 2500*time.Millisecond
	u := usageBetween(before, after, 2_000_000)
	want := Resources{
		WallSec: 3, Messages: 2_000_000, Servers: 1,
		ServerCPUSec: 2.5, ServerVoluntary: 100 + 40 + 7, ServerInvoluntary: 5 + 3 + 1, ServerThreadsExited: 1,
		BenchCPUSec: 1.5, MachineBusySec: 6,
		ServerCPUPerM: 1.25, ServerCtxPerM: 78, BenchCPUPerM: 0.75,
	}
	if !resourcesClose(*u, want) {
		t.Errorf("usage\n got %+v\nwant %+v", *u, want)
	}
	if f := u.busyFraction(2); math.Abs(f-4.0/6) > 1e-9 {
		t.Errorf("busy fraction %v, want 4/6", f)
	}
	if f := u.otherFraction(2); math.Abs(f-2.0/6) > 1e-9 {
		t.Errorf("other fraction %v, want 2/6", f)
	}
	// No messages: no per-million figures (not a division by zero).
	if z := usageBetween(before, after, 0); z.ServerCPUPerM != 0 || z.ServerCtxPerM != 0 || z.ServerCPUSec != 2.5 {
		t.Errorf("no messages: %+v", *z)
	}
	// A process gone by the second sample is an error.
	if _, err := takeSample([]int{4242, 9999}); err == nil {
		t.Error("sample of a missing process: no error")
	}
}

func resourcesClose(a, b Resources) bool {
	f := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(y)) }
	return f(a.WallSec, b.WallSec) && a.Messages == b.Messages && a.Servers == b.Servers &&
		f(a.ServerCPUSec, b.ServerCPUSec) && a.ServerVoluntary == b.ServerVoluntary && a.ServerInvoluntary == b.ServerInvoluntary &&
		a.ServerThreadsExited == b.ServerThreadsExited && f(a.BenchCPUSec, b.BenchCPUSec) && f(a.MachineBusySec, b.MachineBusySec) &&
		f(a.ServerCPUPerM, b.ServerCPUPerM) && f(a.ServerCtxPerM, b.ServerCtxPerM) && f(a.BenchCPUPerM, b.BenchCPUPerM)
}

// The real /proc of this process parses: its threads, its own CPU time
// (the CPU-time clock, which agrees with stat's ticks) growing while it
// spins.
func TestReadProcSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	s0, err := readProcSample(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := parseStatCPU(string(b))
	if err != nil {
		t.Fatal(err)
	}
	clk, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// stat (read after the sample) is at most a tick behind the clock,
	// give or take its rounding.
	if st := time.Duration(ticks) * 10 * time.Millisecond; s0.cpu > clk || st > clk+20*time.Millisecond || st+20*time.Millisecond < s0.cpu {
		t.Errorf("CPU clock %v at the sample, %v after; stat %v", s0.cpu, clk, st)
	}
	if len(s0.threads) == 0 {
		t.Fatal("no threads")
	}
	if _, ok := s0.threads[os.Getpid()]; !ok {
		t.Errorf("main thread %d not among %v", os.Getpid(), s0.threads)
	}
	deadline := time.Now().Add(20 * time.Second)
	x := 0
	for {
		for i := 0; i < 1_000_000; i++ {
			x += i
		}
		s1, err := readProcSample(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if s1.cpu > s0.cpu+5*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v (%d)", s0.cpu, x)
		}
	}
}

// measureUsage samples the server process of a Tandem adapter around the
// measurement (here a `sleep` process standing in for tandem serve), and
// leaves an in-process server unmeasured.
func TestMeasureUsageProcess(t *testing.T) {
	bin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	p, err := startProc("sleep", bin, []string{"60"}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	tn := &Tandem{p: p}
	var res Result
	ran := false
	err = measureUsage(tn, &res, func() error { ran = true; res.Acked = 5000; return nil }, func(r *Result) int64 { return r.Acked })
	if err != nil || !ran {
		t.Fatalf("err %v, ran %v", err, ran)
	}
	u := res.Resources
	if u == nil || u.Servers != 1 || u.Messages != 5000 || u.WallSec <= 0 || res.Note != "" {
		t.Fatalf("resources %+v, note %q", u, res.Note)
	}
	var in Result
	if err := measureUsage(&Tandem{}, &in, func() error { return nil }, func(*Result) int64 { return 1 }); err != nil || in.Resources != nil {
		t.Errorf("in-process: %v, %+v", err, in.Resources)
	}
	// A failing measurement's error is returned as is.
	if err := measureUsage(tn, &in, func() error { return fmt.Errorf("boom") }, func(*Result) int64 { return 1 }); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("error %v", err)
	}
}
