package sim

// The simulated network: connections between named nodes, each direction
// FIFO with a random latency. A partition blocks one direction between two
// nodes silently, as a bridge port taken down does: no reset, no FIN;
// what is sent is held (TCP retransmits) and arrives after the partition
// heals if the connection is still open, so only timeouts notice it. A
// node that is down refuses connections (a reset); a crashed process's
// connections end with a FIN, a crashed machine's silently.

// Endpoint is one end of a connection.
type Endpoint struct {
	n       *Network
	node    string
	peer    *Endpoint
	id      uint64
	closed  bool
	lastAt  int64 // the latest delivery time scheduled in this direction
	onMsg   func(msg any)
	onClose func(reason string)
	// lastRecv: when this end last received something (for timeouts).
	lastRecv int64
}

// Network is the simulated network of one World.
type Network struct {
	w        *World
	blocked  map[[2]string]bool
	held     map[[2]string][]func() // deliveries held by a partition, in order
	accept   map[string]func(e *Endpoint) bool
	nextConn uint64
	// extra latency per node pair while a delay fault is active
	slow map[[2]string]int64
}

func newNetwork(w *World) *Network {
	return &Network{w: w, blocked: map[[2]string]bool{}, held: map[[2]string][]func(){},
		accept: map[string]func(*Endpoint) bool{}, slow: map[[2]string]int64{}}
}

func (n *Network) latency(from, to string) int64 {
	return n.w.Between(20*Microsecond, 200*Microsecond) + n.slow[[2]string{from, to}]
}

// Listen makes node accept connections: accept is called with the
// server's end and returns false to refuse (node down).
func (n *Network) Listen(node string, accept func(e *Endpoint) bool) { n.accept[node] = accept }

// Dial connects from node from to node to: connected is called with the
// dialer's end once the connection is up, failed if it is refused or
// times out (a partition: after timeout).
func (n *Network) Dial(from, to string, timeout int64, connected func(e *Endpoint), failed func(reason string)) {
	w := n.w
	k := [2]string{from, to}
	if n.blocked[k] || n.blocked[[2]string{to, from}] {
		w.After(timeout, func() { failed("connect timeout") })
		return
	}
	w.After(n.latency(from, to), func() {
		acc := n.accept[to]
		n.nextConn++
		a := &Endpoint{n: n, node: from, id: n.nextConn, lastRecv: w.now}
		b := &Endpoint{n: n, node: to, id: n.nextConn, lastRecv: w.now}
		a.peer, b.peer = b, a
		if acc == nil || !acc(b) {
			w.After(n.latency(to, from), func() { failed("connection refused") })
			return
		}
		w.After(n.latency(to, from), func() {
			if a.closed {
				return
			}
			if b.closed { // the server closed it at once
				failed("connection closed")
				return
			}
			connected(a)
		})
	})
}

// Node returns the node of this end.
func (e *Endpoint) Node() string { return e.node }

// PeerNode returns the node at the other end.
func (e *Endpoint) PeerNode() string { return e.peer.node }

// Closed reports whether this end is closed.
func (e *Endpoint) Closed() bool { return e.closed }

// Send sends msg to the other end (dropped if this end is closed).
func (e *Endpoint) Send(msg any) {
	if e.closed {
		return
	}
	p := e.peer
	e.deliver(func() {
		if p.closed {
			return
		}
		p.lastRecv = e.n.w.now
		if p.onMsg != nil {
			p.onMsg(msg)
		}
	})
}

// deliver schedules f at the other end, in order, held while the
// direction is partitioned.
func (e *Endpoint) deliver(f func()) {
	n, w := e.n, e.n.w
	at := max(w.now+n.latency(e.node, e.peer.node), e.lastAt+1)
	e.lastAt = at
	k := [2]string{e.node, e.peer.node}
	w.At(at, func() {
		if n.blocked[k] {
			n.held[k] = append(n.held[k], f)
			return
		}
		f()
	})
}

// Close closes this end; the other end learns of it (a FIN) after the
// latency, unless silent (a crashed machine: it never learns, only times
// out).
func (e *Endpoint) Close(silent bool) {
	if e.closed {
		return
	}
	e.closed = true
	if silent {
		return
	}
	p := e.peer
	e.deliver(func() {
		if p.closed {
			return
		}
		p.closed = true
		if p.onClose != nil {
			p.onClose("peer closed the connection")
		}
	})
}

// Abort closes this end locally (a timeout noticed here): the other end is
// sent a FIN as well.
func (e *Endpoint) Abort(reason string) {
	if e.closed {
		return
	}
	e.Close(false)
	if e.onClose != nil {
		e.onClose(reason)
	}
}

// Partition blocks from->to (both: to->from as well).
func (n *Network) Partition(from, to string, both bool) {
	n.blocked[[2]string{from, to}] = true
	if both {
		n.blocked[[2]string{to, from}] = true
	}
}

// Heal unblocks from->to and to->from and delivers what was held, in order.
func (n *Network) Heal(from, to string) {
	for _, k := range [][2]string{{from, to}, {to, from}} {
		if !n.blocked[k] {
			continue
		}
		delete(n.blocked, k)
		held := n.held[k]
		delete(n.held, k)
		for _, f := range held {
			f()
		}
	}
}

// HealAll removes every partition and delay, in a fixed order.
func (n *Network) HealAll(nodes []string) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a < b {
				n.Heal(a, b)
			}
		}
	}
	clear(n.slow)
}
