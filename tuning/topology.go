package tuning

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// CPU is one logical CPU (a hardware thread).
type CPU struct {
	ID      int
	Node    int
	Package int   // physical_package_id (socket)
	CoreID  int   // core_id, unique within a package only
	Threads []int // the SMT siblings sharing this CPU's physical core, itself included
}

// Core is one physical core: the hardware threads that share it.
type Core struct {
	Node    int
	Package int
	Threads []int // sorted; Threads[0] is the core's first thread
}

// Node is one NUMA node and the online CPUs it holds.
type Node struct {
	ID       int
	CPUs     []int
	MemBytes int64 // MemTotal from the node's meminfo; 0 if unknown
}

// Topology is the machine as sysfs describes it, restricted to online CPUs.
type Topology struct {
	Online []int
	CPUs   map[int]*CPU
	Nodes  []Node // sorted by ID; one node 0 with every CPU on non-NUMA kernels
	Cores  []Core // sorted by node, then first thread
}

// ReadTopology reads the topology under a sysfs root ("/sys", or a copy of
// its layout for tests):
//
//	devices/system/cpu/online
//	devices/system/cpu/cpuN/topology/{core_id,physical_package_id,core_cpus_list|thread_siblings_list}
//	devices/system/node/nodeN/{cpulist,meminfo}
func ReadTopology(sysfsRoot string) (*Topology, error) {
	t, err := ReadTopologyFS(os.DirFS(sysfsRoot))
	if err != nil {
		return nil, fmt.Errorf("%w (sysfs root %s)", err, sysfsRoot)
	}
	return t, nil
}

// ReadTopologyFS is ReadTopology on a file system rooted at the sysfs root.
func ReadTopologyFS(fsys fs.FS) (*Topology, error) {
	onlineText, err := readFile(fsys, "devices/system/cpu/online")
	if err != nil {
		return nil, err
	}
	online, err := parseListFile("devices/system/cpu/online", onlineText)
	if err != nil {
		return nil, err
	}
	if len(online) == 0 {
		return nil, errors.New("tuning: devices/system/cpu/online lists no CPU")
	}
	t := &Topology{Online: online, CPUs: make(map[int]*CPU, len(online))}
	isOnline := make(map[int]bool, len(online))
	for _, c := range online {
		isOnline[c] = true
	}

	nodeDirs, err := fs.Glob(fsys, "devices/system/node/node*")
	if err != nil {
		return nil, fmt.Errorf("tuning: %w", err)
	}
	nodeOf := make(map[int]int)
	for _, dir := range nodeDirs {
		id, err := strconv.Atoi(strings.TrimPrefix(path.Base(dir), "node"))
		if err != nil {
			continue // not a node directory
		}
		name := dir + "/cpulist"
		text, err := readFile(fsys, name)
		if err != nil {
			return nil, err
		}
		cpus, err := parseListFile(name, text)
		if err != nil {
			return nil, err
		}
		n := Node{ID: id}
		for _, c := range cpus {
			if prev, dup := nodeOf[c]; dup {
				return nil, fmt.Errorf("tuning: %s: cpu %d is also in node %d", name, c, prev)
			}
			nodeOf[c] = id
			if isOnline[c] {
				n.CPUs = append(n.CPUs, c)
			}
		}
		n.MemBytes = nodeMemTotal(fsys, dir+"/meminfo")
		if len(n.CPUs) > 0 {
			t.Nodes = append(t.Nodes, n)
		}
	}
	if len(t.Nodes) == 0 { // a kernel without NUMA: one node holds everything
		t.Nodes = []Node{{ID: 0, CPUs: online}}
		for _, c := range online {
			nodeOf[c] = 0
		}
	}
	slices.SortFunc(t.Nodes, func(a, b Node) int { return a.ID - b.ID })

	for _, c := range online {
		node, ok := nodeOf[c]
		if !ok {
			return nil, fmt.Errorf("tuning: online cpu %d is in no node's cpulist", c)
		}
		cpu, err := readCPU(fsys, c)
		if err != nil {
			return nil, err
		}
		cpu.Node = node
		t.CPUs[c] = cpu
	}
	t.Cores = groupCores(t)
	return t, nil
}

