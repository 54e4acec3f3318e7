package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The deployment files (deploy/) cannot be built or run here (no
// container engine, no cluster), so they are checked statically: every
// flag and config key against tandem serve's real ones, ports, probes,
// volumes and secrets against what the flags say.

const deployDir = "../../deploy"

// parseServe parses serve arguments with serve's real flag set (a config
// file among them is loaded too, from configs when given there).
func parseServe(t *testing.T, where string, args []string, configs map[string]string) serveConfig {
	t.Helper()
	var cfg serveConfig
	fs, configFile := serveFlags(&cfg)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("%s: tandem serve %s: %v", where, strings.Join(args, " "), err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("%s: tandem serve: unexpected argument %q", where, fs.Arg(0))
	}
	if *configFile != "" {
		text, ok := configs[*configFile]
		if !ok {
			t.Fatalf("%s: --config %s: no such file in the deployment", where, *configFile)
		}
		loadConfigText(t, where, text, fs, &cfg)
	}
	return cfg
}

// loadConfigText loads a TOML config through serve's own loader, which
// refuses unknown keys.
func loadConfigText(t *testing.T, where, text string, fs *flag.FlagSet, cfg *serveConfig) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tandem.toml")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := loadServeConfig(f, fs, cfg); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

func port(t *testing.T, where, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: address %q: %v", where, addr, err)
	}
	return p
}

// peerAddrs returns the NAME -> HOST:PORT of the peers.
func peerAddrs(peers []string) map[string]string {
	m := map[string]string{}
	for _, p := range peers {
		head, _, _ := strings.Cut(p, ",")
		if name, addr, ok := strings.Cut(head, "="); ok {
			m[name] = addr
		}
	}
	return m
}

func TestDeployDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var froms int
	var user, volume, entrypoint, cmd string
	var expose []string
	var buildLine string
	sc := bufio.NewScanner(f)
	var cont string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, cont = cont+line, ""
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			froms++
			user, volume, expose, entrypoint, cmd = "", "", nil, "", "" // what counts is the final stage's
		case "USER":
			user = rest
		case "VOLUME":
			volume = rest
		case "EXPOSE":
			expose = strings.Fields(rest)
		case "ENTRYPOINT":
			entrypoint = rest
		case "CMD":
			cmd = rest
		case "RUN":
			if strings.Contains(rest, "go build") {
				buildLine = rest
			}
		}
	}
	if froms < 2 {
		t.Errorf("%d stages, want a multi-stage build", froms)
	}
	if !strings.Contains(buildLine, "CGO_ENABLED=0") || !strings.Contains(buildLine, "./cmd/tandem") {
		t.Errorf("build is not a static build of ./cmd/tandem: %q", buildLine)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}
	var vols, ep, args []string
	for _, j := range []struct {
		text string
		into *[]string
	}{{volume, &vols}, {entrypoint, &ep}, {cmd, &args}} {
		if err := json.Unmarshal([]byte(j.text), j.into); err != nil {
			t.Fatalf("%q is not a JSON array: %v", j.text, err)
		}
	}
	if len(ep) != 1 || !strings.HasSuffix(ep[0], "/tandem") || len(args) == 0 || args[0] != "serve" {
		t.Fatalf("entrypoint %v, cmd %v: want tandem serve", ep, args)
	}
	cfg := parseServe(t, "Dockerfile CMD", args[1:], nil)
	if len(vols) != 1 || vols[0] != cfg.Data {
		t.Errorf("volume %v, but --data is %q", vols, cfg.Data)
	}
	exposed := strings.Join(expose, " ") + " "
	for _, a := range []string{cfg.Listen, cfg.Admin} {
		if !strings.Contains(exposed, port(t, "Dockerfile", a)+" ") {
			t.Errorf("port of %s not exposed (%v)", a, expose)
		}
	}
	if !strings.Contains(exposed, "7401 ") {
		t.Errorf("replication port 7401 not exposed (%v)", expose)
	}
}

