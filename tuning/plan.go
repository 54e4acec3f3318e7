package tuning

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// Defaults the plan starts from; they match the engine's own defaults.
const (
	DefaultRingEntries    = 1024
	DefaultReadBuffer     = 64 << 10
	DefaultWriteHighWater = 1 << 20
	smallReadBuffer       = 16 << 10
	smallWriteHighWater   = 256 << 10
	// smallNodeMem: below this much memory per node, per-connection
	// buffers are sized down.
	smallNodeMem = 4 << 30
	// planConns is the connection count the memory comments are worked out for.
	planConns = 10000
)

// Options are the operator's inputs to Compute.
type Options struct {
	// DataDir is the journal directory (the serve `data` key); with
	// several NUMA nodes, one journal directory per node goes under it.
	// Default "data".
	DataDir string
}

// Plan is where Tandem's threads should run on one machine and how big its
// rings and buffers should be. Render it with TOML.
type Plan struct {
	Topology *Topology

	Engine         string
	Loops          int
	Pin            bool
	LoopCPUs       []int    // one per loop
	FlusherCPUs    []int    // one per journal directory (JournalDirs, or Data alone)
	ReplCPUs       []int    // replication senders, one per node
	Data           string   // the serve `data` key
	JournalDirs    []string // one per NUMA node when there are several; nil otherwise
	RingEntries    int
	ReadBuffer     int
	WriteHighWater int

	// Notes are remarks about the machine as a whole (compromises made).
	Notes []string
	// why holds the comment written above each key.
	why map[string]string
}

// Compute derives a plan from a topology.
//
// Policy, per NUMA node: the node's first physical core is reserved for
// that node's journal flusher (its first thread) and replication sender
// (its SMT sibling if it has one, else the same thread); every other
// physical core runs one event loop on its first thread. SMT siblings of
// loop cores stay free, for the Go runtime, the kernel's softirqs and
// interrupts: two loops on one physical core would compete for its
// execution units and caches. A node with a single physical core gives it
// to a loop and shares it with the flusher (a compromise the plan states).
func Compute(t *Topology, opts Options) (*Plan, error) {
	if t == nil || len(t.Cores) == 0 {
		return nil, fmt.Errorf("tuning: empty topology")
	}
	if opts.DataDir == "" {
		opts.DataDir = "data"
	}
	p := &Plan{
		Topology: t, Engine: "auto", Pin: true, Data: opts.DataDir,
		RingEntries: DefaultRingEntries, ReadBuffer: DefaultReadBuffer, WriteHighWater: DefaultWriteHighWater,
		why: make(map[string]string),
	}
	multiNode := len(t.Nodes) > 1
	if len(t.Online) == 1 {
		cpu := t.Online[0]
		p.Loops, p.Pin = 1, false
		p.LoopCPUs, p.FlusherCPUs, p.ReplCPUs = []int{cpu}, []int{cpu}, []int{cpu}
		p.Notes = append(p.Notes, "One CPU: everything shares it, so pinning buys nothing and is off.")
	} else {
		for _, n := range t.Nodes {
			p.placeNode(t, n, multiNode)
		}
	}
	p.Loops = len(p.LoopCPUs)
	if multiNode {
		for _, n := range t.Nodes {
			p.JournalDirs = append(p.JournalDirs, filepath.Join(opts.DataDir, fmt.Sprintf("node%d", n.ID)))
		}
	}
	p.sizeBuffers(t)
	p.explain(t)
	return p, nil
}

