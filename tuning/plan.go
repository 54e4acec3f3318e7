package tuning

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Defaults the plan starts from; they match the engine's own defaults.
const (
	DefaultRingEntries    = 1024
	DefaultReadBuffer     = 64 << 10
	DefaultWriteHighWater = 1 << 20
	// DefaultListen is serve's client address; per-node instances number
	// their ports from it.
	DefaultListen = "127.0.0.1:7400"
	// DefaultName is the base of per-node instance names when none is given.
	DefaultName = "tandem"
	// MemoryFirstTouch and MemoryOff are the values of memory-placement.
	MemoryFirstTouch = "first-touch"
	MemoryOff        = "off"

	smallReadBuffer     = 16 << 10
	smallWriteHighWater = 256 << 10
	// smallNodeMem: below this much memory per node, per-connection
	// buffers are sized down.
	smallNodeMem = 4 << 30
	// planConns is the connection count the memory comments are worked out for.
	planConns = 10000
)

// Layout says how a machine with several NUMA nodes is divided into
// Tandem instances. With one node both layouts give the same single plan.
type Layout string

const (
	// PerNode (the default) plans one instance per NUMA node: its loops,
	// journal flusher and replication sender on that node's cores, its own
	// journal directory, name, client port and replication port.
	PerNode Layout = "per-node"
	// Single plans one instance over every node, with one journal whose
	// flusher runs on the first node.
	Single Layout = "single"
)

// ParseLayout reads a layout name; "" is PerNode.
func ParseLayout(s string) (Layout, error) {
	switch l := Layout(s); l {
	case PerNode, Single:
		return l, nil
	case "":
		return PerNode, nil
	}
	return "", fmt.Errorf("tuning: unknown layout %q (want %s or %s)", s, PerNode, Single)
}

// Options are the operator's inputs to Compute.
type Options struct {
	// Layout: PerNode (default) or Single.
	Layout Layout
	// DataDir is the journal directory (the serve `data` key); per-node
	// instances each get <DataDir>/node<N>. Default "data".
	DataDir string
	// Name is the instance name. A single plan writes it only when set
	// (serve then defaults to the host name); per-node instances are named
	// <Name>-node<N>, with DefaultName when empty.
	Name string
	// Listen is the client address. A single plan writes it only when set;
	// per-node instances listen on its port plus the node number
	// (DefaultListen when empty).
	Listen string
	// ReplListen is the replication address, written only when set;
	// per-node instances listen on its port plus the node number.
	ReplListen string
}

// DefaultReplSecretFile is the repl-secret-file a plan with a
// replication listener names. Make it on every instance of a replication
// group with the same content:
//
//	head -c 32 /dev/urandom | base64 > /etc/tandem/repl-secret && chmod 0400 /etc/tandem/repl-secret
const DefaultReplSecretFile = "/etc/tandem/repl-secret"

// Plan is one Tandem instance: where its threads should run, how big its
// rings and buffers should be, and (per node) its name, ports and journal
// directory. Render it with TOML.
type Plan struct {
	// Machine is the whole machine as read (the file's header describes it).
	Machine *Topology
	// Topology is what this instance runs on: one node of Machine (per-node
	// layout) or all of it.
	Topology *Topology
	// Layout is the layout asked for; Node is the NUMA node the instance
	// belongs to, -1 when it spans the machine (single layout, or a
	// machine with one node). Index and Instances number the plans
	// Compute returned (Index from 0).
	Layout           Layout
	Node             int
	Index, Instances int

	Name       string // "" when not written (serve's default, the host name)
	Listen     string // "" when not written (serve's default)
	ReplListen string // "" when not written (no replication listener)
	// ReplSecretFile is written with ReplListen: the shared secret that
	// authenticates replication links (DefaultReplSecretFile; serve
	// refuses a non-loopback repl-listen without one, and a file
	// readable by group or others).
	ReplSecretFile string

	Engine          string
	Loops           int
	Pin             bool
	LoopCPUs        []int // one per loop
	MemoryPlacement string
	FlusherCPUs     []int  // the journal flusher (one entry)
	ReplCPUs        []int  // the replication sender (one entry)
	Data            string // the serve `data` key: this instance's one journal
	RingEntries     int
	ReadBuffer      int
	WriteHighWater  int

	// Notes are remarks about the instance as a whole (the layout,
	// compromises made).
	Notes []string
	// why holds the comment written above each key.
	why map[string]string
}

