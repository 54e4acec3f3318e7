package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
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

// TestTuneConfigLoads checks that `tandem tune` output is a serve config:
// every key is either a serve key already or one of the new keys the
// tuning package declares, and the known ones load with their types.
func TestTuneConfigLoads(t *testing.T) {
	for _, nodes := range []int{1, 2} {
		root := fakeSysfs(t, nodes, 4)
		var stdout, stderr bytes.Buffer
		if rc := run([]string{"tune", "--sysfs", root, "--data", "/srv/tandem"}, nil, &stdout, &stderr); rc != 0 {
			t.Fatalf("tune exited %d: %s", rc, stderr.String())
		}
		cfg := serveConfig{LogLevel: "info", SegmentSize: 64 << 20} // serve's flag defaults
		md, err := toml.Decode(stdout.String(), &cfg)
		if err != nil {
			t.Fatalf("%v\n%s", err, stdout.String())
		}
		// serve knows every key tune writes.
		if undec := md.Undecoded(); len(undec) > 0 {
			t.Errorf("keys serve does not know: %v", undec)
		}
		wantLoops := nodes * 3
		if cfg.Loops != wantLoops || !cfg.Pin || cfg.WriteHighWater != 1<<20 || cfg.Engine == "" || cfg.FlusherCPUs == "" {
			t.Fatalf("%d nodes: loaded %+v", nodes, cfg)
		}
		ec, err := cfg.engineConfig()
		if nodes > 1 {
			// One journal per NUMA node is planned by tune but not served
			// yet: serve says so instead of silently using one.
			if err == nil || !strings.Contains(err.Error(), "journal-dirs") {
				t.Fatalf("%d nodes: want a clear journal-dirs error, got %v", nodes, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("engineConfig: %v", err)
		}
		if cfg.Data != "/srv/tandem" || !ec.Journal.PinFlusher {
			t.Fatalf("1 node: data %q, pin flusher %v", cfg.Data, ec.Journal.PinFlusher)
		}
		if len(ec.CPUs) != wantLoops {
			t.Fatalf("engine config cpus %v", ec.CPUs)
		}
	}
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
