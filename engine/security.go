package engine

import (
	"time"

	"github.com/tandemhq/tandem/auth"
)

// Security holds the client port's access control, TLS and resource caps
// (embedded in Config). The zero value of each field means its default.
type Security struct {
	// Users, when set, makes every logon authenticate (a password, or a
	// verified client certificate whose CN is the user) and enforces each
	// user's publish, subscribe, admin and client-names permissions.
	Users *auth.Users
	// TLS, when set, serves TLS only on the client port (tls.go).
	TLS *TLSConfig

	// AuthWorkers verify passwords off the event loops; default 2 x NumCPU.
	AuthWorkers int
	// AuthQueue bounds the logons waiting for a worker; a logon beyond it
	// is refused with wire.CodeLimit. Default 256.
	AuthQueue int

	// MaxConnections caps the client connections of the instance (default
	// 10000); MaxConnectionsPerUser those logged on as one user (default
	// 1000; only with Users). MaxSubscriptions caps the subscriptions of
	// one connection (default 1024); MaxPattern the length of a regular
	// expression topic pattern (default 256). LogonBuffer is the largest
	// frame a connection may send before it has logged on (default 4096).
	MaxConnections        int
	MaxConnectionsPerUser int
	MaxSubscriptions      int
	MaxPattern            int
	LogonBuffer           int

	// KeepAlive is the TCP keepalive idle time on accepted sockets (probes
	// then every KeepAlive/3, three of them): a half-open connection with
	// heartbeats off is closed, and its client name freed, after about
	// twice this. Default 15s; negative turns keepalive off.
	KeepAlive time.Duration
}

// Defaults of Security.
const (
	DefaultAuthQueue             = 256
	DefaultMaxConnections        = 10000
	DefaultMaxConnectionsPerUser = 1000
	DefaultMaxSubscriptions      = 1024
	DefaultMaxPattern            = 256
	DefaultLogonBuffer           = 4096
	DefaultKeepAlive             = 15 * time.Second
)
