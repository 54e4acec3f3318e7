package tuning

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"", nil},
		{"\n", nil},
		{"0", []int{0}},
		{"0-3\n", []int{0, 1, 2, 3}},
		{"0-3,8-11", []int{0, 1, 2, 3, 8, 9, 10, 11}},
		{"8-9,0,1-2", []int{0, 1, 2, 8, 9}},
		{"3,3,2-3", []int{2, 3}},
	} {
		got, err := ParseCPUList(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"a", "1-", "-1", "3-1", "0,,1", "1 - 3", "0-7:2/4", "99999", "0x3"} {
		if got, err := ParseCPUList(bad); !errors.Is(err, ErrBadCPUList) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want ErrBadCPUList", bad, got, err)
		}
	}
	for _, s := range []string{"0-3,8-11", "5", "0,2,4", "0-1,3-4,7"} {
		c, _ := ParseCPUList(s)
		if f := FormatCPUList(c); f != s {
			t.Errorf("FormatCPUList(ParseCPUList(%q)) = %q", s, f)
		}
	}
}

// machine describes a fake sysfs tree: nodes x coresPerNode physical cores
// with threads hardware threads each, numbered as Linux does on x86 (first
// threads of every core, then the second threads).
type machine struct {
	nodes, coresPerNode, threads int
	memPerNode                   int64
	legacySiblings               bool // thread_siblings_list only (older kernels)
	noNodeDir                    bool // a kernel without NUMA support
}

func (m machine) cpu(node, core, thread int) int {
	return thread*m.nodes*m.coresPerNode + node*m.coresPerNode + core
}

func writeSysfs(t *testing.T, m machine) string {
	t.Helper()
	root := t.TempDir()
	put := func(name, text string) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	total := m.nodes * m.coresPerNode * m.threads
	put("devices/system/cpu/online", fmt.Sprintf("0-%d", total-1))
	for n := 0; n < m.nodes; n++ {
		var cpus []int
		for k := 0; k < m.coresPerNode; k++ {
			var sib []int
			for th := 0; th < m.threads; th++ {
				sib = append(sib, m.cpu(n, k, th))
			}
			cpus = append(cpus, sib...)
			for _, c := range sib {
				dir := fmt.Sprintf("devices/system/cpu/cpu%d/topology/", c)
				put(dir+"core_id", fmt.Sprint(k))
				put(dir+"physical_package_id", fmt.Sprint(n))
				put(dir+"thread_siblings_list", FormatCPUList(sib))
				if !m.legacySiblings {
					put(dir+"core_cpus_list", FormatCPUList(sib))
				}
			}
		}
		if !m.noNodeDir {
			put(fmt.Sprintf("devices/system/node/node%d/cpulist", n), FormatCPUList(cpus))
			if m.memPerNode > 0 {
				put(fmt.Sprintf("devices/system/node/node%d/meminfo", n),
					fmt.Sprintf("Node %d MemTotal:       %d kB\nNode %d MemFree:        1 kB", n, m.memPerNode>>10, n))
			}
		}
	}
	put("devices/system/node/online", fmt.Sprintf("0-%d", m.nodes-1)) // not a node dir: must be ignored
	return root
}

func plan(t *testing.T, root string) (*Plan, string) {
	t.Helper()
	topo, err := ReadTopology(root)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compute(topo, Options{DataDir: "/var/lib/tandem"})
	if err != nil {
		t.Fatal(err)
	}
	out := p.TOML(root)
	checkTOML(t, p, out)
	return p, out
}

// checkTOML decodes the rendered file and compares it with the plan.
func checkTOML(t *testing.T, p *Plan, out string) {
	t.Helper()
	var got struct {
		Engine         string   `toml:"engine"`
		Loops          int      `toml:"loops"`
		Pin            bool     `toml:"pin"`
		CPUs           string   `toml:"cpus"`
		FlusherCPUs    string   `toml:"flusher-cpus"`
		ReplCPUs       string   `toml:"repl-cpus"`
		Data           string   `toml:"data"`
		JournalDirs    []string `toml:"journal-dirs"`
		RingEntries    int      `toml:"ring-entries"`
		ReadBuffer     int      `toml:"read-buffer"`
		WriteHighWater int      `toml:"write-high-water"`
	}
	md, err := toml.Decode(out, &got)
	if err != nil {
		t.Fatalf("rendered TOML does not parse: %v\n%s", err, out)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("keys not in Keys: %v", u)
	}
	if got.Engine != "auto" || got.Loops != p.Loops || got.Pin != p.Pin || got.CPUs != joinCPUs(p.LoopCPUs) ||
		got.FlusherCPUs != joinCPUs(p.FlusherCPUs) || got.ReplCPUs != joinCPUs(p.ReplCPUs) || got.Data != p.Data ||
		!slices.Equal(got.JournalDirs, p.JournalDirs) || got.RingEntries != p.RingEntries ||
		got.ReadBuffer != p.ReadBuffer || got.WriteHighWater != p.WriteHighWater {
		t.Fatalf("TOML says %+v, plan says %+v", got, p)
	}
	for _, k := range Keys {
		if k.Name == "journal-dirs" && len(p.JournalDirs) == 0 {
			continue
		}
		i := strings.Index(out, "\n"+k.Name+" = ")
		if i < 0 {
			t.Fatalf("key %s missing", k.Name)
		}
		if !strings.HasPrefix(strings.TrimSpace(out[strings.LastIndex(out[:i], "\n\n")+1:i]), "#") {
			t.Fatalf("key %s has no comment above it", k.Name)
		}
	}
	if got.Loops != len(p.LoopCPUs) || got.Loops < 1 {
		t.Fatalf("loops %d for cpus %v", got.Loops, p.LoopCPUs)
	}
}

