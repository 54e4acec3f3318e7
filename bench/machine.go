package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where a run happened.
type Machine struct {
	Host       string   `json:"host"`
	CPU        string   `json:"cpu"`
	Cores      int      `json:"cores"`
	Memory     string   `json:"memory,omitempty"`
	Kernel     string   `json:"kernel"`
	OS         string   `json:"os,omitempty"`
	GoVersion  string   `json:"go"`
	DataDir    string   `json:"data_dir"`
	Filesystem string   `json:"filesystem"` // type and device of DataDir's mount
	Fsync      *Latency `json:"fdatasync"`  // 4 KiB write + fdatasync, measured at the start
	FsyncError string   `json:"fdatasync_error,omitempty"`
}

// ProbeMachine collects the machine description and measures fdatasync
// latency in dir with n 4 KiB appends, each followed by fdatasync.
func ProbeMachine(dir string, n int) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), DataDir: dir}
	m.Host, _ = os.Hostname()
	m.CPU = cpuModel()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	m.OS = osRelease()
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.Memory = fmtBytes(uint64(si.Totalram) * uint64(si.Unit))
	}
	m.Filesystem = filesystemOf(dir)
	lat, err := fsyncProbe(dir, n)
	m.Fsync = lat
	if err != nil {
		m.FsyncError = err.Error()
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// filesystemOf returns "TYPE on DEVICE (MOUNTPOINT)" for the mount holding
// dir, from /proc/self/mounts (longest matching mount point).
func filesystemOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "unknown"
	}
	best, bestLen := "unknown", -1
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		mp := strings.ReplaceAll(f[1], `\040`, " ")
		if (abs == mp || strings.HasPrefix(abs, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > bestLen {
			opts := f[3]
			if len(opts) > 60 {
				opts = opts[:60] + "..."
			}
			best, bestLen = f[2]+" on "+f[0]+" ("+mp+", "+opts+")", len(mp)
		}
	}
	return best
}

// fsyncProbe appends 4 KiB n times to a new file in dir, each followed by
// fdatasync, and returns the latency distribution of write+fdatasync.
func fsyncProbe(dir string, n int) (*Latency, error) {
	if n <= 0 {
		return nil, nil
	}
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	h := newHist()
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, err := f.Write(buf); err != nil {
			return summarize(h), err
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return summarize(h), err
		}
		recordClamped(h, int64(time.Since(t)))
	}
	return summarize(h), nil
}

func fmtBytes(n uint64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// Commit identifies the Tandem build that ran the bench.
type Commit struct {
	Revision string `json:"revision"`
	Modified bool   `json:"modified"` // built from a tree with uncommitted changes
	Time     string `json:"time,omitempty"`
	Source   string `json:"source"` // "build info" or "git"
}

// Short returns the first 12 characters of the revision, with "+dirty"
// when the tree was modified.
func (c Commit) Short() string {
	r := c.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if r == "" {
		r = "unknown"
	}
	if c.Modified {
		r += "+dirty"
	}
	return r
}

// CommitInfo returns the commit from the binary's build info (vcs.revision),
// else from `git rev-parse HEAD` in the working directory.
func CommitInfo() Commit {
	if bi, ok := debug.ReadBuildInfo(); ok {
		var c Commit
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				c.Revision = s.Value
			case "vcs.modified":
				c.Modified = s.Value == "true"
			case "vcs.time":
				c.Time = s.Value
			}
		}
		if c.Revision != "" {
			c.Source = "build info"
			return c
		}
	}
	c := Commit{Source: "git"}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		c.Revision = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
			c.Modified = len(strings.TrimSpace(string(out))) > 0
		}
	}
	return c
}