// Compute derives the plans of a layout from a topology: one per NUMA node
// (PerNode on a machine with several nodes), else one for the whole
// machine. Each plan is one instance with one journal.
//
// Policy, per instance: the first physical core of its CPUs (on node 0 for
// a single instance over several nodes) is reserved for its journal flusher
// (that core's first thread) and replication sender (its SMT sibling if it
// has one, else the same thread); every other physical core runs one event
// loop on its first thread. SMT siblings of loop cores stay free, for the
// Go runtime, the kernel's softirqs and interrupts: two loops on one
// physical core would compete for its execution units and caches. An
// instance with a single physical core gives it to a loop and shares it
// with the flusher (a compromise the plan states).
func Compute(t *Topology, opts Options) ([]*Plan, error) {
	if t == nil || len(t.Cores) == 0 || len(t.Nodes) == 0 {
		return nil, fmt.Errorf("tuning: empty topology")
	}
	layout, err := ParseLayout(string(opts.Layout))
	if err != nil {
		return nil, err
	}
	if opts.DataDir == "" {
		opts.DataDir = "data"
	}
	if layout == Single || len(t.Nodes) == 1 {
		p := newPlan(t, t, layout, -1)
		p.Name, p.Listen, p.ReplListen, p.Data = opts.Name, opts.Listen, opts.ReplListen, opts.DataDir
		p.finish()
		p.Instances = 1
		return []*Plan{p}, nil
	}
	name, listen := opts.Name, opts.Listen
	if name == "" {
		name = DefaultName
	}
	if listen == "" {
		listen = DefaultListen
	}
	var plans []*Plan
	for _, n := range t.Nodes {
		sub, err := t.Restrict(n.CPUs)
		if err != nil {
			return nil, err
		}
		p := newPlan(t, sub, layout, n.ID)
		p.Index = len(plans)
		p.Name = fmt.Sprintf("%s-node%d", name, n.ID)
		p.Data = filepath.Join(opts.DataDir, fmt.Sprintf("node%d", n.ID))
		if p.Listen, err = addPort("listen", listen, n.ID); err != nil {
			return nil, err
		}
		if opts.ReplListen != "" {
			if p.ReplListen, err = addPort("repl-listen", opts.ReplListen, n.ID); err != nil {
				return nil, err
			}
		}
		p.finish()
		plans = append(plans, p)
	}
	for _, p := range plans {
		p.Instances = len(plans)
	}
	return plans, nil
}

func newPlan(machine, t *Topology, layout Layout, node int) *Plan {
	return &Plan{
		Machine: machine, Topology: t, Layout: layout, Node: node,
		Engine: "auto", Pin: true, MemoryPlacement: MemoryFirstTouch,
		RingEntries: DefaultRingEntries, ReadBuffer: DefaultReadBuffer, WriteHighWater: DefaultWriteHighWater,
		why: make(map[string]string),
	}
}

func (p *Plan) finish() {
	p.layoutNote()
	p.place()
	p.Loops = len(p.LoopCPUs)
	p.sizeBuffers()
	p.explain()
}

// PerNode reports whether the plan is one of several per-node instances.
func (p *Plan) PerNode() bool { return p.Node >= 0 }

// addPort adds n to the port of a host:port address.
func addPort(key, addr string, n int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("tuning: %s %q: %w", key, addr, err)
	}
	base, err := strconv.Atoi(port)
	if err != nil || base < 1 || base > 65535 {
		return "", fmt.Errorf("tuning: %s %q: per-node instances need a numeric base port (1-65535) to add the node number to", key, addr)
	}
	if base+n > 65535 {
		return "", fmt.Errorf("tuning: %s %q: port %d for node %d is above 65535", key, addr, base+n, n)
	}
	return net.JoinHostPort(host, strconv.Itoa(base+n)), nil
}

