package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Resources used over one measurement of the engine scenario, to set the
// throughput of io_uring and epoll against what it cost: CPU time and
// context switches of the `tandem serve` process(es), sampled from /proc
// just before the step's clients connect and right after its last ack or
// delivery; the bench process's own CPU time (the load generator, which
// shares the cores with the server); and the whole machine's busy time.
//
// Only measured when Tandem runs as its own process (an in-process server
// cannot be told apart from the load generator): nil otherwise.
type Resources struct {
	WallSec float64 `json:"wall_s"` // between the two samples
	// Messages is what the per-million figures divide by: acknowledged
	// messages (publish, sync pair), deliveries summed over subscribers
	// (fan-out), i.e. what msgs/s counts.
	Messages int64 `json:"messages"`
	// Servers is how many server processes are summed (2 for a pair).
	Servers int `json:"servers"`
	// ServerCPUSec: CPU time of the server process(es), every thread
	// (io_uring's io-wq workers are threads of the process), exited ones
	// included: the process's CPU-time clock (clock_gettime of
	// clock_getcpuclockid(pid), ns), or where it cannot be read
	// utime+stime from /proc/PID/stat (10 ms ticks).
	ServerCPUSec float64 `json:"server_cpu_s"`
	// Context switches of every thread of the server process(es), from
	// /proc/PID/task/TID/status (a thread's own counters: the process's
	// status has its main thread's only). Voluntary: the thread blocked
	// (epoll_wait, io_uring_enter waiting for completions, futex,
	// fdatasync...); involuntary: it was preempted.
	ServerVoluntary   uint64 `json:"server_voluntary_ctxt_switches"`
	ServerInvoluntary uint64 `json:"server_nonvoluntary_ctxt_switches"`
	// ServerThreadsExited: threads present at the first sample and gone at
	// the second: their switches after the first sample are not counted.
	ServerThreadsExited int `json:"server_threads_exited,omitempty"`
	// BenchCPUSec: the bench process (publishers and subscribers),
	// getrusage(RUSAGE_SELF).
	BenchCPUSec float64 `json:"bench_cpu_s"`
	// MachineBusySec: CPU time of every core not idle nor waiting for I/O,
	// from /proc/stat: with the server's and the bench's, shows what else
	// ran on the machine meanwhile.
	MachineBusySec float64 `json:"machine_busy_s,omitempty"`

	// Per million Messages.
	ServerCPUPerM float64 `json:"server_cpu_s_per_m"`
	ServerCtxPerM float64 `json:"server_ctxt_switches_per_m"`
	BenchCPUPerM  float64 `json:"bench_cpu_s_per_m"`
}

// userHZ is the unit of the times in /proc/PID/stat and /proc/stat
// (USER_HZ: 100 on every Linux architecture Go supports).
const userHZ = 100

// procRoot is where /proc is (tests use a fake one).
var procRoot = "/proc"

// ctxSwitches is one thread's context switch counters.
type ctxSwitches struct{ voluntary, involuntary uint64 }

// procSample is one process at one instant.
type procSample struct {
	cpu     time.Duration       // CPU time of the thread group
	threads map[int]ctxSwitches // per thread id
}

// processCPUClock returns the CPU time of every thread (alive or exited)
// of process pid, from its CPU-time clock (tests replace it).
var processCPUClock = processCPU

// processCPU reads the CPU-time clock of process pid: the clock id
// clock_getcpuclockid(3) returns, i.e. the kernel's
// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED): the thread group's
// sum_exec_runtime, in ns.
func processCPU(pid int) (time.Duration, error) {
	clk := (^int32(pid))<<3 | 2
	var ts unix.Timespec
	if err := unix.ClockGettime(clk, &ts); err != nil {
		return 0, fmt.Errorf("CPU clock of pid %d: %w", pid, err)
	}
	return time.Duration(ts.Nano()), nil
}

// usageSample is every sampled figure at one instant.
type usageSample struct {
	at          time.Time
	procs       []procSample
	benchCPU    time.Duration
	machineBusy uint64 // ticks, every core; 0 when /proc/stat is unreadable
}

// parseStatCPU returns utime+stime (ticks) from a /proc/PID/stat line.
// The command name (field 2) is in parentheses and may contain spaces and
// parentheses: the fields are counted after the last ')'.
func parseStatCPU(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	// After ')': field 3 (state) onwards; utime and stime are fields 14, 15.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return u + s, nil
}

// parseStatusCtx returns the context switch counters of a
// /proc/PID/task/TID/status file.
func parseStatusCtx(status string) (ctxSwitches, error) {
	var c ctxSwitches
	var seen int
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "voluntary_ctxt_switches":
			dst = &c.voluntary
		case "nonvoluntary_ctxt_switches":
			dst = &c.involuntary
		default:
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return c, fmt.Errorf("status: %s: %w", k, err)
		}
		*dst = n
		seen++
	}
	if seen != 2 {
		return c, fmt.Errorf("status: no context switch counters")
	}
	return c, nil
}

// parseMachineBusy returns the busy ticks of every core (user, nice,
// system, irq, softirq, steal: not idle, not iowait; guest time is already
// in user) from /proc/stat's first line.
func parseMachineBusy(stat string) (uint64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return busy, nil
}