func TestDeployCompose(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "compose", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Ports   []string `yaml:"ports"`
			Volumes []string `yaml:"volumes"`
			Ulimits struct {
				Nofile  int `yaml:"nofile"`
				Memlock int `yaml:"memlock"`
			} `yaml:"ulimits"`
			Secrets []struct {
				Source string `yaml:"source"`
				Target string `yaml:"target"`
				Mode   int    `yaml:"mode"`
			} `yaml:"secrets"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
		Secrets map[string]struct {
			File string `yaml:"file"`
		} `yaml:"secrets"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Services) != 2 {
		t.Fatalf("%d services, want a pair", len(doc.Services))
	}
	for name, s := range doc.Services {
		where := "compose service " + name
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			t.Fatalf("%s: command %v", where, s.Command)
		}
		cfg := parseServe(t, where, s.Command[1:], nil)
		if cfg.Name != name {
			t.Errorf("%s: --name %q", where, cfg.Name)
		}
		// The peer is the other service, at its replication port, sync.
		peers := peerAddrs(cfg.Peers)
		if len(peers) != 1 {
			t.Fatalf("%s: peers %v", where, cfg.Peers)
		}
		for peer, addr := range peers {
			other, ok := doc.Services[peer]
			if !ok || peer == name {
				t.Fatalf("%s: peer %s is not the other service", where, peer)
			}
			ocfg := parseServe(t, "compose service "+peer, other.Command[1:], nil)
			if host, p, _ := net.SplitHostPort(addr); host != peer || p != port(t, peer, ocfg.ReplListen) {
				t.Errorf("%s: peer address %s, but %s replicates on %s", where, addr, peer, ocfg.ReplListen)
			}
			if !strings.HasSuffix(cfg.Peers[0], ",sync") {
				t.Errorf("%s: peer %q is not sync", where, cfg.Peers[0])
			}
		}
		published := map[string]string{} // container port -> host side
		for _, p := range s.Ports {
			i := strings.LastIndex(p, ":")
			published[p[i+1:]] = p[:i]
		}
		if _, ok := published[port(t, where, cfg.Listen)]; !ok {
			t.Errorf("%s: client port of %s not published (%v)", where, cfg.Listen, s.Ports)
		}
		if host, ok := published[port(t, where, cfg.Admin)]; !ok || !strings.HasPrefix(host, "127.0.0.1:") {
			t.Errorf("%s: admin port of %s not published on the host's loopback (%v)", where, cfg.Admin, s.Ports)
		}
		mounted := false
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if _, named := doc.Volumes[src]; named && dst == cfg.Data {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: no named volume at --data %s (%v)", where, cfg.Data, s.Volumes)
		}
		if len(s.Secrets) != 1 || s.Secrets[0].Mode != 0o400 || "/run/secrets/"+s.Secrets[0].Target != cfg.ReplSecretFile {
			t.Errorf("%s: secrets %+v, want one mounted 0400 at --repl-secret-file %s", where, s.Secrets, cfg.ReplSecretFile)
		} else if _, ok := doc.Secrets[s.Secrets[0].Source]; !ok {
			t.Errorf("%s: secret %s not defined", where, s.Secrets[0].Source)
		}
		if s.Ulimits.Nofile < 65536 || s.Ulimits.Memlock != -1 {
			t.Errorf("%s: ulimits %+v, want nofile >= 65536 and memlock unlimited", where, s.Ulimits)
		}
	}
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// k8s objects, only the fields checked.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		// PodDisruptionBudget
		MaxUnavailable *int `yaml:"maxUnavailable"`
		// Service
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
		// StatefulSet
		ServiceName string `yaml:"serviceName"`
		Replicas    int    `yaml:"replicas"`
		Template    struct {
			Spec struct {
				Affinity struct {
					PodAntiAffinity struct {
						Required []struct {
							TopologyKey string `yaml:"topologyKey"`
						} `yaml:"requiredDuringSchedulingIgnoredDuringExecution"`
					} `yaml:"podAntiAffinity"`
				} `yaml:"affinity"`
				Containers []struct {
					Args  []string `yaml:"args"`
					Ports []struct {
						Name          string `yaml:"name"`
						ContainerPort int    `yaml:"containerPort"`
					} `yaml:"ports"`
					ReadinessProbe k8sProbe `yaml:"readinessProbe"`
					LivenessProbe  k8sProbe `yaml:"livenessProbe"`
					VolumeMounts   []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret *struct {
						SecretName  string `yaml:"secretName"`
						DefaultMode int    `yaml:"defaultMode"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

func TestDeployKubernetes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "k8s", "tandem.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs := map[string]k8sObject{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var o k8sObject
		if err := dec.Decode(&o); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	sts, ok := objs["StatefulSet/tandem"]
	if !ok {
		t.Fatalf("no StatefulSet/tandem in %v", keys(objs))
	}
	if sts.Spec.Replicas != 2 {
		t.Errorf("%d replicas, want a pair", sts.Spec.Replicas)
	}
	if peers, ok := objs["Service/"+sts.Spec.ServiceName]; !ok || peers.Spec.ClusterIP != "None" || !peers.Spec.PublishNotReadyAddresses {
		t.Errorf("governing service %s: want headless, publishing not-ready pods (peers must find each other while catching up)", sts.Spec.ServiceName)
	}
	pdb, ok := objs["PodDisruptionBudget/tandem"]
	if !ok || pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget: want maxUnavailable 1")
	}
	pod := sts.Spec.Template.Spec
	if aa := pod.Affinity.PodAntiAffinity.Required; len(aa) != 1 || aa[0].TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("anti-affinity %+v: want required, per host", aa)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	var cm k8sObject
	var secretMode int
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			cm = objs["ConfigMap/"+v.ConfigMap.Name]
			if mounts[v.Name] == "" {
				t.Errorf("config volume %s not mounted", v.Name)
			}
		case v.Secret != nil:
			secretMode = v.Secret.DefaultMode
			if mounts[v.Name] == "" {
				t.Errorf("secret volume %s not mounted", v.Name)
			}
		}
	}
	if secretMode != 0o400 {
		t.Errorf("secret defaultMode %#o, want 0400", secretMode)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || mounts[sts.Spec.VolumeClaimTemplates[0].Metadata.Name] == "" {
		t.Fatalf("volumeClaimTemplates %+v not mounted (%v)", sts.Spec.VolumeClaimTemplates, mounts)
	}
	dataMount := mounts[sts.Spec.VolumeClaimTemplates[0].Metadata.Name]
	configs := map[string]string{}
	for name, text := range cm.Data {
		configs[mounts["config"]+"/"+name] = text
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v", c.Args)
	}
	for i := 0; i < sts.Spec.Replicas; i++ {
		podName := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		where := "pod " + podName
		args := make([]string, len(c.Args)-1)
		for k, a := range c.Args[1:] {
			args[k] = strings.ReplaceAll(a, "$(POD_NAME)", podName)
		}
		cfg := parseServe(t, where, args, configs)
		if cfg.Name != podName {
			t.Errorf("%s: name %q", where, cfg.Name)
		}
		if cfg.Data != dataMount {
			t.Errorf("%s: data %s, but the claim is mounted at %s", where, cfg.Data, dataMount)
		}
		if !strings.HasPrefix(cfg.ReplSecretFile, mounts["secret"]+"/") {
			t.Errorf("%s: repl-secret-file %s not in the secret mount %s", where, cfg.ReplSecretFile, mounts["secret"])
		}
		for name, addr := range map[string]string{"client": cfg.Listen, "repl": cfg.ReplListen, "admin": cfg.Admin} {
			if p := port(t, where, addr); fmt.Sprint(ports[name]) != p {
				t.Errorf("%s: container port %s is %d, but the config says %s", where, name, ports[name], addr)
			}
		}
		peers := peerAddrs(cfg.Peers)
		other := fmt.Sprintf("%s-%d", sts.Metadata.Name, 1-i)
		if want := fmt.Sprintf("%s.%s:%d", other, sts.Spec.ServiceName, ports["repl"]); len(peers) != 1 || peers[other] != want {
			t.Errorf("%s: peers %v, want %s=%s", where, cfg.Peers, other, want)
		}
	}
	if p := c.ReadinessProbe.HTTPGet; p.Path != "/readyz" || p.Port != "admin" {
		t.Errorf("readiness probe %+v, want /readyz on admin", p)
	}
	if p := c.LivenessProbe.HTTPGet; p.Path != "/healthz" || p.Port != "admin" {
		t.Errorf("liveness probe %+v, want /healthz on admin", p)
	}
}

func keys(m map[string]k8sObject) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// unitValues reads a systemd unit's Key=Value lines.
func unitValues(t *testing.T, text string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q", line)
		}
		m[k] = v
	}
	return m
}

func TestDeploySystemd(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "systemd", "tandem.service"))
	if err != nil {
		t.Fatal(err)
	}
	toml, err := os.ReadFile(filepath.Join(deployDir, "systemd", "tandem.toml"))
	if err != nil {
		t.Fatal(err)
	}
	u := unitValues(t, string(b))
	for k, want := range map[string]string{"LimitNOFILE": "1048576", "LimitMEMLOCK": "infinity", "KillSignal": "SIGTERM", "User": "tandem"} {
		if u[k] != want {
			t.Errorf("%s=%q, want %q", k, u[k], want)
		}
	}
	exec := strings.Fields(strings.ReplaceAll(u["ExecStart"], "${CREDENTIALS_DIRECTORY}", "/run/credentials/tandem.service"))
	if len(exec) < 2 || exec[0] != "/usr/local/bin/tandem" || exec[1] != "serve" {
		t.Fatalf("ExecStart %v", exec)
	}
	cfg := parseServe(t, "ExecStart", exec[2:], map[string]string{"/etc/tandem/tandem.toml": string(toml)})
	if !strings.Contains(u["ReadWritePaths"], cfg.Data) || !strings.HasSuffix(cfg.Data, "/"+u["StateDirectory"]) {
		t.Errorf("data %s is not the writable state directory (%s, %s)", cfg.Data, u["ReadWritePaths"], u["StateDirectory"])
	}
	if cfg.Admin == "" || !strings.HasPrefix(cfg.Admin, "127.0.0.1:") {
		t.Errorf("admin %q: the example keeps it on loopback", cfg.Admin)
	}
	name, _, _ := strings.Cut(u["LoadCredential"], ":")
	if cfg.ReplSecretFile != "/run/credentials/tandem.service/"+name {
		t.Errorf("repl-secret-file %s is not the credential %s", cfg.ReplSecretFile, name)
	}
}

// systemd-analyze verify on the unit pointed at the built binary.
func TestDeploySystemdVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the unit is checked statically only (TestDeploySystemd)")
	}
	b, err := os.ReadFile(filepath.Join(deployDir, "systemd", "tandem.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(t.TempDir(), "tandem.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/tandem"), []byte(tandemBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
