package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// A replicated NATS JetStream (NATS.Replicas 3: the systems nats-r3-always
// and nats-r3-default): three nats-server processes on loopback forming one
// cluster ("bench"), each with its own store directory, and the stream
// BENCH with 3 replicas. A PubAck then means the stream leader and at least
// one follower (a quorum of 2 of 3) stored the message at the sync setting
// (sync_interval: always: fsynced; default: written, fsync every 2
// minutes). JetStream keeps 3 copies where Tandem's pair keeps 2.
//
// Clients connect to the stream leader's node first (its URL first in the
// list, DontRandomize), so a publish takes no extra hop between servers.

// natsNode is one server of the cluster.
type natsNode struct {
	name        string // server_name: n1, n2, n3
	port, cport int    // client and cluster (route) ports
	conf, dir   string
	p           *proc
}

func (nd *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.port) }

// natsNodeConfig is the configuration file of one node of the cluster:
// its client and route listeners on loopback, routes to the other nodes,
// JetStream with its own store directory and the sync setting.
//
// Format (nats-server's configuration syntax):
//
//	server_name: n1
//	listen: 127.0.0.1:PORT
//	max_payload: 8MB
//	jetstream {
//	  store_dir: "DIR"
//	  sync_interval: always     (only with syncAlways)
//	}
//	cluster {
//	  name: bench
//	  listen: 127.0.0.1:CLUSTER_PORT
//	  routes: [nats-route://127.0.0.1:OTHER_PORT, ...]
//	}
func natsNodeConfig(nodes []*natsNode, i int, syncAlways bool) string {
	nd := nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\n", nd.name, nd.port)
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n", filepath.Join(nd.dir, "js"))
	if syncAlways {
		b.WriteString("  sync_interval: always\n")
	}
	b.WriteString("}\n")
	var routes []string
	for k, o := range nodes {
		if k != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.cport))
		}
	}
	fmt.Fprintf(&b, "cluster {\n  name: bench\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", nd.cport, strings.Join(routes, ", "))
	return b.String()
}

// clusterInfo describes the cluster in the report.
func (n *NATS) clusterInfo(info *SystemInfo) {
	info.Product = "NATS JetStream, 3-node cluster"
	info.Settings["server"] = "3 x nats-server -c CONF on loopback: cluster bench (routes between all three), each with jetstream { store_dir: TMPDIR/nN }"
	info.Settings["stream"] = "BENCH, subjects bench.>, file storage, 3 replicas (R3: 3 copies, where Tandem's pair keeps 2; a PubAck needs the leader and 1 follower), no limits"
	info.Settings["clients"] = "connected to the stream leader's node first (URL list in order, DontRandomize)"
}

// startCluster starts the three nodes in dir/n1..n3, waits until each
// accepts connections, creates the R3 stream (retried until JetStream's
// meta leader is elected) and puts the stream leader's URL first.
func (n *NATS) startCluster(ctx context.Context, bin, dir string) error {
	n.nodes = nil
	for i := 1; i <= n.Replicas; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		cport, err := freePort()
		if err != nil {
			return err
		}
		nd := &natsNode{name: fmt.Sprintf("n%d", i), port: port, cport: cport, dir: filepath.Join(dir, fmt.Sprintf("n%d", i))}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			return err
		}
		n.nodes = append(n.nodes, nd)
	}
	for i, nd := range n.nodes {
		nd.conf = filepath.Join(nd.dir, "nats.conf")
		if err := os.WriteFile(nd.conf, []byte(natsNodeConfig(n.nodes, i, n.SyncAlways)), 0o644); err != nil {
			return err
		}
	}
	for _, nd := range n.nodes {
		if err := n.startNode(bin, nd); err != nil {
			return err
		}
	}
	for _, nd := range n.nodes {
		if err := waitDial(ctx, fmt.Sprintf("127.0.0.1:%d", nd.port), nd.p); err != nil {
			return err
		}
	}
	n.setURLs("")
	nc, err := nats.Connect(n.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	if err := addBenchStream(ctx, js, n.Replicas, 30*time.Second); err != nil {
		return err
	}
	leader, err := n.waitStreamHealthy(ctx, js, "", 30*time.Second)
	if err != nil {
		return err
	}
	n.setURLs(leader)
	return nil
}

func (n *NATS) startNode(bin string, nd *natsNode) error {
	p, err := startProc(n.Name()+"-"+nd.name, bin, []string{"-c", nd.conf}, nd.dir)
	if err != nil {
		return err
	}
	nd.p = p
	return nil
}

// setURLs makes the client URL list: leader's node first, then the others.
func (n *NATS) setURLs(leader string) {
	var urls []string
	for _, nd := range n.nodes {
		if nd.name == leader {
			urls = append([]string{nd.url()}, urls...)
		} else {
			urls = append(urls, nd.url())
		}
	}
	n.url = strings.Join(urls, ",")
}

// waitStreamHealthy waits until the stream has a leader other than
// notLeader ("": any) and every replica is current, and returns the
// leader's name.
func (n *NATS) waitStreamHealthy(ctx context.Context, js nats.JetStreamContext, notLeader string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	last := ""
	for {
		si, err := js.StreamInfo(benchStream, nats.MaxWait(2*time.Second))
		if err == nil && si.Cluster != nil && si.Cluster.Leader != "" && si.Cluster.Leader != notLeader {
			ok := len(si.Cluster.Replicas) == n.Replicas-1
			for _, r := range si.Cluster.Replicas {
				ok = ok && r.Current && !r.Offline
			}
			if ok {
				return si.Cluster.Leader, nil
			}
			last = fmt.Sprintf("leader %s, replicas %s", si.Cluster.Leader, replicaText(si.Cluster.Replicas))
		} else if err != nil {
			last = err.Error()
		} else {
			last = "no stream leader"
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("stream %s not healthy after %s: %s", benchStream, limit, last)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return "", err
		}
	}
}

func replicaText(rs []*nats.PeerInfo) string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s current=%v offline=%v", r.Name, r.Current, r.Offline))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// node returns the node named name.
func (n *NATS) node(name string) *natsNode {
	for _, nd := range n.nodes {
		if nd.name == name {
			return nd
		}
	}
	return nil
}

func (n *NATS) stopCluster() error {
	var errs []error
	for _, nd := range n.nodes {
		errs = append(errs, nd.p.stop())
	}
	n.nodes = nil
	return errors.Join(errs...)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