// layoutNote says what the layout is and what it costs, when the machine
// has several nodes.
func (p *Plan) layoutNote() {
	nodes := len(p.Machine.Nodes)
	if nodes < 2 {
		return
	}
	if p.PerNode() {
		p.Notes = append(p.Notes, fmt.Sprintf("Layout per-node: one instance per NUMA node (%d instances). This one is node %d's: "+
			"its event loops, journal flusher and replication sender run on node %d's cores, and it has its own journal "+
			"directory, name, client port and replication port. An instance keeps one journal because its single total order "+
			"is what sequence numbers, bookmarks, resume, replication positions and publisher de-duplication rest on; one "+
			"journal per node therefore means one instance per node. Partition topics across the instances (clients connect "+
			"to the one holding their topics) or replicate them to each other. `tandem tune --layout single` writes one "+
			"instance over all nodes instead.", nodes, p.Node, p.Node))
		if p.ReplListen == "" {
			p.Notes = append(p.Notes, "No repl-listen is planned: `tandem tune --repl-listen HOST:PORT` gives each instance "+
				"its own replication port, PORT plus the node number.")
		}
		return
	}
	first := p.Machine.Nodes[0].ID
	p.Notes = append(p.Notes, fmt.Sprintf("Layout single: one instance over all %d NUMA nodes with one journal, so one total "+
		"order across every topic. Its flusher and replication sender run on node %d, the first node (to move them to the "+
		"node nearest the journal's disk, change flusher-cpus and repl-cpus). The cost is cross-node appends: every loop's "+
		"append takes the journal's one lock and copies into its one staging buffer, so loops on the other nodes pay remote "+
		"memory and cache-line transfers on each append, their persisted acks wait for a flusher on another node, and their "+
		"subscribers read the journal across the interconnect. `tandem tune --layout per-node` writes one instance per "+
		"node instead, each with a node-local journal.", nodes, first))
}

// place places the instance's loops, flusher and replication sender.
func (p *Plan) place() {
	t := p.Topology
	if len(t.Online) == 1 {
		cpu := t.Online[0]
		p.LoopCPUs, p.FlusherCPUs, p.ReplCPUs = []int{cpu}, []int{cpu}, []int{cpu}
		if p.PerNode() {
			p.Notes = append(p.Notes, fmt.Sprintf(
				"Node %d has one CPU (%d): this instance's loop, flusher and replication sender share it; expect ack latency "+
					"to include waiting for the loop's time slice. Pinning stays on: it keeps the instance and its memory on node %d.",
				p.Node, cpu, p.Node))
		} else {
			p.Pin = false
			p.Notes = append(p.Notes, "One CPU: everything shares it, so pinning buys nothing and is off.")
		}
		return
	}
	cores := t.Cores // sorted by node: the reserved core is on the first node
	reserved := cores[0]
	flusher := reserved.Threads[0]
	repl := flusher
	if len(reserved.Threads) > 1 {
		repl = reserved.Threads[1]
	}
	loopCores := cores[1:]
	if len(loopCores) == 0 {
		// One physical core, with SMT (one CPU is handled above): the loop
		// takes the first thread and the flusher and replication its sibling.
		p.LoopCPUs = append(p.LoopCPUs, reserved.Threads[0])
		flusher, repl = reserved.Threads[1], reserved.Threads[1]
		p.Notes = append(p.Notes, fmt.Sprintf(
			"Node %d has one physical core: its loop runs on cpu %d and the flusher and replication on its SMT sibling cpu %d. Siblings share execution units, so a busy loop slows the flusher's wake-ups a little.",
			reserved.Node, reserved.Threads[0], flusher))
	} else {
		for _, c := range loopCores {
			p.LoopCPUs = append(p.LoopCPUs, c.Threads[0])
		}
		if len(cores) == 2 {
			p.Notes = append(p.Notes, twoCoreNote(flusher, loopCores[0].Threads[0], t.SMT()))
		}
	}
	p.FlusherCPUs = []int{flusher}
	p.ReplCPUs = []int{repl}
}

