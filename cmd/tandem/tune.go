package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/tuning"
	"github.com/tandemhq/tandem/uring"
)

const tuneText = `Reads this machine's NUMA nodes, cores and SMT siblings from sysfs and
writes configurations for ` + "`tandem serve --config`" + `: which cores run the event
loops, where the journal flusher and the replication sender run, memory
placement, ring and buffer sizes. Every choice is explained in a comment
above its key; see docs/tuning.md.

An instance keeps one journal. With several NUMA nodes the default layout,
per-node, plans one instance per node: its loops, flusher and replication
sender on that node's cores, journal in DATA/nodeN, name NAME-nodeN, client
port (and replication port, with --repl-listen) the base port plus N.
--layout single plans one instance over all nodes, with one journal whose
flusher is on node 0. With one node both give the same single config.

Output: one config goes to standard output, or to FILE with -o FILE. With
one config per node, standard output has each preceded by a line
"# ==== node N: tandem serve --config tandem-nodeN.toml ====": the
concatenation is not one TOML file (its keys repeat), so split it or use
-o. -o FILE writes one file per node, FILE with -nodeN inserted before its
extension (tandem.toml: tandem-node0.toml, tandem-node1.toml, ...), and
names each file written on standard error. --node N prints or writes node
N's config alone.

On the real /sys the plan is limited to the CPUs this process may run on
(taskset, cgroup cpusets) and says whether io_uring is usable here.
`

func runTune(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("tune", "[flags]", tuneText, stderr)
	sysfs := fs.String("sysfs", "/sys", "read the topology from `DIR` (same layout as /sys)")
	out := fs.String("o", "", "write the configuration to `FILE` (per node: FILE with -nodeN before its extension) instead of standard output")
	data := fs.String("data", "data", "journal `DIR` (per-node instances: DIR/nodeN)")
	layoutFlag := fs.String("layout", string(tuning.PerNode), "`per-node` (one instance per NUMA node) or single (one instance over all nodes)")
	nodeFlag := fs.String("node", "", "print or write only NUMA node `N`'s config (per-node layout; default: every node's)")
	name := fs.String("name", "", "instance `NAME`; per-node instances are NAME-nodeN (default: the host name; a single config names none unless given)")
	listen := fs.String("listen", "", "client address `ADDR`; per-node instances listen on its port plus the node number (default "+tuning.DefaultListen+"; a single config has none unless given)")
	replListen := fs.String("repl-listen", "", "replication address `ADDR`; per-node instances listen on its port plus the node number (default: none)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	layout, err := tuning.ParseLayout(*layoutFlag)
	if err != nil {
		fmt.Fprintf(stderr, "tandem tune: --layout: %v\n", err)
		return 2
	}
	node := -1
	if *nodeFlag != "" {
		if node, err = strconv.Atoi(*nodeFlag); err != nil || node < 0 {
			fmt.Fprintf(stderr, "tandem tune: --node %q is not a node number\n", *nodeFlag)
			return 2
		}
	}
	topo, err := tuning.ReadTopology(*sysfs)
	if err != nil {
		fmt.Fprintf(stderr, "tandem tune: %v\n", err)
		return 1
	}
	real := filepath.Clean(*sysfs) == "/sys"
	if real {
		// Plan only on the CPUs we may use: a plan naming others would fail
		// at start-up (poll.CheckCPUs).
		if allowed, err := poll.AllowedCPUs(); err == nil {
			if topo, err = topo.Restrict(allowed); err != nil {
				fmt.Fprintf(stderr, "tandem tune: %v\n", err)
				return 1
			}
		}
	}
	opts := tuning.Options{Layout: layout, DataDir: *data, Name: *name, Listen: *listen, ReplListen: *replListen}
	if opts.Name == "" && len(topo.Nodes) > 1 && layout == tuning.PerNode {
		opts.Name = hostName()
	}
	plans, err := tuning.Compute(topo, opts)
	if err != nil {
		fmt.Fprintf(stderr, "tandem tune: %v\n", err)
		return 1
	}
	if node >= 0 {
		if plans, err = selectNode(plans, topo, node); err != nil {
			fmt.Fprintf(stderr, "tandem tune: --node: %v\n", err)
			return 2
		}
	}
	if real {
		note := "io_uring is usable here; engine = \"auto\" will use it."
		if err := uring.Available(); err != nil {
			note = fmt.Sprintf("io_uring is not usable here (%v); engine = \"auto\" will run on epoll.", err)
		}
		for _, p := range plans {
			p.Notes = append(p.Notes, note)
		}
	}

	if *out == "" {
		for i, p := range plans {
			if len(plans) > 1 {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				fmt.Fprintf(stdout, "# ==== node %d: tandem serve --config %s ====\n", p.Node, configFile("tandem.toml", p))
			}
			fmt.Fprint(stdout, p.TOML(*sysfs))
		}
		return 0
	}
	for _, p := range plans {
		file := configFile(*out, p)
		if err := os.WriteFile(file, []byte(p.TOML(*sysfs)), 0o644); err != nil {
			fmt.Fprintf(stderr, "tandem tune: %v\n", err)
			return 1
		}
		what := ""
		if p.PerNode() {
			what = fmt.Sprintf("node %d, %s, ", p.Node, p.Listen)
		}
		fmt.Fprintf(stderr, "tandem tune: wrote %s (%s%d loops on cpus %v)\n", file, what, p.Loops, p.LoopCPUs)
	}
	return 0
}

// selectNode keeps the plan of one node. On a machine with one node its
// single plan is that node's.
func selectNode(plans []*tuning.Plan, topo *tuning.Topology, node int) ([]*tuning.Plan, error) {
	var ids []string
	for _, n := range topo.Nodes {
		ids = append(ids, strconv.Itoa(n.ID))
	}
	if !slices.Contains(ids, strconv.Itoa(node)) {
		return nil, fmt.Errorf("no NUMA node %d with usable CPUs here (nodes: %s)", node, strings.Join(ids, ", "))
	}
	if len(topo.Nodes) == 1 {
		return plans, nil
	}
	for _, p := range plans {
		if p.Node == node {
			return []*tuning.Plan{p}, nil
		}
	}
	return nil, fmt.Errorf("the single layout is one instance over all %d nodes; --node selects a config of --layout per-node", len(topo.Nodes))
}

// configFile names a plan's file: path itself for a single config, else
// path with -nodeN inserted before its extension.
func configFile(path string, p *tuning.Plan) string {
	if !p.PerNode() {
		return path
	}
	ext := filepath.Ext(path)
	return fmt.Sprintf("%s-node%d%s", strings.TrimSuffix(path, ext), p.Node, ext)
}

// hostName is the base of per-node instance names, as serve defaults its
// name to the host name.
func hostName() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return tuning.DefaultName
}