// siblingsOf returns the CPUs sharing a physical core with any of cpus.
func siblingsOf(topo *Topology, cpus []int) map[int]bool {
	m := map[int]bool{}
	for _, c := range cpus {
		for _, s := range topo.CPUs[c].Threads {
			m[s] = true
		}
	}
	return m
}

func TestOneNodeTwoCores(t *testing.T) {
	p, out := plan(t, writeSysfs(t, machine{nodes: 1, coresPerNode: 2, threads: 1, memPerNode: 8 << 30}))
	if p.Loops != 1 || !slices.Equal(p.LoopCPUs, []int{1}) || !slices.Equal(p.FlusherCPUs, []int{0}) ||
		!slices.Equal(p.ReplCPUs, []int{0}) || !p.Pin || p.JournalDirs != nil {
		t.Fatalf("plan %+v", p)
	}
	for _, want := range []string{"Two physical cores", `loops = 2 and cpus = "0,1"`, `cpus = "1"`, `flusher-cpus = "0"`,
		"1 NUMA node(s), 2 physical core(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "journal-dirs") {
		t.Error("one node but journal-dirs emitted")
	}
	t.Logf("\n%s", out)
}

func TestTwoNodesSixteenCoresSMT(t *testing.T) {
	m := machine{nodes: 2, coresPerNode: 8, threads: 2, memPerNode: 64 << 30}
	root := writeSysfs(t, m)
	p, out := plan(t, root)
	topo := p.Topology
	if len(topo.Nodes) != 2 || len(topo.Cores) != 16 || len(topo.Online) != 32 || !topo.SMT() {
		t.Fatalf("topology: %v", topo.Summary())
	}
	if p.Loops != 14 {
		t.Fatalf("loops %d, want 14 (16 cores minus one reserved per node)", p.Loops)
	}
	if !slices.Equal(p.FlusherCPUs, []int{0, 8}) || !slices.Equal(p.ReplCPUs, []int{16, 24}) {
		t.Fatalf("flushers %v repl %v", p.FlusherCPUs, p.ReplCPUs)
	}
	// No loop shares a physical core with another loop or with the reserved cores.
	reserved := siblingsOf(topo, slices.Concat(p.FlusherCPUs, p.ReplCPUs))
	cores := map[string]bool{}
	for _, c := range p.LoopCPUs {
		if reserved[c] {
			t.Errorf("loop cpu %d is on a reserved core", c)
		}
		k := FormatCPUList(topo.CPUs[c].Threads)
		if cores[k] {
			t.Errorf("two loops on core %s", k)
		}
		cores[k] = true
		if c >= 16 {
			t.Errorf("loop on second hardware thread %d", c)
		}
	}
	// Each node's loops are on that node, and each node has a journal.
	if !slices.Equal(p.JournalDirs, []string{"/var/lib/tandem/node0", "/var/lib/tandem/node1"}) {
		t.Fatalf("journal dirs %v", p.JournalDirs)
	}
	for _, want := range []string{`cpus = "1,2,3,4,5,6,7,9,10,11,12,13,14,15"`, `repl-cpus = "16,24"`,
		"node 1: cpus 8-15,24-31, 8 core(s), 64.0 GiB", "SMT sibling"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	t.Logf("\n%s", out)
}

func TestFourNodesSixtyFourCores(t *testing.T) {
	p, out := plan(t, writeSysfs(t, machine{nodes: 4, coresPerNode: 16, threads: 1}))
	if p.Loops != 60 || len(p.JournalDirs) != 4 {
		t.Fatalf("loops %d dirs %v", p.Loops, p.JournalDirs)
	}
	if !slices.Equal(p.FlusherCPUs, []int{0, 16, 32, 48}) || !slices.Equal(p.ReplCPUs, p.FlusherCPUs) {
		t.Fatalf("flushers %v repl %v", p.FlusherCPUs, p.ReplCPUs)
	}
	for _, c := range p.LoopCPUs {
		if slices.Contains(p.FlusherCPUs, c) {
			t.Fatalf("loop on flusher cpu %d", c)
		}
	}
	if len(p.Notes) != 0 {
		t.Fatalf("unexpected compromises: %v", p.Notes)
	}
	if !strings.Contains(out, "4 NUMA node(s), 64 physical core(s)") {
		t.Fatal(out)
	}
}

func TestSmallMachines(t *testing.T) {
	p, out := plan(t, writeSysfs(t, machine{nodes: 1, coresPerNode: 1, threads: 1, memPerNode: 1 << 30}))
	if p.Pin || p.Loops != 1 || !slices.Equal(p.FlusherCPUs, []int{0}) {
		t.Fatalf("1 cpu: %+v", p)
	}
	if p.ReadBuffer != smallReadBuffer || p.WriteHighWater != smallWriteHighWater ||
		!strings.Contains(strings.ReplaceAll(out, "\n# ", " "), "sized down because a node has less than 4 GiB") {
		t.Fatalf("1 GiB node: read %d high water %d", p.ReadBuffer, p.WriteHighWater)
	}
	// One core with two threads: the loop and the flusher split the siblings.
	p, _ = plan(t, writeSysfs(t, machine{nodes: 1, coresPerNode: 1, threads: 2}))
	if !p.Pin || !slices.Equal(p.LoopCPUs, []int{0}) || !slices.Equal(p.FlusherCPUs, []int{1}) ||
		len(p.Notes) != 1 || !strings.Contains(p.Notes[0], "SMT sibling") {
		t.Fatalf("1 core x 2 threads: %+v", p)
	}
}

func TestLegacyAndNonNUMASysfs(t *testing.T) {
	topo, err := ReadTopology(writeSysfs(t, machine{nodes: 1, coresPerNode: 4, threads: 2, legacySiblings: true, noNodeDir: true}))
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Nodes) != 1 || len(topo.Nodes[0].CPUs) != 8 || len(topo.Cores) != 4 || !topo.SMT() {
		t.Fatalf("%v", topo.Summary())
	}
	r, err := topo.Restrict([]int{2, 3, 6})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Cores) != 2 || !slices.Equal(r.Online, []int{2, 3, 6}) {
		t.Fatalf("restricted: %v", r.Summary())
	}
	if _, err := topo.Restrict([]int{100}); err == nil {
		t.Fatal("restrict to an absent cpu succeeded")
	}
}

