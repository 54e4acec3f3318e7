// Package admin is Tandem's admin listener: an HTTP server, separate from
// the client port, for operators and their tools (`tandem serve --admin
// HOST:PORT`, docs/operations.md).
//
// Endpoints:
//
//	/metrics   Prometheus text format (metrics.go lists every metric)
//	/healthz   liveness: 200 "ok" while the journal is healthy; 503 with a
//	           one-line reason after a storage failure or during shutdown
//	/readyz    readiness: 200 once recovery is done and every sync peer has
//	           been reached and caught up (or repl-downgrade-after passed
//	           without it); 503 with the reason otherwise
//	/v1/stat   the stat document (wire.Stats) as JSON, as `tandem stat --json`
//	/          the web console (console/, embedded in the binary)
//
// The listener starts before the engine (Start, then SetServer once the
// engine's Start returned), so /healthz answers 200 "recovering" during a
// long journal recovery (a liveness probe must not kill a pod that is
// recovering) while /readyz answers 503 "recovering".
//
// Nothing here touches the publish path: every figure is read at request
// time from atomics (engine.Server.Stats and Metrics, the journal's
// histograms), which the loops and the flusher update anyway.
package admin

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tandemhq/tandem/engine"
)

//go:embed console
var consoleFiles embed.FS

// Config configures a Listener.
type Config struct {
	// Addr is the HOST:PORT to listen on (port 0: any free port).
	Addr string
	// TLS, when set, makes the listener serve HTTPS with it (serve sets
	// it from --tls-cert).
	TLS *tls.Config
	// Authorize, when set, is asked before /metrics, /v1/stat and the
	// console are served; an error answers 401 with its text. nil lets
	// everyone in (serve sets it with --users: an admin user). /healthz and
	// /readyz are always open: probes carry no credentials.
	Authorize func(r *http.Request) error
	// DowngradeAfter is repl-downgrade-after: how long readiness waits for
	// the sync peers to catch up after start-up. 0: take it from the
	// server's replication config (its default, 1s, when that is unset too).
	DowngradeAfter time.Duration
	Logger         *slog.Logger
}

// Listener is a running admin HTTP server.
type Listener struct {
	standby atomic.Bool // a shared-store passive (SetStandby)
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	http    *http.Server
	reg     *prometheus.Registry

	srv      atomic.Pointer[engine.Server]
	since    atomic.Int64 // when SetServer was called (UnixNano)
	shutting atomic.Bool

	readyMu sync.Mutex
	ready   bool   // latched: once ready, only failure or shutdown unready it
	why     string // why it became ready
	served  chan struct{}
}

// ErrConfig wraps every configuration error.
var ErrConfig = errors.New("admin: bad configuration")

// Start listens on cfg.Addr and serves in the background.
func Start(cfg Config) (*Listener, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%w: no address", ErrConfig)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: address %q: %w", ErrConfig, cfg.Addr, err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", cfg.Addr, err)
	}
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	l := &Listener{cfg: cfg, log: cfg.Logger, ln: ln, reg: prometheus.NewRegistry(), served: make(chan struct{})}
	l.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{l: l})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", l.healthz)
	mux.HandleFunc("GET /readyz", l.readyz)
	mux.Handle("GET /metrics", l.authorized(promhttp.HandlerFor(l.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelWarn)})))
	mux.Handle("GET /v1/stat", l.authorized(http.HandlerFunc(l.stat)))
	sub, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin: console files: %w", err)
	}
	mux.Handle("GET /", l.authorized(http.FileServerFS(sub)))
	l.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelDebug)}
	go func() {
		defer close(l.served)
		if err := l.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("admin: serve", "err", err)
		}
	}()
	l.log.Info("admin listening", "addr", ln.Addr().String(), "tls", cfg.TLS != nil)
	return l, nil
}

// Addr returns the address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// SetServer hands the listener the engine once its Start returned:
// recovery is done and readiness starts waiting for the sync peers.
func (l *Listener) SetServer(s *engine.Server) {
	l.since.Store(time.Now().UnixNano())
	l.srv.Store(s)
}

