package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/tandemhq/tandem/engine"
	"github.com/tandemhq/tandem/engine/poll"
	"github.com/tandemhq/tandem/tuning"
)

// fakeSysfs writes a sysfs tree of nodes x cores single-thread cores.
func fakeSysfs(t *testing.T, nodes, cores int) string {
	t.Helper()
	root := t.TempDir()
	put := func(name, text string) {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("devices/system/cpu/online", fmt.Sprintf("0-%d", nodes*cores-1))
	for n := 0; n < nodes; n++ {
		put(fmt.Sprintf("devices/system/node/node%d/cpulist", n), fmt.Sprintf("%d-%d", n*cores, n*cores+cores-1))
		for k := 0; k < cores; k++ {
			c := n*cores + k
			dir := fmt.Sprintf("devices/system/cpu/cpu%d/topology/", c)
			put(dir+"core_id", fmt.Sprint(k))
			put(dir+"physical_package_id", fmt.Sprint(n))
			put(dir+"core_cpus_list", fmt.Sprint(c))
		}
	}
	return root
}

// loadAsServe loads a config file the way `tandem serve --config FILE
// ARGS...` does: serve's flags and defaults, loadServeConfig, engineConfig.
func loadAsServe(t *testing.T, file string, args ...string) (engine.Config, error) {
	t.Helper()
	var cfg serveConfig
	fs, configFile := serveFlags(&cfg)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(append([]string{"--config", file}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := loadServeConfig(*configFile, fs, &cfg); err != nil {
		return engine.Config{}, err
	}
	return cfg.engineConfig()
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tandem.toml")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkNodeConfig checks one per-node instance's engine config on a
// fakeSysfs machine of cores cores per node.
func checkNodeConfig(t *testing.T, ec engine.Config, node, cores int, name, data string) {
	t.Helper()
	nodeOf := func(c int) int { return c / cores }
	if ec.Name != fmt.Sprintf("%s-node%d", name, node) || ec.Listen != fmt.Sprintf("127.0.0.1:%d", 7400+node) ||
		ec.DataDir != filepath.Join(data, fmt.Sprintf("node%d", node)) {
		t.Fatalf("node %d: name %q listen %q data %q", node, ec.Name, ec.Listen, ec.DataDir)
	}
	if !ec.Pin || ec.Loops != cores-1 || len(ec.CPUs) != ec.Loops || ec.MemoryPlacement != "first-touch" {
		t.Fatalf("node %d: pin %v loops %d cpus %v memory %q", node, ec.Pin, ec.Loops, ec.CPUs, ec.MemoryPlacement)
	}
	for _, c := range ec.CPUs {
		if nodeOf(c) != node {
			t.Fatalf("node %d: loop cpu %d is on node %d", node, c, nodeOf(c))
		}
	}
	if !ec.Journal.PinFlusher || ec.Journal.FlusherCPU != node*cores || slices.Contains(ec.CPUs, ec.Journal.FlusherCPU) {
		t.Fatalf("node %d: flusher pinned %v on cpu %d (loops %v)", node, ec.Journal.PinFlusher, ec.Journal.FlusherCPU, ec.CPUs)
	}
}

// TestTuneConfigLoads checks that every config `tandem tune` writes loads
// with serve's own loader into an engine config: one per node with the
// per-node layout, each instance on its own node with its own name, ports
// and journal; one (today's) on a machine with one node.
func TestTuneConfigLoads(t *testing.T) {
	const cores = 4
	for _, nodes := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("%d nodes", nodes), func(t *testing.T) {
			root := fakeSysfs(t, nodes, cores)
			dir := t.TempDir()
			var stdout, stderr bytes.Buffer
			if rc := run([]string{"tune", "--sysfs", root, "--data", "/srv/tandem", "--name", "t", "--repl-listen", "127.0.0.1:7600",
				"-o", filepath.Join(dir, "tandem.toml")}, nil, &stdout, &stderr); rc != 0 {
				t.Fatalf("tune exited %d: %s", rc, stderr.String())
			}
			want := []string{"tandem.toml"}
			if nodes > 1 {
				want = nil
				for n := 0; n < nodes; n++ {
					want = append(want, fmt.Sprintf("tandem-node%d.toml", n))
				}
			}
			entries, _ := os.ReadDir(dir)
			var got []string
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if !slices.Equal(got, want) || stdout.Len() != 0 {
				t.Fatalf("files %v, want %v; stdout %q", got, want, stdout.String())
			}
			seen := map[string]bool{}
			for n, f := range want {
				file := filepath.Join(dir, f)
				if !strings.Contains(stderr.String(), "tandem tune: wrote "+file+" (") {
					t.Errorf("stderr does not name %s:\n%s", file, stderr.String())
				}
				b, _ := os.ReadFile(file)
				if strings.Contains(string(b), "journal-dirs") {
					t.Fatalf("%s has journal-dirs", f)
				}
				// It names the replication secret file an operator makes
				// (docs/security.md); here a test one stands in for it.
				if !strings.Contains(string(b), "\nrepl-secret-file = \"/etc/tandem/repl-secret\"\n") {
					t.Fatalf("%s has no repl-secret-file:\n%s", f, b)
				}
				secret := filepath.Join(dir, "secret")
				if _, err := os.Stat(secret); err != nil {
					if err := os.WriteFile(secret, []byte("test-secret\n"), 0o400); err != nil {
						t.Fatal(err)
					}
				}
				ec, err := loadAsServe(t, file, "--repl-secret-file", secret)
				if err != nil {
					t.Fatalf("%s does not load: %v\n%s", f, err, b)
				}
				if nodes == 1 { // today's config: no listen key, so serve's default address
					if ec.Name != "t" || ec.Listen != "127.0.0.1:7400" || ec.DataDir != "/srv/tandem" || ec.Loops != 3 ||
						!slices.Equal(ec.CPUs, []int{1, 2, 3}) || ec.Journal.FlusherCPU != 0 || !ec.Journal.PinFlusher ||
						ec.Replication == nil || ec.Replication.Listen != "127.0.0.1:7600" || ec.MemoryPlacement != "first-touch" {
						t.Fatalf("1 node: %+v", ec)
					}
					continue
				}
				checkNodeConfig(t, ec, n, cores, "t", "/srv/tandem")
				r := ec.Replication
				if r == nil || r.Listen != fmt.Sprintf("127.0.0.1:%d", 7600+n) || !r.PinSenders || r.SenderCPU != n*cores {
					t.Fatalf("node %d: replication %+v", n, r)
				}
				for _, v := range []string{ec.Name, ec.Listen, ec.DataDir, r.Listen} {
					if seen[v] {
						t.Fatalf("%q in two configs", v)
					}
					seen[v] = true
				}
			}
		})
	}
}

// TestTuneStdout: several configs go to standard output one after the
// other, each under a line naming its node and file; the whole is not one
// TOML file, each part is a config. The single layout gives one config.
func TestTuneStdout(t *testing.T) {
	root := fakeSysfs(t, 2, 4)
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"tune", "--sysfs", root, "--data", "/srv/tandem"}, nil, &stdout, &stderr); rc != 0 {
		t.Fatalf("tune exited %d: %s", rc, stderr.String())
	}
	if _, err := toml.Decode(stdout.String(), new(serveConfig)); err == nil {
		t.Error("the concatenation of two configs parses as one TOML file")
	}
	parts := strings.SplitAfter(stdout.String(), "====\n")
	if len(parts) != 3 || parts[0] != "# ==== node 0: tandem serve --config tandem-node0.toml ====\n" ||
		!strings.HasSuffix(parts[1], "\n\n# ==== node 1: tandem serve --config tandem-node1.toml ====\n") {
		t.Fatalf("stdout:\n%s", stdout.String())
	}
	for n, text := range []string{strings.TrimSuffix(parts[1], "# ==== node 1: tandem serve --config tandem-node1.toml ====\n"), parts[2]} {
		ec, err := loadAsServe(t, writeConfig(t, text))
		if err != nil {
			t.Fatalf("node %d: %v\n%s", n, err, text)
		}
		// Without --name, the instances are named after the host.
		checkNodeConfig(t, ec, n, 4, hostName(), "/srv/tandem")
	}

	stdout.Reset()
	if rc := run([]string{"tune", "--sysfs", root, "--data", "/srv/tandem", "--layout", "single"}, nil, &stdout, &stderr); rc != 0 {
		t.Fatalf("tune --layout single exited %d: %s", rc, stderr.String())
	}
	text := stdout.String()
	for _, absent := range []string{"# ====", "journal-dirs", "\nname =", "\nlisten ="} {
		if strings.Contains(text, absent) {
			t.Errorf("single layout output has %q", absent)
		}
	}
	if !strings.Contains(text, "Layout single") {
		t.Errorf("single layout output does not explain itself:\n%s", text)
	}
	ec, err := loadAsServe(t, writeConfig(t, text))
	if err != nil {
		t.Fatal(err)
	}
	if ec.Loops != 7 || ec.Journal.FlusherCPU != 0 || ec.DataDir != "/srv/tandem" || ec.Name != "" ||
		!slices.Equal(ec.CPUs, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("single: %+v", ec)
	}
}

