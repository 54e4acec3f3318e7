package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/tandemhq/tandem/auth"
	"github.com/tandemhq/tandem/client"
	"github.com/tandemhq/tandem/engine"
)

// Client-side security flags, shared by pub, sub and stat.
type clientSecurity struct {
	tlsCA, tlsCert, tlsKey *string
	user, passwordFile     *string
}

func addClientSecurityFlags(fs *flag.FlagSet) *clientSecurity {
	return &clientSecurity{
		tlsCA:        fs.String("tls-ca", "", "PEM `FILE` of the CAs that sign the server's certificate: connect with TLS"),
		tlsCert:      fs.String("tls-cert", "", "PEM client certificate `FILE` (mTLS; its CN is the user, no password needed)"),
		tlsKey:       fs.String("tls-key", "", "PEM private key `FILE` of --tls-cert"),
		user:         fs.String("user", "", "log on as `USER` of the server's users file (password from --password-file or TANDEM_PASSWORD)"),
		passwordFile: fs.String("password-file", "", "`FILE` holding the password (one trailing newline is stripped)"),
	}
}

// defaultName is the client name a tool uses when --name is not given:
// USER-TOOL-PID with --user (within the user's default client-names), else
// fallback.
func (cs *clientSecurity) defaultName(tool, name, fallback string) string {
	if name != "" {
		return name
	}
	if *cs.user != "" {
		return fmt.Sprintf("%s-%s-%d", *cs.user, tool, os.Getpid())
	}
	return fallback
}