func readCPU(fsys fs.FS, id int) (*CPU, error) {
	dir := fmt.Sprintf("devices/system/cpu/cpu%d/topology", id)
	cpu := &CPU{ID: id}
	var err error
	if cpu.CoreID, err = readInt(fsys, dir+"/core_id"); err != nil {
		return nil, err
	}
	if cpu.Package, err = readInt(fsys, dir+"/physical_package_id"); err != nil {
		return nil, err
	}
	// core_cpus_list is the current name (Linux 5.2+); thread_siblings_list
	// the older one, kept as an alias.
	name := dir + "/core_cpus_list"
	text, err := readFile(fsys, name)
	if errors.Is(err, fs.ErrNotExist) {
		name = dir + "/thread_siblings_list"
		text, err = readFile(fsys, name)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		cpu.Threads = []int{id}
	case err != nil:
		return nil, err
	default:
		if cpu.Threads, err = parseListFile(name, text); err != nil {
			return nil, err
		}
		if !slices.Contains(cpu.Threads, id) {
			return nil, fmt.Errorf("tuning: %s: %q does not include cpu %d itself", name, strings.TrimSpace(text), id)
		}
	}
	return cpu, nil
}

// groupCores folds online CPUs into physical cores by their sibling sets.
func groupCores(t *Topology) []Core {
	seen := make(map[string]bool)
	var cores []Core
	for _, c := range t.Online {
		cpu := t.CPUs[c]
		var threads []int
		for _, s := range cpu.Threads {
			if _, ok := t.CPUs[s]; ok { // only online siblings
				threads = append(threads, s)
			}
		}
		key := FormatCPUList(threads)
		if seen[key] {
			continue
		}
		seen[key] = true
		cores = append(cores, Core{Node: cpu.Node, Package: cpu.Package, Threads: threads})
	}
	slices.SortFunc(cores, func(a, b Core) int {
		if a.Node != b.Node {
			return a.Node - b.Node
		}
		return a.Threads[0] - b.Threads[0]
	})
	return cores
}

// SMT reports whether any core has more than one online thread.
func (t *Topology) SMT() bool {
	for _, c := range t.Cores {
		if len(c.Threads) > 1 {
			return true
		}
	}
	return false
}

// CoresOf returns the physical cores of a node.
func (t *Topology) CoresOf(node int) []Core {
	var out []Core
	for _, c := range t.Cores {
		if c.Node == node {
			out = append(out, c)
		}
	}
	return out
}

// Restrict keeps only the given CPUs (the process's affinity mask), as if
// the others were offline.
func (t *Topology) Restrict(allowed []int) (*Topology, error) {
	ok := make(map[int]bool, len(allowed))
	for _, c := range allowed {
		ok[c] = true
	}
	r := &Topology{CPUs: make(map[int]*CPU)}
	for _, c := range t.Online {
		if ok[c] {
			r.Online = append(r.Online, c)
			r.CPUs[c] = t.CPUs[c]
		}
	}
	if len(r.Online) == 0 {
		return nil, fmt.Errorf("tuning: none of the allowed cpus %s is online (online: %s)", FormatCPUList(allowed), FormatCPUList(t.Online))
	}
	for _, n := range t.Nodes {
		m := Node{ID: n.ID, MemBytes: n.MemBytes}
		for _, c := range n.CPUs {
			if ok[c] {
				m.CPUs = append(m.CPUs, c)
			}
		}
		if len(m.CPUs) > 0 {
			r.Nodes = append(r.Nodes, m)
		}
	}
	r.Cores = groupCores(r)
	return r, nil
}

func readFile(fsys fs.FS, name string) (string, error) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return "", fmt.Errorf("tuning: %w", err)
	}
	return string(b), nil
}

func parseListFile(name, text string) ([]int, error) {
	cpus, err := ParseCPUList(text)
	if err != nil {
		return nil, fmt.Errorf("tuning: %s: %w", name, err)
	}
	return cpus, nil
}

func readInt(fsys fs.FS, name string) (int, error) {
	text, err := readFile(fsys, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(text))
	if err != nil {
		return 0, fmt.Errorf("tuning: %s: %q is not an integer", name, strings.TrimSpace(text))
	}
	return n, nil
}

// nodeMemTotal reads "Node 0 MemTotal:  16384 kB" from a node's meminfo;
// 0 when absent or unreadable (it only informs comments).
func nodeMemTotal(fsys fs.FS, name string) int64 {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[2] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[3], 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
