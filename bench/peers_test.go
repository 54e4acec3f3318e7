package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The replicated peers' names, as --systems and the report know them.
func TestReplicatedNames(t *testing.T) {
	o := &Options{}
	for _, name := range replicatedSystems {
		sys, err := newSystem(name, o, "")
		if err != nil {
			t.Fatal(err)
		}
		if sys.Name() != name {
			t.Errorf("newSystem(%q).Name() = %q", name, sys.Name())
		}
		if _, ok := DefaultSettings(false).ReplaySkip[name]; !ok {
			t.Errorf("%s: replay not skipped", name)
		}
	}
	if got := (&NATS{}).Name(); got != "nats-default" {
		t.Errorf("R1 NATS named %q", got)
	}
}

// Each node's configuration: its own ports and store directory, routes to
// the two others (never to itself), the sync setting only when asked.
func TestNATSNodeConfig(t *testing.T) {
	nodes := []*natsNode{
		{name: "n1", port: 4001, cport: 5001, dir: "/d/n1"},
		{name: "n2", port: 4002, cport: 5002, dir: "/d/n2"},
		{name: "n3", port: 4003, cport: 5003, dir: "/d/n3"},
	}
	got := natsNodeConfig(nodes, 1, true)
	want := `server_name: n2
listen: 127.0.0.1:4002
max_payload: 8MB
jetstream {
  store_dir: "/d/n2/js"
  sync_interval: always
}
cluster {
  name: bench
  listen: 127.0.0.1:5002
  routes: [nats-route://127.0.0.1:5001, nats-route://127.0.0.1:5003]
}
`
	if got != want {
		t.Errorf("config of n2:\n%s\nwant:\n%s", got, want)
	}
	def := natsNodeConfig(nodes, 0, false)
	if strings.Contains(def, "sync_interval") {
		t.Errorf("default sync config sets sync_interval:\n%s", def)
	}
	if !strings.Contains(def, "routes: [nats-route://127.0.0.1:5002, nats-route://127.0.0.1:5003]") {
		t.Errorf("n1's routes:\n%s", def)
	}
}

// The stream leader's URL goes first.
func TestNATSURLOrder(t *testing.T) {
	n := &NATS{Replicas: 3, nodes: []*natsNode{{name: "n1", port: 1}, {name: "n2", port: 2}, {name: "n3", port: 3}}}
	n.setURLs("n3")
	if want := "nats://127.0.0.1:3,nats://127.0.0.1:1,nats://127.0.0.1:2"; n.url != want {
		t.Errorf("urls %q, want %q", n.url, want)
	}
	n.setURLs("")
	if want := "nats://127.0.0.1:1,nats://127.0.0.1:2,nats://127.0.0.1:3"; n.url != want {
		t.Errorf("urls %q, want %q", n.url, want)
	}
}

// The replica's flags: the primary's, plus --replicaof; both fsync always.
func TestRedisReplicaArgs(t *testing.T) {
	prim := strings.Join(redisArgs(7000, "/d", "always", ""), " ")
	rep := strings.Join(redisArgs(7001, "/d/replica", "always", "127.0.0.1 7000"), " ")
	for _, want := range []string{"--appendonly yes", "--appendfsync always", "--save "} {
		if !strings.Contains(prim, want) || !strings.Contains(rep, want) {
			t.Errorf("missing %q:\nprimary %s\nreplica %s", want, prim, rep)
		}
	}
	if strings.Contains(prim, "--replicaof") {
		t.Errorf("primary has --replicaof: %s", prim)
	}
	if !strings.HasSuffix(rep, "--replicaof 127.0.0.1 7000") || !strings.Contains(rep, "--port 7001 --dir /d/replica") {
		t.Errorf("replica flags: %s", rep)
	}
	info := (&Redis{Fsync: "always", Replica: true}).Info()
	if !strings.Contains(info.Settings["sync"], "primary's disk + replica's memory") || !strings.Contains(info.Settings["publish"], "WAIT 1 0") {
		t.Errorf("redis-replica settings: %v", info.Settings)
	}
}

func TestReplicaOnline(t *testing.T) {
	for _, c := range []struct {
		info string
		want bool
	}{
		{"# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n", true},
		{"# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=wait_bgsave,offset=0,lag=0\r\n", false},
		{"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n", false},
	} {
		if got := replicaOnline(c.info); got != c.want {
			t.Errorf("replicaOnline(%q) = %v", c.info, got)
		}
	}
}

// One kill of the NATS R3 stream leader: the publisher gets an ack and the
// subscriber a delivery through the new leader, and every acknowledged
// message is delivered. Skipped without nats-server.
func TestNATSFailover(t *testing.T) {
	if info := (&NATS{Replicas: 3}).Info(); info.Skipped != "" {
		t.Skipf("nats-server not installed, skipping: %s", info.Skipped)
	}
	set := tinySettings(t, ScenFailover)
	set.Systems = []string{"nats-r3-default"}
	set.FailoverPeerRuns = 1
	set.FailoverPeerRate = 500
	rr, _ := tinyRun(t, set, map[string]bool{natsFailoverKey(&set): true})
	r := rr.find(natsFailoverKey(&set), "nats-r3-default")
	if r == nil || r.Failover == nil || r.Latency == nil {
		t.Fatalf("no failover result: %+v", r)
	}
	fs := r.Failover
	if len(fs.TimesUs) != 1 || len(fs.PublishTimesUs) != 1 || fs.TimesUs[0] <= 0 || fs.PublishTimesUs[0] <= 0 {
		t.Errorf("times: delivery %v, publish %v", fs.TimesUs, fs.PublishTimesUs)
	}
	if fs.Timeouts != 0 || fs.Lost != 0 {
		t.Errorf("%d timeouts, %d acknowledged messages lost: %s", fs.Timeouts, fs.Lost, r.Note)
	}
	if r.Acked <= 0 || r.Received < r.Acked {
		t.Errorf("acked %d, received %d", r.Acked, r.Received)
	}
}

// A replicated peer whose binary is missing is skipped with the reason and
// the install hint, listed in the report, and measures nothing.
func TestReplicatedMissing(t *testing.T) {
	empty := t.TempDir()
	for _, k := range []string{"PATH", "GOBIN", "GOPATH", "HOME"} {
		t.Setenv(k, empty)
	}
	set := tinySettings(t, ScenPublish, ScenFailover)
	set.Systems = append([]string(nil), replicatedSystems...)
	rr, err := Run(context.Background(), Options{Settings: set})
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Results) != 0 {
		t.Errorf("%d results from missing peers", len(rr.Results))
	}
	var md bytes.Buffer
	if err := WriteReport(&md, rr, ReportOptions{}); err != nil {
		t.Fatal(err)
	}
	wantIn(t, md.String(),
		"- **nats-r3-always skipped**: peer not installed: nats-server not found", "make bench-deps",
		"- **redis-replica skipped**: peer not installed: redis-server not found",
		"_No replicated peer ran")
}