// ShuttingDown makes /healthz and /readyz answer 503 "shutting down"
// from now on; call it before closing the engine.
func (l *Listener) ShuttingDown() { l.shutting.Store(true) }

// Close stops the listener, letting requests in progress finish for up to
// a second.
func (l *Listener) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := l.http.Shutdown(ctx)
	<-l.served
	return err
}

func (l *Listener) authorized(h http.Handler) http.Handler {
	if l.cfg.Authorize == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := l.cfg.Authorize(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="tandem admin"`)
			http.Error(w, "unauthorized: "+err.Error(), http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Health returns whether the instance is alive and, if not, why.
func (l *Listener) Health() (bool, string) {
	if l.shutting.Load() {
		return false, "shutting down"
	}
	s := l.srv.Load()
	if s == nil {
		return true, "recovering"
	}
	if s.Stopping() {
		return false, "shutting down"
	}
	if err := s.Journal().Err(); err != nil {
		return false, "storage failed: " + oneLine(err.Error())
	}
	return true, "ok"
}

// Ready returns whether the instance should get traffic and, if not, why.
func (l *Listener) Ready() (bool, string) {
	if ok, why := l.Health(); !ok {
		return false, why
	}
	if l.standby.Load() {
		return false, "standby"
	}
	s := l.srv.Load()
	if s == nil || !s.Started() {
		return false, "recovering"
	}
	l.readyMu.Lock()
	defer l.readyMu.Unlock()
	if l.ready {
		return true, l.why
	}
	var behind []string
	if r := s.Replicator(); r != nil {
		for _, d := range r.Stats() {
			// Caught up: connected, holding acks (state sync) and its
			// oldest missing record younger than repl-upgrade-below. A
			// destination in state sync is not enough: after a restart
			// every sync destination holds acks before it is reached.
			if d.Mode == "sync" && !(d.Connected && d.State == "sync" && d.LagSeconds < l.upgradeBelow(s).Seconds()) {
				state := d.State
				if !d.Connected {
					state = "not connected"
				}
				behind = append(behind, fmt.Sprintf("%s (%s, %d messages behind)", d.Name, state, d.LagMessages))
			}
		}
	}
	switch {
	case len(behind) == 0:
		l.ready, l.why = true, "ready"
	case time.Since(time.Unix(0, l.since.Load())) >= l.downgradeAfter(s):
		l.ready, l.why = true, "ready (repl-downgrade-after passed before sync peers caught up: "+strings.Join(behind, ", ")+")"
		l.log.Warn("admin: ready without every sync peer caught up", "behind", strings.Join(behind, ", "))
	default:
		return false, "catching up: " + strings.Join(behind, ", ")
	}
	return true, l.why
}

func (l *Listener) downgradeAfter(s *engine.Server) time.Duration {
	if l.cfg.DowngradeAfter > 0 {
		return l.cfg.DowngradeAfter
	}
	if rc := s.Config().Replication; rc != nil && rc.DowngradeAfter > 0 {
		return rc.DowngradeAfter
	}
	return time.Second // replicate.Config's default
}

func (l *Listener) upgradeBelow(s *engine.Server) time.Duration {
	if rc := s.Config().Replication; rc != nil && rc.UpgradeBelow > 0 {
		return rc.UpgradeBelow
	}
	return 100 * time.Millisecond // replicate.Config's default
}

// SetStandby marks the process a shared-store passive (docs/ha.md):
// /readyz answers 503 standby while it is set.
func (l *Listener) SetStandby(on bool) { l.standby.Store(on) }

func (l *Listener) healthz(w http.ResponseWriter, _ *http.Request) {
	ok, why := l.Health()
	probeReply(w, ok, why)
}

func (l *Listener) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, why := l.Ready()
	probeReply(w, ok, why)
}

func probeReply(w http.ResponseWriter, ok bool, why string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, why)
}

func (l *Listener) stat(w http.ResponseWriter, _ *http.Request) {
	s := l.srv.Load()
	if s == nil {
		http.Error(w, "recovering", http.StatusServiceUnavailable)
		return
	}
	b, err := json.Marshal(s.Stats())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}