func twoCoreNote(shared, loop int, smt bool) string {
	s := fmt.Sprintf("Two physical cores cannot give the event loops, the journal flusher and replication a core each. "+
		"The plan runs one event loop on cpu %d and leaves cpu %d to the flusher, the replication senders, the Go runtime "+
		"(garbage collector) and the kernel's network softirqs. The flusher mostly waits in fdatasync, but its wake-up after "+
		"each sync is on every publisher's persisted-ack latency, so it must not queue behind a busy loop. If the broker is "+
		"network-bound rather than latency-bound, try loops = 2 and cpus = \"%d,%d\": up to twice the loop throughput, "+
		"paid for with flusher wake-ups (and so ack p99) waiting for a loop's time slice.", loop, shared, shared, loop)
	if smt {
		s += " SMT siblings are left unpinned."
	}
	return s
}

func (p *Plan) sizeBuffers() {
	minMem := int64(0)
	for _, n := range p.Topology.Nodes {
		if n.MemBytes > 0 && (minMem == 0 || n.MemBytes < minMem) {
			minMem = n.MemBytes
		}
	}
	if minMem > 0 && minMem < smallNodeMem {
		p.ReadBuffer, p.WriteHighWater = smallReadBuffer, smallWriteHighWater
	}
}

// explain writes the comment for each key.
func (p *Plan) explain() {
	t := p.Topology
	multiNode := len(p.Machine.Nodes) > 1
	if p.Name != "" {
		if p.PerNode() {
			p.why["name"] = fmt.Sprintf("Instance name, one per node (node %d here): clients see it on connecting and "+
				"replication peers address the instance by it, so the per-node instances must not share one.", p.Node)
		} else {
			p.why["name"] = "Instance name (clients see it on connecting; replication peers address the instance by it)."
		}
	}
	if p.Listen != "" {
		if p.PerNode() {
			p.why["listen"] = fmt.Sprintf("Client address: the base port plus the node number (%d), so each node's instance "+
				"has its own port. Give the base with `tandem tune --listen`, not `serve --listen`: a flag on the "+
				"command line would give every instance the same address.", p.Node)
		} else {
			p.why["listen"] = "Client address."
		}
	}
	if p.ReplListen != "" {
		p.ReplSecretFile = DefaultReplSecretFile
		p.why["repl-secret-file"] = "Shared secret authenticating replication links (the same file on every peer). Make it with " +
			"`head -c 32 /dev/urandom | base64 > " + DefaultReplSecretFile + " && chmod 0400 " + DefaultReplSecretFile + "`: " +
			"serve refuses a secret file readable by group or others, and a non-loopback repl-listen without a secret or TLS " +
			"(docs/security.md, \"Replication links\")."
		if p.PerNode() {
			p.why["repl-listen"] = fmt.Sprintf("Replication address where peers connect: the base port plus the node "+
				"number (%d), one per instance. Peers (the peer key) are not planned: each instance's depend on how "+
				"topics are partitioned or replicated between the instances and other machines.", p.Node)
		} else {
			p.why["repl-listen"] = "Replication address where peers connect (peers themselves are not planned)."
		}
	}
	p.why["engine"] = "auto: io_uring when the kernel allows it, else epoll; the choice and the reason are in the start-up log " +
		"and in `tandem stat`. Force \"epoll\" to rule the ring out when chasing a problem, or \"uring\" to fail instead of falling back."
	p.why["loops"] = fmt.Sprintf("One event loop (shard) per physical core not reserved below: %d. Each loop owns its connections, "+
		"its ring and its SO_REUSEPORT listener; more loops than cores only adds context switches.", p.Loops)
	if p.Pin {
		p.why["pin"] = "Pin each loop's thread to its core: its ring, buffers and connection state stay in that core's caches " +
			"and on its NUMA node. Costs nothing unless other work needs those cores; set false on a shared host."
	} else {
		p.why["pin"] = "Pinning is off: with one CPU it cannot keep anything apart."
	}
	loopWhy := "Loop cores, one per loop, "
	if p.PerNode() {
		loopWhy += fmt.Sprintf("all on node %d, ", p.Node)
	} else if multiNode {
		loopWhy += "on every node, "
	}
	loopWhy += fmt.Sprintf("on the first hardware thread of each physical core (%s).", joinCPUs(p.LoopCPUs))
	if t.SMT() {
		loopWhy += " Their SMT siblings are left free for the Go runtime, softirqs and interrupts: two loops on one core would share its execution units."
	}
	p.why["cpus"] = loopWhy
	mp := "first-touch: each pinned loop thread sets its memory policy to MPOL_LOCAL (overriding an inherited interleave " +
		"or bind) and creates its ring and buffers only after it is pinned, so their pages come from its own node's memory. " +
		"\"off\" leaves placement to the process's policy (numactl --interleave or --membind, say)."
	if !p.Pin {
		mp += " The loops are not pinned here, so it changes nothing."
	} else if !multiNode {
		mp += " With one node every page is local anyway; it matters on machines with several."
	}
	p.why["memory-placement"] = mp
	flusherCPU := p.FlusherCPUs[0]
	node := p.Machine.CPUs[flusherCPU].Node
	fl := "The journal flusher (group commit: one fdatasync per batch) "
	switch {
	case p.PerNode():
		fl += fmt.Sprintf("on node %d's first core, kept off the loop cores: this instance's appends, its sync and the "+
			"flusher's wake-up after it, which gates every persisted ack, all stay on node %d.", node, node)
	case multiNode:
		fl += fmt.Sprintf("on the first core of node %d: one instance has one journal and one flusher, so loops on the other "+
			"nodes append and wait for acks across the interconnect (see the header).", node)
	default:
		fl += "on the first core of the machine, kept off the loop cores: its wake-up after each sync gates every persisted ack."
	}
	p.why["flusher-cpus"] = fl
	rp := "The replication sender (batches to the peers)"
	if t.SMT() {
		rp += " on the SMT sibling of the flusher's thread: both are mostly waiting (on the disk, on the network), so they share a reserved core cheaply."
	} else {
		rp += " shares the flusher's core: both are mostly waiting (on the disk, on the network)."
	}
	if p.PerNode() {
		rp += fmt.Sprintf(" It reads this instance's journal, on node %d.", p.Node)
	}
	p.why["repl-cpus"] = rp
	if p.PerNode() {
		p.why["data"] = fmt.Sprintf("This instance's journal directory (one journal per instance; node%d under the base "+
			"directory given to `tandem tune --data`). Put it on a disk attached close to node %d if you can; on one shared "+
			"disk the instances share its sync bandwidth, each with its own group commit.", p.Node, p.Node)
	} else {
		p.why["data"] = "Journal directory: one instance, one journal."
	}
	p.why["ring-entries"] = fmt.Sprintf("io_uring submission queue entries per loop (the completion queue is twice as big). "+
		"A loop submits at most a receive and a send per connection and one sync per iteration, so %d covers %d busy "+
		"connections per iteration before the loop must flush early. Costs %d KiB of locked memory per loop (64 B per SQE, 16 B per CQE). "+
		"Raise it if `tandem stat` shows CQ overflows.", p.RingEntries, p.RingEntries/2, (p.RingEntries*64+p.RingEntries*2*16)>>10)
	perConn := int64(p.ReadBuffer + p.WriteHighWater)
	p.why["read-buffer"] = fmt.Sprintf("Initial read buffer per connection (it grows only to hold one frame of up to max-frame). "+
		"Bigger means fewer receives per burst of publishes; every connection pays it, idle or not: %s for %d connections.",
		bytesString(int64(p.ReadBuffer)*planConns), planConns)
	wh := fmt.Sprintf("Pending output per connection before the loop stops reading it and pauses its deliveries. "+
		"Bounds a slow subscriber's memory; too low and fast subscribers stall between iterations. "+
		"Worst case with read-buffer: %s per connection, %s for %d connections",
		bytesString(perConn), bytesString(perConn*planConns), planConns)
	if mem := t.Nodes[0].MemBytes; mem > 0 {
		wh += fmt.Sprintf(" (node %d has %s)", t.Nodes[0].ID, bytesString(mem))
	}
	if p.ReadBuffer == smallReadBuffer {
		wh += "; sized down because a node has less than 4 GiB"
	}
	p.why["write-high-water"] = wh + "."
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// Summary describes the machine in one line per node.
func (t *Topology) Summary() []string {
	threads := 1
	for _, c := range t.Cores {
		threads = max(threads, len(c.Threads))
	}
	lines := []string{fmt.Sprintf("%d NUMA node(s), %d physical core(s), %d online CPU(s) (%s), %d thread(s) per core",
		len(t.Nodes), len(t.Cores), len(t.Online), FormatCPUList(t.Online), threads)}
	for _, n := range t.Nodes {
		l := fmt.Sprintf("node %d: cpus %s, %d core(s)", n.ID, FormatCPUList(n.CPUs), len(t.CoresOf(n.ID)))
		if n.MemBytes > 0 {
			l += ", " + bytesString(n.MemBytes)
		}
		lines = append(lines, l)
	}
	return lines
}

// Keys lists the keys TOML writes, in order, with their TOML types. Every
// one is a key of `tandem serve --config` (New is kept for keys a future
// plan emits before serve learns them). Optional keys are written only
// when the plan sets them (always for name and listen in a per-node plan).
var Keys = []struct {
	Name, Type string
	New        bool
	Optional   bool
}{
	{"name", "string", false, true},
	{"listen", "string", false, true},
	{"repl-listen", "string", false, true},
	{"repl-secret-file", "string", false, true},
	{"engine", "string", false, false},
	{"loops", "integer", false, false},
	{"pin", "boolean", false, false},
	{"cpus", "string", false, false},
	{"memory-placement", "string", false, false},
	{"flusher-cpus", "string", false, false},
	{"repl-cpus", "string", false, false},
	{"data", "string", false, false},
	{"ring-entries", "integer", false, false},
	{"read-buffer", "integer", false, false},
	{"write-high-water", "integer", false, false},
}

// TOML renders the plan as a `tandem serve --config` file, each key under a
// comment that explains the choice.
func (p *Plan) TOML(source string) string {
	var b strings.Builder
	b.WriteString("# Tandem configuration written by `tandem tune`")
	if source != "" {
		fmt.Fprintf(&b, " from %s", source)
	}
	b.WriteString(".\n# Use it with `tandem serve --config FILE`; flags given on the command line win.\n")
	if p.PerNode() {
		fmt.Fprintf(&b, "# Instance %d of %d (layout per-node): NUMA node %d. Run one `tandem serve --config` per node's file.\n",
			p.Index+1, p.Instances, p.Node)
	}
	b.WriteString("#\n")
	for _, l := range p.Machine.Summary() {
		fmt.Fprintf(&b, "# %s\n", l)
	}
	for _, n := range p.Notes {
		b.WriteString("#\n")
		writeComment(&b, n)
	}
	b.WriteString("\n")
	key := func(name, value string) {
		writeComment(&b, p.why[name])
		fmt.Fprintf(&b, "%s = %s\n\n", name, value)
	}
	for _, k := range []struct{ name, value string }{
		{"name", p.Name}, {"listen", p.Listen}, {"repl-listen", p.ReplListen}, {"repl-secret-file", p.ReplSecretFile},
	} {
		if k.value != "" {
			key(k.name, quote(k.value))
		}
	}
	key("engine", quote(p.Engine))
	key("loops", fmt.Sprint(p.Loops))
	key("pin", fmt.Sprint(p.Pin))
	key("cpus", quote(joinCPUs(p.LoopCPUs)))
	key("memory-placement", quote(p.MemoryPlacement))
	key("flusher-cpus", quote(joinCPUs(p.FlusherCPUs)))
	key("repl-cpus", quote(joinCPUs(p.ReplCPUs)))
	key("data", quote(p.Data))
	key("ring-entries", fmt.Sprint(p.RingEntries))
	key("read-buffer", fmt.Sprint(p.ReadBuffer))
	key("write-high-water", fmt.Sprint(p.WriteHighWater))
	return strings.TrimRight(b.String(), "\n") + "\n"
}

// writeComment wraps text at about 100 columns as # lines.
func writeComment(b *strings.Builder, text string) {
	line := "#"
	for _, w := range strings.Fields(text) {
		if len(line)+1+len(w) > 100 && line != "#" {
			b.WriteString(line + "\n")
			line = "#"
		}
		line += " " + w
	}
	b.WriteString(line + "\n")
}

// quote writes a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// AllCPUs returns every CPU the plan names (for checks against the
// process's affinity mask).
func (p *Plan) AllCPUs() []int {
	all := slices.Concat(p.LoopCPUs, p.FlusherCPUs, p.ReplCPUs)
	slices.Sort(all)
	return slices.Compact(all)
}