// options turns the flags into client options.
func (cs *clientSecurity) options() ([]client.Option, error) {
	var opts []client.Option
	if *cs.tlsCA != "" || *cs.tlsCert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if *cs.tlsCA != "" {
			pem, err := os.ReadFile(*cs.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", *cs.tlsCA)
			}
			cfg.RootCAs = pool
		}
		if (*cs.tlsCert == "") != (*cs.tlsKey == "") {
			return nil, errors.New("--tls-cert and --tls-key go together")
		}
		if *cs.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(*cs.tlsCert, *cs.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	if *cs.user != "" {
		pw, err := readPassword(*cs.passwordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithUser(*cs.user, pw))
	} else if *cs.passwordFile != "" {
		return nil, errors.New("--password-file needs --user")
	}
	return opts, nil
}

// readPassword reads the password from file, else TANDEM_PASSWORD; one
// trailing newline is stripped.
func readPassword(file string) ([]byte, error) {
	var pw []byte
	switch env, ok := os.LookupEnv("TANDEM_PASSWORD"); {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		pw = b
	case ok:
		pw = []byte(env)
	default:
		return nil, errors.New("--user needs a password: --password-file FILE or TANDEM_PASSWORD")
	}
	return bytes.TrimSuffix(pw, []byte("\n")), nil
}

const passwdText = `Reads one password on standard input (one trailing newline is stripped)
and prints its argon2id hash alone on the last line of standard output, for
the password key of a [[user]] in the users file (serve --users). Parameters:
argon2id, 64 MiB, 3 passes, 4 lanes, 16-byte random salt, 32-byte key
(RFC 9106's second recommendation); see docs/security.md.
`

func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("passwd", "< password", passwdText, stderr)
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	pw, err := io.ReadAll(io.LimitReader(stdin, 1<<16+1))
	if err != nil {
		fmt.Fprintf(stderr, "tandem passwd: %v\n", err)
		return 1
	}
	if len(pw) > 1<<16 {
		fmt.Fprintln(stderr, "tandem passwd: password longer than 64 KiB")
		return 2
	}
	pw = bytes.TrimSuffix(pw, []byte("\n"))
	if len(pw) == 0 {
		fmt.Fprintln(stderr, "tandem passwd: empty password")
		return 2
	}
	h, err := auth.HashPassword(pw)
	if err != nil {
		fmt.Fprintf(stderr, "tandem passwd: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, h)
	return 0
}

// serveSecurity is serve's client-port security and caps (flags and TOML
// keys of the same names).
type serveSecurity struct {
	TLSCert       string   `toml:"tls-cert"`
	TLSKey        string   `toml:"tls-key"`
	TLSClientCA   string   `toml:"tls-client-ca"`
	TLSMinVersion string   `toml:"tls-min-version"`
	Users         string   `toml:"users"`
	MaxConns      int      `toml:"max-connections"`
	MaxConnsUser  int      `toml:"max-connections-per-user"`
	MaxSubs       int      `toml:"max-subscriptions"`
	MaxPattern    int      `toml:"max-pattern"`
	LogonBuffer   int      `toml:"logon-buffer"`
	AuthWorkers   int      `toml:"auth-workers"`
	AuthQueue     int      `toml:"auth-queue"`
	KeepAlive     duration `toml:"tcp-keepalive"`
}

func addServeSecurityFlags(fs *flag.FlagSet, c *serveSecurity) {
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate chain `FILE`: serve TLS only on the client port (reloaded on SIGHUP)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `FILE` of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM `FILE` of client CAs: require and verify client certificates (mTLS; the CN is the user)")
	fs.StringVar(&c.TLSMinVersion, "tls-min-version", "1.3", "oldest TLS version accepted: 1.3 or 1.2")
	fs.StringVar(&c.Users, "users", "", "users `FILE` (TOML [[user]] entries): every logon must authenticate; permissions per user")
	fs.IntVar(&c.MaxConns, "max-connections", engine.DefaultMaxConnections, "client connections of the instance")
	fs.IntVar(&c.MaxConnsUser, "max-connections-per-user", engine.DefaultMaxConnectionsPerUser, "connections logged on as one user (with --users)")
	fs.IntVar(&c.MaxSubs, "max-subscriptions", engine.DefaultMaxSubscriptions, "subscriptions per connection")
	fs.IntVar(&c.MaxPattern, "max-pattern", engine.DefaultMaxPattern, "longest regular-expression topic pattern in bytes")
	fs.IntVar(&c.LogonBuffer, "logon-buffer", engine.DefaultLogonBuffer, "largest frame in bytes before a connection has logged on")
	fs.IntVar(&c.AuthWorkers, "auth-workers", 0, "password verification workers (default 2 x cores)")
	fs.IntVar(&c.AuthQueue, "auth-queue", engine.DefaultAuthQueue, "logons waiting for a verification worker; beyond it logons are refused (limit)")
	c.KeepAlive.Duration = engine.DefaultKeepAlive
	fs.Var(&c.KeepAlive, "tcp-keepalive", "TCP keepalive idle time on accepted sockets (negative: off)")
}

// adminUsers is the users file in force, for the admin listener's
// authorization (replaced on SIGHUP).
var adminUsers atomic.Pointer[auth.Users]

// apply fills the engine's security settings.
func (c *serveSecurity) apply(ec *engine.Config) error {
	if c.Users != "" {
		us, err := auth.Load(c.Users)
		if err != nil {
			return fmt.Errorf("users: %w", err)
		}
		ec.Users = us
	}
	if c.TLSCert != "" || c.TLSKey != "" || c.TLSClientCA != "" {
		tc := &engine.TLSConfig{CertFile: c.TLSCert, KeyFile: c.TLSKey, ClientCAFile: c.TLSClientCA}
		switch strings.TrimPrefix(c.TLSMinVersion, "TLS") {
		case "", "1.3":
			tc.MinVersion = tls.VersionTLS13
		case "1.2":
			tc.MinVersion = tls.VersionTLS12
		default:
			return fmt.Errorf("tls-min-version %q: want 1.3 or 1.2", c.TLSMinVersion)
		}
		ec.TLS = tc
	}
	ec.MaxConnections, ec.MaxConnectionsPerUser, ec.MaxSubscriptions = c.MaxConns, c.MaxConnsUser, c.MaxSubs
	ec.MaxPattern, ec.LogonBuffer, ec.AuthWorkers, ec.AuthQueue = c.MaxPattern, c.LogonBuffer, c.AuthWorkers, c.AuthQueue
	ec.KeepAlive = c.KeepAlive.Duration
	if ec.KeepAlive == 0 {
		ec.KeepAlive = -1 // "0" on the command line: off
	}
	return nil
}

// waitReloading waits for SIGINT or SIGTERM (sigs), reloading the client
// port's TLS certificates and the users file on every SIGHUP meanwhile.
func waitReloading(sigs <-chan os.Signal, failed <-chan struct{}, srv *engine.Server, log *slog.Logger, sec *serveSecurity) (os.Signal, bool) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case sig := <-sigs:
			return sig, false
		case <-failed:
			return nil, true
		case <-hup:
			if sec.TLSCert != "" {
				if err := srv.ReloadTLS(); err != nil {
					log.Error("SIGHUP: certificates not reloaded; the previous ones stay in use", "err", err)
				}
			}
			if sec.Users != "" {
				us, err := auth.Load(sec.Users)
				if err == nil {
					err = srv.ReloadUsers(us)
				}
				if err == nil {
					adminUsers.Store(us)
				}
				if err != nil {
					log.Error("SIGHUP: users file not reloaded; the previous one stays in use", "err", err)
				}
			}
			if sec.TLSCert == "" && sec.Users == "" {
				log.Info("SIGHUP: nothing to reload (no tls-cert, no users)")
			}
		}
	}
}
