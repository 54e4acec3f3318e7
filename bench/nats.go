package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS is the adapter for NATS JetStream (nats-server started by the bench).
//
// Settings: one stream BENCH on subjects bench.>, file storage, one replica,
// no limits; publishers use js.PublishAsync with the window enforced by the
// adapter (a message counts as acknowledged when its PubAck arrives, i.e.
// when JetStream stored it at its sync setting); subscribers are ordered
// push consumers (js.Subscribe with nats.OrderedConsumer(), DeliverAll or
// DeliverNew), one connection each.
//
// SyncAlways false is nats-server's default: the PubAck is sent once the
// message is written to the store file; the file is fsynced every 2
// minutes (sync_interval default). SyncAlways true sets
// `jetstream { sync_interval: always }`: fsync on every write before the
// PubAck, the durability of Tandem's persisted ack.
type NATS struct {
	SyncAlways bool
	// Replicas: 0 or 1 is one nats-server with an R1 stream; 3 is a
	// cluster of 3 nats-servers on loopback with an R3 stream
	// (nats_cluster.go).
	Replicas int
	// Bin is the nats-server binary; empty: looked up (findBinary).
	Bin string

	p    *proc
	url  string // client URL(s): comma-separated, tried in order
	seq  atomic.Int64
	conf string

	// The cluster's nodes (Replicas > 1).
	nodes []*natsNode
}

func (n *NATS) Name() string {
	r := ""
	if n.Replicas > 1 {
		r = fmt.Sprintf("r%d-", n.Replicas)
	}
	if n.SyncAlways {
		return "nats-" + r + "always"
	}
	return "nats-" + r + "default"
}

func (n *NATS) bin() (string, error) {
	if n.Bin != "" {
		return n.Bin, nil
	}
	b, err := findBinary("nats-server")
	if err != nil {
		return "", fmt.Errorf("%w: %v (make bench-deps: go install github.com/nats-io/nats-server/v2@v2.15.2)", errPeerMissing, err)
	}
	n.Bin = b
	return b, nil
}

func (n *NATS) Info() SystemInfo {
	sync := "default: PubAck after the write to the store file; fsync every 2 minutes (sync_interval 2m)"
	if n.SyncAlways {
		sync = "sync_interval: always (fsync of every write before the PubAck)"
	}
	info := SystemInfo{
		Name:    n.Name(),
		Product: "NATS JetStream",
		Settings: map[string]string{
			"server":    "nats-server -c CONF, listen 127.0.0.1:PORT, jetstream { store_dir: TMPDIR }",
			"sync":      sync,
			"stream":    "BENCH, subjects bench.>, file storage, 1 replica, no limits",
			"client":    "github.com/nats-io/nats.go " + nats.Version + ", one connection per publisher/subscriber",
			"publish":   "js.PublishAsync (legacy JetStream API), window enforced by the adapter, ack = PubAck",
			"subscribe": "js.Subscribe with nats.OrderedConsumer() (ephemeral push consumer, flow control), DeliverAll or DeliverNew",
		},
	}
	if n.Replicas > 1 {
		n.clusterInfo(&info)
	}
	if b, err := n.bin(); err != nil {
		info.Skipped = err.Error()
	} else {
		info.Binary = b
		info.Version = binaryVersion(b, "--version")
	}
	return info
}