// readProcSample samples process pid under procRoot: its CPU time (the
// CPU-time clock, else /proc/PID/stat) and every thread's context
// switches.
func readProcSample(pid int) (procSample, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return procSample{}, err
	}
	cpu, err := parseStatCPU(string(b))
	if err != nil {
		return procSample{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "task"))
	if err != nil {
		return procSample{}, err
	}
	ps := procSample{cpu: time.Duration(cpu) * time.Second / userHZ, threads: make(map[int]ctxSwitches, len(ents))}
	if d, err := processCPUClock(pid); err == nil {
		ps.cpu = d
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "task", e.Name(), "status"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		c, err := parseStatusCtx(string(b))
		if err != nil {
			return procSample{}, fmt.Errorf("pid %d thread %d: %w", pid, tid, err)
		}
		ps.threads[tid] = c
	}
	return ps, nil
}

// takeSample samples the processes pids, the bench process and the
// machine.
func takeSample(pids []int) (usageSample, error) {
	s := usageSample{at: time.Now()}
	for _, pid := range pids {
		ps, err := readProcSample(pid)
		if err != nil {
			return s, err
		}
		s.procs = append(s.procs, ps)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		s.benchCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile(filepath.Join(procRoot, "stat")); err == nil {
		s.machineBusy, _ = parseMachineBusy(string(b))
	}
	return s, nil
}

// diffProc returns the CPU ticks and context switches of a process
// between two samples. A thread only in after started in between: all of
// its switches count; a thread only in before exited: its switches since
// before are lost (counted in exited).
func diffProc(before, after procSample) (cpu time.Duration, sw ctxSwitches, exited int) {
	if after.cpu > before.cpu {
		cpu = after.cpu - before.cpu
	}
	for tid, a := range after.threads {
		b := before.threads[tid] // zero for a new thread
		if a.voluntary >= b.voluntary {
			sw.voluntary += a.voluntary - b.voluntary
		}
		if a.involuntary >= b.involuntary {
			sw.involuntary += a.involuntary - b.involuntary
		}
	}
	for tid := range before.threads {
		if _, ok := after.threads[tid]; !ok {
			exited++
		}
	}
	return cpu, sw, exited
}

// usageBetween computes the Resources between two samples for messages
// messages.
func usageBetween(before, after usageSample, messages int64) *Resources {
	r := &Resources{WallSec: after.at.Sub(before.at).Seconds(), Messages: messages, Servers: len(after.procs)}
	var cpu time.Duration
	for i := range after.procs {
		if i >= len(before.procs) {
			break
		}
		c, sw, ex := diffProc(before.procs[i], after.procs[i])
		cpu += c
		r.ServerVoluntary += sw.voluntary
		r.ServerInvoluntary += sw.involuntary
		r.ServerThreadsExited += ex
	}
	r.ServerCPUSec = cpu.Seconds()
	r.BenchCPUSec = (after.benchCPU - before.benchCPU).Seconds()
	if before.machineBusy > 0 && after.machineBusy >= before.machineBusy {
		r.MachineBusySec = float64(after.machineBusy-before.machineBusy) / userHZ
	}
	r.perMillion()
	return r
}

// perMillion fills the per-million figures from the totals.
func (r *Resources) perMillion() {
	if r.Messages <= 0 {
		r.ServerCPUPerM, r.ServerCtxPerM, r.BenchCPUPerM = 0, 0, 0
		return
	}
	m := float64(r.Messages) / 1e6
	r.ServerCPUPerM = r.ServerCPUSec / m
	r.ServerCtxPerM = float64(r.ServerVoluntary+r.ServerInvoluntary) / m
	r.BenchCPUPerM = r.BenchCPUSec / m
}

// busyFraction is the share of the machine's cores the server and the
// bench kept busy between the samples (0: unknown).
func (r *Resources) busyFraction(cores int) float64 {
	if r == nil || cores <= 0 || r.WallSec <= 0 {
		return 0
	}
	return (r.ServerCPUSec + r.BenchCPUSec) / (r.WallSec * float64(cores))
}

// serverPIDs returns the process ids of the running server process(es):
// A (or the single instance), then B; none in-process.
func (t *Tandem) serverPIDs() []int {
	var out []int
	for _, p := range []*proc{t.p, t.pB} {
		if p != nil && p.cmd.Process != nil && !p.exited() {
			out = append(out, p.cmd.Process.Pid)
		}
	}
	return out
}

// measureUsage runs f (a measurement filling res) between two samples of
// the server process(es) of t and fills res.Resources; messages returns
// what the per-million figures divide by once f has run. In-process, or
// when /proc cannot be read, f just runs (a failed sample is noted).
func measureUsage(t *Tandem, res *Result, f func() error, messages func(*Result) int64) error {
	pids := t.serverPIDs()
	if len(pids) == 0 {
		return f()
	}
	before, serr := takeSample(pids)
	if err := f(); err != nil {
		return err
	}
	if serr == nil {
		var after usageSample
		if after, serr = takeSample(pids); serr == nil {
			res.Resources = usageBetween(before, after, messages(res))
			return nil
		}
	}
	res.Note = joinNotes(res.Note, "server CPU not measured: "+serr.Error())
	return nil
}

func joinNotes(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}
