package main

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandemhq/tandem/admin"
	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/internal/testcert"
)

// With --tls-cert and --users, the admin listener serves HTTPS and gives
// /metrics only to an admin user (basic auth or a client certificate);
// the probes stay open; plaintext HTTP fails.
func TestAdminListenerSecurity(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t, "ca")
	cf, kf := testcert.WritePair(t, dir, "server", ca.Issue(t, "127.0.0.1", true, time.Now().Add(time.Hour)))
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.PEM, 0o600)
	cheap := auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}
	hal, _ := auth.HashWith([]byte("pw-al"), cheap)
	hroot, _ := auth.HashWith([]byte("pw-root"), cheap)
	us, err := auth.Parse([]byte(`[[user]]
name = "al"
password = "` + hal + `"

[[user]]
name = "root"
password = "` + hroot + `"
admin = true
`))
	if err != nil {
		t.Fatal(err)
	}
	sec := &serveSecurity{TLSCert: cf, TLSKey: kf, TLSClientCA: caFile, Users: "users.toml"}
	ac := admin.Config{Addr: freeAddr(t), Logger: slog.New(slog.DiscardHandler)}
	if err := adminSecurity(&ac, sec, func() *auth.Users { return us }); err != nil {
		t.Fatal(err)
	}
	l, err := admin.Start(ac)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	httpsClient := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
	}
	get := func(c *http.Client, url, user, pw string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := c.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := "https://" + ac.Addr
	plain := httpsClient()
	if code := get(plain, base+"/healthz", "", ""); code != 200 {
		t.Errorf("/healthz without credentials: %d, want 200", code)
	}
	for _, tc := range []struct {
		user, pw string
		want     bool
	}{{"", "", false}, {"al", "pw-al", false}, {"root", "wrong", false}, {"root", "pw-root", true}, {"root", "pw-root", true}} {
		code := get(plain, base+"/metrics", tc.user, tc.pw)
		if ok := code != 401 && code > 0; ok != tc.want {
			t.Errorf("/metrics as %q/%q: %d", tc.user, tc.pw, code)
		}
	}
	if code := get(httpsClient(ca.Issue(t, "root", false, time.Now().Add(time.Hour))), base+"/metrics", "", ""); code == 401 || code < 0 {
		t.Errorf("/metrics with root's client certificate: %d", code)
	}
	if code := get(httpsClient(ca.Issue(t, "al", false, time.Now().Add(time.Hour))), base+"/metrics", "", ""); code != 401 {
		t.Errorf("/metrics with al's client certificate: %d, want 401", code)
	}
	if code := get(&http.Client{Timeout: 5 * time.Second}, "http://"+ac.Addr+"/healthz", "", ""); code == 200 {
		t.Errorf("plaintext HTTP on the TLS admin port answered 200")
	}
}