func (n *NATS) Start(ctx context.Context, dir string) error {
	bin, err := n.bin()
	if err != nil {
		return err
	}
	if n.Replicas > 1 {
		return n.startCluster(ctx, bin, dir)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	sync := ""
	if n.SyncAlways {
		sync = "\n  sync_interval: always"
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nmax_payload: 8MB\njetstream {\n  store_dir: %q%s\n}\n", port, filepath.Join(dir, "js"), sync)
	n.conf = filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := startProc(n.Name(), bin, []string{"-c", n.conf}, dir)
	if err != nil {
		return err
	}
	n.p = p
	n.url = fmt.Sprintf("nats://127.0.0.1:%d", port)
	if err := waitDial(ctx, fmt.Sprintf("127.0.0.1:%d", port), p); err != nil {
		return err
	}
	nc, err := nats.Connect(n.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	// JetStream may need a moment after the port opens.
	return addBenchStream(ctx, js, 1, 10*time.Second)
}

// addBenchStream creates the bench stream with replicas copies, retrying
// until wait has passed (JetStream, and a cluster's meta leader, may need a
// moment after the ports open).
func addBenchStream(ctx context.Context, js nats.JetStreamContext, replicas int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		_, err := js.AddStream(&nats.StreamConfig{Name: benchStream, Subjects: []string{"bench.>"}, Storage: nats.FileStorage, Replicas: replicas})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("create the R%d stream: %w", replicas, err)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil { // polling a condition with a deadline
			return err
		}
	}
}

func (n *NATS) Stop() error {
	if n.nodes != nil {
		return n.stopCluster()
	}
	err := n.p.stop()
	n.p = nil
	return err
}

// connect connects a client to the server (the cluster: the URLs in
// order, the stream leader's first).
func (n *NATS) connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(fmt.Sprintf("%s-%d", name, n.seq.Add(1))), nats.DontRandomize()}, opts...)
	return nats.Connect(n.url, opts...)
}

type natsPub struct {
	nc    *nats.Conn
	js    nats.JetStreamContext
	win   *window
	futs  chan nats.PubAckFuture
	onAck func(uint64)
	ackCounter
	done chan struct{}
	quit chan struct{} // closed by Close: stop waiting for PubAcks
}

func (n *NATS) NewPublisher(ctx context.Context, name string, window int, onAck func(uint64)) (Publisher, error) {
	nc, err := n.connect(name)
	if err != nil {
		return nil, err
	}
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(window + 1))
	if err != nil {
		nc.Close()
		return nil, err
	}
	p := &natsPub{nc: nc, js: js, win: newWindow(window), futs: make(chan nats.PubAckFuture, window+1), onAck: onAck, done: make(chan struct{}), quit: make(chan struct{})}
	p.init()
	go p.acks()
	return p, nil
}

// acks waits for each PubAck in publish order (JetStream acks one stream's
// messages in order).
func (p *natsPub) acks() {
	defer close(p.done)
	var i uint64
	for f := range p.futs {
		select {
		case <-f.Ok():
			p.onAck(i)
		case <-f.Err():
			p.errs.Add(1)
		case <-p.quit:
			p.errs.Add(1)
		}
		i++
		p.win.release()
		p.ackedThrough(i)
	}
}

func (p *natsPub) Publish(ctx context.Context, payload []byte) error {
	if err := p.win.acquire(ctx); err != nil {
		return err
	}
	// PubAckFuture keeps the message; give it its own copy.
	f, err := p.js.PublishAsync(benchTopic, append([]byte(nil), payload...))
	if err != nil {
		p.win.release()
		return err
	}
	p.sent.Add(1)
	p.futs <- f
	return nil
}

func (p *natsPub) Wait(ctx context.Context) error {
	return p.wait(ctx, "nats publishes")
}

func (p *natsPub) Errors() uint64 { return p.errs.Load() }

func (p *natsPub) Close() error {
	close(p.quit)
	close(p.futs)
	p.nc.Close()
	<-p.done
	return nil
}

type natsSub struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func (n *NATS) Subscribe(ctx context.Context, name string, fromStart bool, onMsg func([]byte)) (Subscriber, error) {
	nc, err := n.connect(name)
	if err != nil {
		return nil, err
	}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	start := nats.DeliverNew()
	if fromStart {
		start = nats.DeliverAll()
	}
	sub, err := js.Subscribe(benchTopic, func(m *nats.Msg) { onMsg(m.Data) }, nats.OrderedConsumer(), start)
	if err != nil {
		nc.Close()
		return nil, err
	}
	// Unbounded client-side buffering: the scenario measures delivery, not
	// the slow-consumer policy.
	_ = sub.SetPendingLimits(-1, -1)
	return &natsSub{nc: nc, sub: sub}, nil
}

func (s *natsSub) Close() error {
	_ = s.sub.Unsubscribe()
	s.nc.Close()
	return nil
}