func TestMalformedSysfs(t *testing.T) {
	base := machine{nodes: 2, coresPerNode: 2, threads: 1}
	for _, tc := range []struct {
		name, file, text, want string
	}{
		{"bad node cpulist", "devices/system/node/node1/cpulist", "2-x", `node1/cpulist: tuning: bad cpu list "2-x"`},
		{"backwards range", "devices/system/cpu/online", "3-0", "runs backwards"},
		{"empty online", "devices/system/cpu/online", "", "lists no CPU"},
		{"cpu in two nodes", "devices/system/node/node1/cpulist", "1-3", "cpu 1 is also in node 0"},
		{"sibling list without self", "devices/system/cpu/cpu2/topology/core_cpus_list", "3", "does not include cpu 2"},
		{"bad core id", "devices/system/cpu/cpu0/topology/core_id", "zero", `core_id: "zero" is not an integer`},
		{"online cpu in no node", "devices/system/node/node1/cpulist", "2", "online cpu 3 is in no node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := writeSysfs(t, base)
			if err := os.WriteFile(filepath.Join(root, tc.file), []byte(tc.text+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadTopology(root)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to mention %q", err, tc.want)
			}
		})
	}
	t.Run("missing online", func(t *testing.T) {
		_, err := ReadTopology(t.TempDir())
		if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "devices/system/cpu/online") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestRealSysfs(t *testing.T) {
	if _, err := os.Stat("/sys/devices/system/cpu/online"); err != nil {
		t.Skipf("no sysfs here: %v", err)
	}
	topo, err := ReadTopology("/sys")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compute(topo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTOML(t, p, p.TOML("/sys"))
	for _, c := range p.AllCPUs() {
		if _, ok := topo.CPUs[c]; !ok {
			t.Fatalf("plan names cpu %d, not online", c)
		}
	}
	t.Logf("this machine: %v; loops on %v, flusher %v", topo.Summary(), p.LoopCPUs, p.FlusherCPUs)
}

func TestQuote(t *testing.T) {
	var v struct{ D string }
	weird := "dir \"with\" \\ and\ttab"
	if _, err := toml.Decode("D = "+quote(weird), &v); err != nil || v.D != weird {
		t.Fatalf("%q -> %q, %v", weird, v.D, err)
	}
}
