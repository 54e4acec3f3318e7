package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/tandemhq/tandem/admin"
	"github.com/tandemhq/tandem/auth"
)

// adminSecurity applies the client port's security settings to the admin
// listener: HTTPS with the same certificate when --tls-cert is set (client
// certificates from --tls-client-ca are verified when given, not
// required: a browser may log on with a password), and, with --users,
// /metrics, /v1/stat and the console only for a user with admin = true,
// by HTTP basic auth (only over TLS, unless the listener is on loopback)
// or by a verified client certificate whose CN is such a user. /healthz
// and /readyz stay open. Verified passwords are remembered for a minute
// (argon2id costs 64 MiB per check: a scraper every second must not pay
// it every time). users is read at each request, so a SIGHUP reload
// applies.
func adminSecurity(ac *admin.Config, sec *serveSecurity, users func() *auth.Users) error {
	if sec.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(sec.TLSCert, sec.TLSKey)
		if err != nil {
			return fmt.Errorf("admin: certificate %s, key %s: %w", sec.TLSCert, sec.TLSKey, err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if sec.TLSClientCA != "" {
			pem, err := os.ReadFile(sec.TLSClientCA)
			if err != nil {
				return fmt.Errorf("admin: client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("admin: client CA %s: no PEM certificate in it", sec.TLSClientCA)
			}
			tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
		ac.TLS = tc
	}
	if sec.Users == "" {
		return nil
	}
	var mu sync.Mutex
	verified := map[[32]byte]time.Time{}
	ac.Authorize = func(r *http.Request) error {
		us := users()
		if us == nil {
			return errors.New("no users file loaded")
		}
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			if u := us.Lookup(r.TLS.VerifiedChains[0][0].Subject.CommonName); u != nil && u.Admin {
				return nil
			}
		}
		name, pw, ok := r.BasicAuth()
		if !ok {
			return errors.New("an admin user is required (HTTP basic auth or a client certificate)")
		}
		if r.TLS == nil && !loopbackRequest(r) {
			return errors.New("basic auth only over TLS (set --tls-cert)")
		}
		key := sha256.Sum256([]byte(name + "\x00" + pw))
		mu.Lock()
		t, hit := verified[key]
		mu.Unlock()
		if hit && time.Since(t) < time.Minute {
			if u := us.Lookup(name); u != nil && u.Admin {
				return nil
			}
		}
		u, err := us.Authenticate(name, []byte(pw))
		if err != nil {
			return fmt.Errorf("user %q: %w", name, err)
		}
		if !u.Admin {
			return fmt.Errorf("user %q is not an admin", name)
		}
		mu.Lock()
		if len(verified) > 1024 {
			clear(verified)
		}
		verified[key] = time.Now()
		mu.Unlock()
		return nil
	}
	return nil
}

func loopbackRequest(r *http.Request) bool {
	host := r.RemoteAddr
	for i := len(host) - 1; i >= 0; i-- {
		if host[i] == ':' {
			host = host[:i]
			break
		}
	}
	return host == "127.0.0.1" || host == "[::1]" || host == "::1"
}
