package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/tandemhq/tandem/auth"
)

// ErrTLSRequired: the server's port serves TLS only and this client spoke
// plaintext (configure WithTLS). Retrying without TLS cannot succeed.
var ErrTLSRequired = errors.New("client: the server requires TLS")

// ErrLimit: a server cap is reached (connections, subscriptions, logons
// awaiting verification).
var ErrLimit = errors.New("client: server limit reached")

// WithTLS makes the client speak TLS. cfg is cloned; when it names no
// ServerName, the host of the address dialed is used (so the server's
// certificate is verified against it). For mTLS, set cfg.Certificates
// (the certificate's CN is then the user; no password is needed).
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) { c.tls = cfg.Clone() }
}

// WithUser logs on as a user of the server's users file with a password:
// the Logon credentials become USER, NUL, PASSWORD (package auth). It
// replaces WithCredentials.
func WithUser(user string, password []byte) Option {
	return func(c *config) { c.credentials = auth.Credentials(user, password) }
}

// UserAuthenticator is an Authenticator for the HA client that logs on as
// user with password on every server.
func UserAuthenticator(user string, password []byte) Authenticator {
	return StaticCredentials(auth.Credentials(user, password))
}

// startTLS runs the client side of the TLS handshake on nc under ctx.
func startTLS(ctx context.Context, nc net.Conn, addr string, cfg *tls.Config) (net.Conn, error) {
	cfg = cfg.Clone()
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		cfg.ServerName = host
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("client: tls handshake with %s: %w", addr, err)
	}
	return tc, nil
}