func TestTuneNodeFlag(t *testing.T) {
	root := fakeSysfs(t, 4, 2)
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"tune", "--sysfs", root, "--node", "2", "--name", "t"}, nil, &stdout, &stderr); rc != 0 {
		t.Fatalf("rc %d: %s", rc, stderr.String())
	}
	if strings.Contains(stdout.String(), "# ====") || !strings.Contains(stdout.String(), "Instance 3 of 4 (layout per-node): NUMA node 2") {
		t.Fatalf("--node 2 stdout:\n%s", stdout.String())
	}
	ec, err := loadAsServe(t, writeConfig(t, stdout.String()))
	if err != nil {
		t.Fatal(err)
	}
	checkNodeConfig(t, ec, 2, 2, "t", "data")

	dir := t.TempDir()
	stdout.Reset()
	stderr.Reset()
	if rc := run([]string{"tune", "--sysfs", root, "--node", "3", "-o", filepath.Join(dir, "conf")}, nil, &stdout, &stderr); rc != 0 {
		t.Fatalf("rc %d: %s", rc, stderr.String())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "conf-node3" || stdout.Len() != 0 ||
		!strings.Contains(stderr.String(), "wrote "+filepath.Join(dir, "conf-node3")+" (node 3, 127.0.0.1:7403, 1 loops") {
		t.Fatalf("--node 3 -o conf: %v; stderr %q", entries, stderr.String())
	}

	// One node: --node 0 is its single config.
	stdout.Reset()
	if rc := run([]string{"tune", "--sysfs", fakeSysfs(t, 1, 2), "--node", "0"}, nil, &stdout, &stderr); rc != 0 ||
		!strings.Contains(stdout.String(), `cpus = "1"`) || strings.Contains(stdout.String(), "\nlisten =") {
		t.Fatalf("one node, --node 0: rc %d\n%s", rc, stdout.String())
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--node", "4"}, "--node: no NUMA node 4 with usable CPUs here (nodes: 0, 1, 2, 3)"},
		{[]string{"--node", "x"}, `--node "x" is not a node number`},
		{[]string{"--node", "-1"}, `--node "-1" is not a node number`},
		{[]string{"--node", "1", "--layout", "single"}, "--node selects a config of --layout per-node"},
		{[]string{"--layout", "per-core"}, `--layout: tuning: unknown layout "per-core" (want per-node or single)`},
		{[]string{"--listen", "localhost:http"}, "numeric base port"},
	} {
		stderr.Reset()
		stdout.Reset()
		rc := run(append([]string{"tune", "--sysfs", root}, tc.args...), nil, &stdout, &stderr)
		if rc == 0 || !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
			t.Errorf("%v: rc %d, stderr %q; want an error mentioning %q", tc.args, rc, stderr.String(), tc.want)
		}
	}
}

