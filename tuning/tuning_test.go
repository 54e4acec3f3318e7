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

// plans computes the plans of a layout for a fake sysfs tree and checks
// each rendered file against its plan.
func plans(t *testing.T, root string, opts Options) ([]*Plan, []string) {
	t.Helper()
	topo, err := ReadTopology(root)
	if err != nil {
		t.Fatal(err)
	}
	if opts.DataDir == "" {
		opts.DataDir = "/var/lib/tandem"
	}
	ps, err := Compute(topo, opts)
	if err != nil {
		t.Fatal(err)
	}
	var outs []string
	for _, p := range ps {
		out := p.TOML(root)
		checkTOML(t, p, out)
		outs = append(outs, out)
	}
	return ps, outs
}

// plan is plans for a layout that must give one plan.
func plan(t *testing.T, root string) (*Plan, string) {
	t.Helper()
	ps, outs := plans(t, root, Options{Layout: Single})
	if len(ps) != 1 {
		t.Fatalf("single layout gave %d plans", len(ps))
	}
	return ps[0], outs[0]
}

// checkTOML decodes the rendered file and compares it with the plan.
func checkTOML(t *testing.T, p *Plan, out string) {
	t.Helper()
	var got struct {
		Name            string `toml:"name"`
		Listen          string `toml:"listen"`
		ReplListen      string `toml:"repl-listen"`
		ReplSecretFile  string `toml:"repl-secret-file"`
		Engine          string `toml:"engine"`
		Loops           int    `toml:"loops"`
		Pin             bool   `toml:"pin"`
		CPUs            string `toml:"cpus"`
		MemoryPlacement string `toml:"memory-placement"`
		FlusherCPUs     string `toml:"flusher-cpus"`
		ReplCPUs        string `toml:"repl-cpus"`
		Data            string `toml:"data"`
		RingEntries     int    `toml:"ring-entries"`
		ReadBuffer      int    `toml:"read-buffer"`
		WriteHighWater  int    `toml:"write-high-water"`
	}
	md, err := toml.Decode(out, &got)
	if err != nil {
		t.Fatalf("rendered TOML does not parse: %v\n%s", err, out)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("keys not in Keys: %v", u)
	}
	if got.Name != p.Name || got.Listen != p.Listen || got.ReplListen != p.ReplListen ||
		got.ReplSecretFile != p.ReplSecretFile || (p.ReplListen != "") != (got.ReplSecretFile == DefaultReplSecretFile) ||
		got.Engine != "auto" || got.Loops != p.Loops || got.Pin != p.Pin || got.CPUs != joinCPUs(p.LoopCPUs) ||
		got.MemoryPlacement != MemoryFirstTouch || got.MemoryPlacement != p.MemoryPlacement ||
		got.FlusherCPUs != joinCPUs(p.FlusherCPUs) || got.ReplCPUs != joinCPUs(p.ReplCPUs) || got.Data != p.Data ||
		got.RingEntries != p.RingEntries || got.ReadBuffer != p.ReadBuffer || got.WriteHighWater != p.WriteHighWater {
		t.Fatalf("TOML says %+v, plan says %+v", got, p)
	}
	if strings.Contains(out, "journal-dirs") {
		t.Fatalf("journal-dirs written:\n%s", out)
	}
	for _, k := range Keys {
		i := strings.Index(out, "\n"+k.Name+" = ")
		if i < 0 {
			if k.Optional {
				continue
			}
			t.Fatalf("key %s missing", k.Name)
		}
		if !strings.HasPrefix(strings.TrimSpace(out[strings.LastIndex(out[:i], "\n\n")+1:i]), "#") {
			t.Fatalf("key %s has no comment above it", k.Name)
		}
	}
	if got.Loops != len(p.LoopCPUs) || got.Loops < 1 || len(p.FlusherCPUs) != 1 || len(p.ReplCPUs) != 1 {
		t.Fatalf("loops %d for cpus %v; flusher %v repl %v", got.Loops, p.LoopCPUs, p.FlusherCPUs, p.ReplCPUs)
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

// checkPlacement checks what every plan must hold: no loop shares a
// physical core with another loop or with the reserved flusher and
// replication cores (unless the instance has a single core), and the
// plans of one machine use disjoint CPUs.
func checkPlacement(t *testing.T, ps []*Plan) {
	t.Helper()
	used := map[int]int{}
	for i, p := range ps {
		topo := p.Topology
		reserved := siblingsOf(topo, slices.Concat(p.FlusherCPUs, p.ReplCPUs))
		cores := map[string]bool{}
		for _, c := range p.LoopCPUs {
			if reserved[c] && len(topo.Cores) > 1 {
				t.Errorf("plan %d: loop cpu %d is on a reserved core", i, c)
			}
			k := FormatCPUList(topo.CPUs[c].Threads)
			if cores[k] {
				t.Errorf("plan %d: two loops on core %s", i, k)
			}
			cores[k] = true
			if topo.CPUs[c].Threads[0] != c {
				t.Errorf("plan %d: loop on cpu %d, not its core's first thread", i, c)
			}
		}
		for _, c := range p.AllCPUs() {
			if j, dup := used[c]; dup && j != i {
				t.Errorf("cpu %d in plans %d and %d", c, j, i)
			}
			used[c] = i
		}
	}
}

func TestOneNodeTwoCores(t *testing.T) {
	root := writeSysfs(t, machine{nodes: 1, coresPerNode: 2, threads: 1, memPerNode: 8 << 30})
	p, out := plan(t, root)
	if p.Loops != 1 || !slices.Equal(p.LoopCPUs, []int{1}) || !slices.Equal(p.FlusherCPUs, []int{0}) ||
		!slices.Equal(p.ReplCPUs, []int{0}) || !p.Pin || p.Node != -1 || p.Data != "/var/lib/tandem" {
		t.Fatalf("plan %+v", p)
	}
	for _, want := range []string{"Two physical cores", `loops = 2 and cpus = "0,1"`, `cpus = "1"`, `flusher-cpus = "0"`,
		"1 NUMA node(s), 2 physical core(s)", `memory-placement = "first-touch"`, "MPOL_LOCAL"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, absent := range []string{"journal-dirs", "\nname =", "\nlisten =", "repl-listen =", "Layout", "Instance 1 of"} {
		if strings.Contains(out, absent) {
			t.Errorf("one node, but the output has %q", absent)
		}
	}
	// With one node, per-node (the default) gives the same single config.
	ps, outs := plans(t, root, Options{})
	if len(ps) != 1 || outs[0] != out {
		t.Fatalf("per-node on one node: %d plans, differs from single: %v", len(ps), outs[0] != out)
	}
	checkPlacement(t, ps)
	t.Logf("\n%s", out)
}

func TestTwoNodesSixteenCoresSMT(t *testing.T) {
	m := machine{nodes: 2, coresPerNode: 8, threads: 2, memPerNode: 64 << 30}
	root := writeSysfs(t, m)
	ps, outs := plans(t, root, Options{ReplListen: "10.0.0.1:7500"})
	topo := ps[0].Machine
	if len(topo.Nodes) != 2 || len(topo.Cores) != 16 || len(topo.Online) != 32 || !topo.SMT() {
		t.Fatalf("topology: %v", topo.Summary())
	}
	if len(ps) != 2 {
		t.Fatalf("%d plans, want one per node", len(ps))
	}
	checkPlacement(t, ps)
	for n, p := range ps {
		if p.Node != n || p.Index != n || p.Instances != 2 || p.Loops != 7 {
			t.Fatalf("node %d: node %d index %d/%d, %d loops (want 7: 8 cores minus the reserved one)", n, p.Node, p.Index, p.Instances, p.Loops)
		}
		if f, r := m.cpu(n, 0, 0), m.cpu(n, 0, 1); !slices.Equal(p.FlusherCPUs, []int{f}) || !slices.Equal(p.ReplCPUs, []int{r}) {
			t.Fatalf("node %d: flusher %v repl %v, want %d and its sibling %d", n, p.FlusherCPUs, p.ReplCPUs, f, r)
		}
		want := fmt.Sprintf("node%d", n)
		if p.Name != "tandem-"+want || p.Data != "/var/lib/tandem/"+want ||
			p.Listen != fmt.Sprintf("127.0.0.1:%d", 7400+n) || p.ReplListen != fmt.Sprintf("10.0.0.1:%d", 7500+n) {
			t.Fatalf("node %d: name %q data %q listen %q repl-listen %q", n, p.Name, p.Data, p.Listen, p.ReplListen)
		}
		for _, want := range []string{fmt.Sprintf("Instance %d of 2 (layout per-node): NUMA node %d", n+1, n),
			"Layout per-node", "single total order", "node 1: cpus 8-15,24-31, 8 core(s), 64.0 GiB", "SMT sibling"} {
			if !strings.Contains(strings.ReplaceAll(outs[n], "\n# ", " "), want) {
				t.Errorf("node %d: output lacks %q", n, want)
			}
		}
	}
	if !strings.Contains(outs[1], `cpus = "9,10,11,12,13,14,15"`) || !strings.Contains(outs[1], `repl-cpus = "24"`) {
		t.Errorf("node 1:\n%s", outs[1])
	}
	t.Logf("\n%s", outs[1])

	// Single: one instance, one journal, flusher on node 0; every other
	// core (node 1's first included) runs a loop.
	p, out := plan(t, root)
	if p.Loops != 15 || !slices.Equal(p.FlusherCPUs, []int{0}) || !slices.Equal(p.ReplCPUs, []int{16}) ||
		p.Data != "/var/lib/tandem" || p.Node != -1 || p.Name != "" || p.Listen != "" {
		t.Fatalf("single: %+v", p)
	}
	checkPlacement(t, []*Plan{p})
	flat := strings.ReplaceAll(out, "\n# ", " ")
	for _, want := range []string{"Layout single", "cross-node appends", "on every node", `cpus = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15"`} {
		if !strings.Contains(flat, want) {
			t.Errorf("single: output lacks %q:\n%s", want, out)
		}
	}
}

// TestLayouts checks the per-node invariants on 1, 2 and 4 nodes: each
// instance's loops, flusher and replication sender are on its node, and
// names, ports and journal directories are distinct.
func TestLayouts(t *testing.T) {
	for _, m := range []machine{
		{nodes: 1, coresPerNode: 4, threads: 2},
		{nodes: 2, coresPerNode: 4, threads: 1},
		{nodes: 2, coresPerNode: 1, threads: 1},
		{nodes: 2, coresPerNode: 1, threads: 2},
		{nodes: 4, coresPerNode: 16, threads: 1},
		{nodes: 4, coresPerNode: 3, threads: 2, memPerNode: 2 << 30},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d", m.nodes, m.coresPerNode, m.threads), func(t *testing.T) {
			root := writeSysfs(t, m)
			ps, _ := plans(t, root, Options{Layout: PerNode, Listen: "0.0.0.0:9000", ReplListen: ":9100", Name: "q"})
			if len(ps) != m.nodes {
				t.Fatalf("%d plans for %d nodes", len(ps), m.nodes)
			}
			checkPlacement(t, ps)
			seen := map[string]bool{}
			for _, p := range ps {
				if m.nodes == 1 {
					// today's single config: names and ports only as given
					if p.Node != -1 || p.Name != "q" || p.Listen != "0.0.0.0:9000" || p.ReplListen != ":9100" {
						t.Fatalf("one node: %+v", p)
					}
					continue
				}
				for _, c := range slices.Concat(p.LoopCPUs, p.FlusherCPUs, p.ReplCPUs) {
					if n := p.Machine.CPUs[c].Node; n != p.Node {
						t.Errorf("instance of node %d uses cpu %d of node %d", p.Node, c, n)
					}
				}
				if !p.Pin {
					t.Errorf("node %d: not pinned", p.Node)
				}
				for _, v := range []string{p.Name, p.Listen, p.ReplListen, p.Data} {
					if seen[v] {
						t.Errorf("%q used by two instances", v)
					}
					seen[v] = true
				}
				if p.Listen != fmt.Sprintf("0.0.0.0:%d", 9000+p.Node) || p.ReplListen != fmt.Sprintf(":%d", 9100+p.Node) ||
					p.Name != fmt.Sprintf("q-node%d", p.Node) || p.Data != fmt.Sprintf("/var/lib/tandem/node%d", p.Node) {
					t.Errorf("node %d: %q %q %q %q", p.Node, p.Name, p.Listen, p.ReplListen, p.Data)
				}
				if m.memPerNode > 0 && p.ReadBuffer != smallReadBuffer {
					t.Errorf("node %d: 2 GiB node but read-buffer %d", p.Node, p.ReadBuffer)
				}
			}
			// Single: one plan over every CPU, one flusher, on the first node.
			sp, _ := plan(t, root)
			checkPlacement(t, []*Plan{sp})
			if n := sp.Machine.CPUs[sp.FlusherCPUs[0]].Node; n != 0 {
				t.Errorf("single: flusher on node %d", n)
			}
			if m.coresPerNode*m.nodes > 1 && sp.Loops != m.nodes*m.coresPerNode-1 {
				t.Errorf("single: %d loops for %d cores", sp.Loops, m.nodes*m.coresPerNode)
			}
		})
	}
}

func TestLayoutErrors(t *testing.T) {
	if l, err := ParseLayout(""); err != nil || l != PerNode {
		t.Fatalf("default layout %q, %v", l, err)
	}
	if _, err := ParseLayout("per-socket"); err == nil || !strings.Contains(err.Error(), `unknown layout "per-socket" (want per-node or single)`) {
		t.Fatalf("bad layout: %v", err)
	}
	topo, err := ReadTopology(writeSysfs(t, machine{nodes: 2, coresPerNode: 2, threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Compute(topo, Options{Layout: "numa"}); err == nil || !strings.Contains(err.Error(), "unknown layout") {
		t.Fatalf("Compute with a bad layout: %v", err)
	}
	for _, tc := range []struct{ listen, repl, want string }{
		{"localhost:http", "", "numeric base port"},
		{"127.0.0.1", "", "missing port"},
		{"127.0.0.1:65535", "", "port 65536 for node 1 is above 65535"},
		{"", "[::1]:0", "repl-listen"},
	} {
		if _, err := Compute(topo, Options{Listen: tc.listen, ReplListen: tc.repl}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("listen %q repl %q: error %v, want %q", tc.listen, tc.repl, err, tc.want)
		}
	}
	// One node: addresses are written as given, never numbered.
	one, err := ReadTopology(writeSysfs(t, machine{nodes: 1, coresPerNode: 2, threads: 1}))
	if err != nil {
		t.Fatal(err)
	}
	if ps, err := Compute(one, Options{Listen: "localhost:http"}); err != nil || ps[0].Listen != "localhost:http" {
		t.Fatalf("one node: %v", err)
	}
}

func TestFourNodesSixtyFourCores(t *testing.T) {
	root := writeSysfs(t, machine{nodes: 4, coresPerNode: 16, threads: 1})
	ps, outs := plans(t, root, Options{})
	if len(ps) != 4 {
		t.Fatalf("%d plans", len(ps))
	}
	for n, p := range ps {
		if p.Loops != 15 || !slices.Equal(p.FlusherCPUs, []int{16 * n}) || !slices.Equal(p.ReplCPUs, p.FlusherCPUs) {
			t.Fatalf("node %d: loops %d flusher %v repl %v", n, p.Loops, p.FlusherCPUs, p.ReplCPUs)
		}
		if len(p.Notes) != 2 || !strings.HasPrefix(p.Notes[0], "Layout per-node") || !strings.Contains(p.Notes[1], "--repl-listen") {
			t.Fatalf("node %d: unexpected notes: %v", n, p.Notes)
		}
		if !strings.Contains(outs[n], "4 NUMA node(s), 64 physical core(s)") {
			t.Fatal(outs[n])
		}
	}
	p, _ := plan(t, root)
	if p.Loops != 63 || !slices.Equal(p.FlusherCPUs, []int{0}) {
		t.Fatalf("single: loops %d flusher %v", p.Loops, p.FlusherCPUs)
	}
}

func TestNodeWithOneCPU(t *testing.T) {
	ps, outs := plans(t, writeSysfs(t, machine{nodes: 2, coresPerNode: 1, threads: 1}), Options{})
	for n, p := range ps {
		if !p.Pin || !slices.Equal(p.LoopCPUs, []int{n}) || !slices.Equal(p.FlusherCPUs, []int{n}) ||
			!strings.Contains(outs[n], "Pinning stays on") {
			t.Fatalf("node %d: %+v", n, p)
		}
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
	for _, layout := range []Layout{PerNode, Single} {
		ps, err := Compute(topo, Options{Layout: layout})
		if err != nil {
			t.Fatal(err)
		}
		checkPlacement(t, ps)
		for _, p := range ps {
			checkTOML(t, p, p.TOML("/sys"))
			for _, c := range p.AllCPUs() {
				if _, ok := topo.CPUs[c]; !ok {
					t.Fatalf("plan names cpu %d, not online", c)
				}
			}
			t.Logf("this machine, %s: %v; node %d: loops on %v, flusher %v", layout, topo.Summary(), p.Node, p.LoopCPUs, p.FlusherCPUs)
		}
	}
}

func TestQuote(t *testing.T) {
	var v struct{ D string }
	weird := "dir \"with\" \\ and\ttab"
	if _, err := toml.Decode("D = "+quote(weird), &v); err != nil || v.D != weird {
		t.Fatalf("%q -> %q, %v", weird, v.D, err)
	}
}