// placeNode places one node's loops, flusher and replication sender.
func (p *Plan) placeNode(t *Topology, n Node, multiNode bool) {
	cores := t.CoresOf(n.ID)
	if len(cores) == 0 {
		return
	}
	reserved := cores[0]
	flusher := reserved.Threads[0]
	repl := flusher
	if len(reserved.Threads) > 1 {
		repl = reserved.Threads[1]
	}
	loopCores := cores[1:]
	if len(loopCores) == 0 {
		// One physical core on this node. With SMT, the loop takes the
		// first thread and the flusher and replication its sibling; without,
		// they all share the one CPU.
		p.LoopCPUs = append(p.LoopCPUs, reserved.Threads[0])
		if len(reserved.Threads) > 1 {
			flusher, repl = reserved.Threads[1], reserved.Threads[1]
			p.Notes = append(p.Notes, fmt.Sprintf(
				"Node %d has one physical core: its loop runs on cpu %d and the flusher and replication on its SMT sibling cpu %d. Siblings share execution units, so a busy loop slows the flusher's wake-ups a little.",
				n.ID, reserved.Threads[0], flusher))
		} else {
			p.Notes = append(p.Notes, fmt.Sprintf(
				"Node %d has one CPU (%d): its loop, flusher and replication share it; expect ack latency to include waiting for the loop's time slice.",
				n.ID, flusher))
		}
	} else {
		for _, c := range loopCores {
			p.LoopCPUs = append(p.LoopCPUs, c.Threads[0])
		}
		if len(t.Cores) == 2 && !multiNode {
			p.Notes = append(p.Notes, twoCoreNote(flusher, loopCores[0].Threads[0], t.SMT()))
		}
	}
	p.FlusherCPUs = append(p.FlusherCPUs, flusher)
	p.ReplCPUs = append(p.ReplCPUs, repl)
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

func (p *Plan) sizeBuffers(t *Topology) {
	minMem := int64(0)
	for _, n := range t.Nodes {
		if n.MemBytes > 0 && (minMem == 0 || n.MemBytes < minMem) {
			minMem = n.MemBytes
		}
	}
	if minMem > 0 && minMem < smallNodeMem {
		p.ReadBuffer, p.WriteHighWater = smallReadBuffer, smallWriteHighWater
	}
}

// explain writes the comment for each key.
func (p *Plan) explain(t *Topology) {
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
	loopWhy := fmt.Sprintf("Loop cores, one per loop, on the first hardware thread of each physical core (%s).", joinCPUs(p.LoopCPUs))
	if t.SMT() {
		loopWhy += " Their SMT siblings are left free for the Go runtime, softirqs and interrupts: two loops on one core would share its execution units."
	}
	p.why["cpus"] = loopWhy
	fl := "The journal flusher (group commit: one fdatasync per batch) on the first core of "
	if len(p.JournalDirs) > 0 {
		fl += "each node, one flusher per journal directory in the order of journal-dirs, so each syncs from its own node."
	} else {
		fl += "the machine, kept off the loop cores: its wake-up after each sync gates every persisted ack."
	}
	p.why["flusher-cpus"] = fl
	rp := "Replication senders (batches to the peer)"
	if t.SMT() {
		rp += " on the SMT sibling of the flusher's thread: both are mostly waiting (on the disk, on the network), so they share a reserved core cheaply."
	} else {
		rp += " share the flusher's core: both are mostly waiting (on the disk, on the network)."
	}
	if len(p.ReplCPUs) > 1 {
		rp += " One per node, sending that node's journal."
	}
	p.why["repl-cpus"] = rp
	p.why["data"] = "Journal directory."
	if len(p.JournalDirs) > 0 {
		p.why["data"] = "Base directory; the journals themselves are in journal-dirs."
		p.why["journal-dirs"] = fmt.Sprintf("One journal per NUMA node (%d nodes): a loop appends to its own node's journal, so "+
			"record memory and the page cache it writes are local. Put each on a disk attached close to its node if you can; "+
			"a single disk works, but then the nodes share its sync bandwidth.", len(t.Nodes))
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
// plan emits before serve learns them).
var Keys = []struct {
	Name, Type string
	New        bool
}{
	{"engine", "string", false},
	{"loops", "integer", false},
	{"pin", "boolean", false},
	{"cpus", "string", false},
	{"flusher-cpus", "string", false},
	{"repl-cpus", "string", false},
	{"data", "string", false},
	{"journal-dirs", "array of strings", false},
	{"ring-entries", "integer", false},
	{"read-buffer", "integer", false},
	{"write-high-water", "integer", false},
}

// TOML renders the plan as a `tandem serve --config` file, each key under a
// comment that explains the choice.
func (p *Plan) TOML(source string) string {
	var b strings.Builder
	b.WriteString("# Tandem configuration written by `tandem tune`")
	if source != "" {
		fmt.Fprintf(&b, " from %s", source)
	}
	b.WriteString(".\n# Use it with `tandem serve --config FILE`; flags given on the command line win.\n#\n")
	for _, l := range p.Topology.Summary() {
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
	key("engine", quote(p.Engine))
	key("loops", fmt.Sprint(p.Loops))
	key("pin", fmt.Sprint(p.Pin))
	key("cpus", quote(joinCPUs(p.LoopCPUs)))
	key("flusher-cpus", quote(joinCPUs(p.FlusherCPUs)))
	key("repl-cpus", quote(joinCPUs(p.ReplCPUs)))
	key("data", quote(p.Data))
	if len(p.JournalDirs) > 0 {
		q := make([]string, len(p.JournalDirs))
		for i, d := range p.JournalDirs {
			q[i] = quote(d)
		}
		key("journal-dirs", "["+strings.Join(q, ", ")+"]")
	}
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