func TestConfigFileNames(t *testing.T) {
	p := &tuning.Plan{Node: 1}
	for in, want := range map[string]string{
		"tandem.toml":          "tandem-node1.toml",
		"/etc/tandem/a.b.toml": "/etc/tandem/a.b-node1.toml",
		"conf":                 "conf-node1",
		"/etc/x.d/conf":        "/etc/x.d/conf-node1",
	} {
		if got := configFile(in, p); got != want {
			t.Errorf("configFile(%q) = %q, want %q", in, got, want)
		}
	}
	if got := configFile("tandem.toml", &tuning.Plan{Node: -1}); got != "tandem.toml" {
		t.Errorf("single config renamed to %q", got)
	}
}

// TestServeConfigKeys: journal-dirs with one entry is data; with more it
// is an error that points at one instance per node; memory-placement is
// checked, and the flag wins over the file.
func TestServeConfigKeys(t *testing.T) {
	ec, err := loadAsServe(t, writeConfig(t, `data = "x"`+"\n"+`journal-dirs = ["/srv/j"]`+"\n"))
	if err != nil || ec.DataDir != "/srv/j" || ec.MemoryPlacement != "first-touch" {
		t.Fatalf("one journal-dirs entry: data %q memory %q, %v", ec.DataDir, ec.MemoryPlacement, err)
	}
	_, err = loadAsServe(t, writeConfig(t, `journal-dirs = ["/srv/j0", "/srv/j1"]`+"\n"))
	if err == nil || !strings.Contains(err.Error(), "journal-dirs: 2 directories, but one instance keeps one journal") ||
		!strings.Contains(err.Error(), "run one instance per node (`tandem tune --layout per-node` writes their configs)") {
		t.Fatalf("two journal-dirs: %v", err)
	}
	_, err = loadAsServe(t, writeConfig(t, `memory-placement = "interleave"`+"\n"))
	if err == nil || err.Error() != `memory-placement: "interleave" is not a placement (want first-touch or off)` {
		t.Fatalf("bad memory-placement: %v", err)
	}
	off := writeConfig(t, `memory-placement = "off"`+"\n")
	if ec, err := loadAsServe(t, off); err != nil || ec.MemoryPlacement != "off" {
		t.Fatalf("memory-placement off: %q, %v", ec.MemoryPlacement, err)
	}
	if ec, err := loadAsServe(t, off, "--memory-placement", "first-touch"); err != nil || ec.MemoryPlacement != "first-touch" {
		t.Fatalf("flag over file: %q, %v", ec.MemoryPlacement, err)
	}
	// journal-sync and zero-copy-min reach the engine; auto leaves the
	// choice to it; a bad path is refused.
	ec, err = loadAsServe(t, writeConfig(t, `journal-sync = "uring"`+"\n"+`zero-copy-min = 65536`+"\n"))
	if err != nil || ec.Journal.SyncVia != "uring" || ec.ZeroCopyMin != 65536 {
		t.Fatalf("journal-sync uring, zero-copy-min: %q %d, %v", ec.Journal.SyncVia, ec.ZeroCopyMin, err)
	}
	if ec, err := loadAsServe(t, writeConfig(t, `journal-sync = "auto"`+"\n")); err != nil || ec.Journal.SyncVia != "" {
		t.Fatalf("journal-sync auto: %q, %v", ec.Journal.SyncVia, err)
	}
	if _, err := loadAsServe(t, writeConfig(t, `journal-sync = "aio"`+"\n")); err == nil || !strings.Contains(err.Error(), `journal-sync: "aio" is not a path`) {
		t.Fatalf("bad journal-sync: %v", err)
	}
	// The binary says the same and exits 2 before opening anything.
	r := tandem(t, "", "serve", "--memory-placement", "bogus", "--data", t.TempDir())
	if r.code != 2 || !strings.Contains(r.stderr, `tandem serve: memory-placement: "bogus" is not a placement`) {
		t.Fatalf("serve --memory-placement bogus: %+v", r)
	}
}

// TestTuneServePerNode is `tandem tune -o f && tandem serve --config
// f-nodeN` on a fake two-node machine whose CPUs 0 and 1 exist here: both
// instances start from their files alone and answer as themselves.
func TestTuneServePerNode(t *testing.T) {
	allowed, err := poll.AllowedCPUs()
	if err != nil || !slices.Contains(allowed, 0) || !slices.Contains(allowed, 1) {
		t.Skipf("needs cpus 0 and 1 (allowed %v, %v)", allowed, err)
	}
	root := fakeSysfs(t, 2, 1) // node 0: cpu 0; node 1: cpu 1
	dir := t.TempDir()
	base := twoFreePorts(t)
	file := filepath.Join(dir, "tandem.toml")
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"tune", "--sysfs", root, "-o", file, "--data", filepath.Join(dir, "data"), "--name", "e2e",
		"--listen", fmt.Sprintf("127.0.0.1:%d", base)}, nil, &stdout, &stderr); rc != 0 {
		t.Fatalf("tune: rc %d: %s", rc, stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for n := 0; n < 2; n++ {
		in := &replInstance{name: fmt.Sprintf("e2e-node%d", n), listen: fmt.Sprintf("127.0.0.1:%d", base+n)}
		in.proc = startServe(t, in.listen, "serve", "--engine", testEngine, "--config", configFile(file, &tuning.Plan{Node: n}))
		st := in.stats(t, ctx) // connects and checks the instance's name
		in.proc.terminate(t)
		if st.Instance != in.name {
			t.Fatalf("node %d: stats of instance %q", n, st.Instance)
		}
		if _, err := os.Stat(filepath.Join(dir, "data", fmt.Sprintf("node%d", n))); err != nil {
			t.Fatalf("node %d: journal directory: %v", n, err)
		}
	}
}

// startServe starts `tandem args...` and waits until it accepts
// connections at addr; failing to is fatal.
func startServe(t *testing.T, addr string, args ...string) *serverProc {
	t.Helper()
	p, err := spawnServe(t, addr, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// twoFreePorts finds a port p such that p and p+1 are free on loopback.
func twoFreePorts(t *testing.T) int {
	t.Helper()
	for range 50 {
		l0, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l0.Addr().(*net.TCPAddr).Port
		l1, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l0.Close()
		if err == nil {
			l1.Close()
			return p
		}
	}
	t.Fatal("no two consecutive free ports")
	return 0
}

func TestTuneOutputFileAndErrors(t *testing.T) {
	root := fakeSysfs(t, 1, 2)
	out := filepath.Join(t.TempDir(), "tandem.toml")
	var stdout, stderr bytes.Buffer
	if rc := run([]string{"tune", "--sysfs", root, "-o", out}, nil, &stdout, &stderr); rc != 0 {
		t.Fatalf("rc %d: %s", rc, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(b), `cpus = "1"`) || stdout.Len() != 0 {
		t.Fatalf("file %q, %v; stdout %q", b, err, stdout.String())
	}
	os.WriteFile(filepath.Join(root, "devices/system/node/node0/cpulist"), []byte("0-z\n"), 0o644)
	stderr.Reset()
	if rc := run([]string{"tune", "--sysfs", root}, nil, &stdout, &stderr); rc != 1 ||
		!strings.Contains(stderr.String(), `node0/cpulist: tuning: bad cpu list "0-z"`) {
		t.Fatalf("bad cpulist: rc %d, %q", rc, stderr.String())
	}
	stderr.Reset()
	if rc := run([]string{"tune", "extra"}, nil, &stdout, &stderr); rc != 2 {
		t.Fatalf("stray argument: rc %d", rc)
	}
}

// TestServeFlagsWinOverConfig: a flag given on the command line overrides
// the file's key (serve's usage and docs/tuning.md promise it).
func TestServeFlagsWinOverConfig(t *testing.T) {
	file := writeConfig(t, "data = \"fromfile\"\nloops = 3\nlisten = \"127.0.0.1:7401\"\nsync-delay = \"2ms\"\npeer = [\"a=127.0.0.1:1\"]\n")
	ec, err := loadAsServe(t, file, "--data", "fromflag", "--loops", "5", "--sync-delay", "1m30s", "--peer", "b=127.0.0.1:2")
	if err != nil {
		t.Fatal(err)
	}
	if ec.DataDir != "fromflag" || ec.Loops != 5 || ec.Journal.MaxSyncDelay != 90*time.Second || ec.Listen != "127.0.0.1:7401" ||
		ec.Replication == nil || len(ec.Replication.Destinations) != 1 || ec.Replication.Destinations[0].Name != "b" {
		t.Fatalf("data %q loops %d sync-delay %v listen %q replication %+v", ec.DataDir, ec.Loops, ec.Journal.MaxSyncDelay, ec.Listen, ec.Replication)
	}
}
