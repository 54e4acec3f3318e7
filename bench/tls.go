package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemhq/tandem/client"
)

// The tls scenario (opt-in: `--scenarios tls`): the same durable publish,
// persisted-ack latency and end-to-end latency steps as the peer scenarios,
// against one Tandem instance serving plaintext and one serving TLS
// (tandem serve --tls-cert/--tls-key), side by side in the same run, each
// step on a fresh server, the two alternating which goes first. The
// certificates are made at run time.

// tlsModes are the tls scenario's variants (Result.Mode), in report order:
// plaintext is the baseline.
var tlsModes = []string{"plaintext", "tls"}

// benchTLS is the throwaway PKI of a tls scenario: a CA and a server
// certificate it signs (ECDSA P-256, for 127.0.0.1, ::1 and localhost),
// written as PEM files (mode 0600) into Dir, and the client configuration
// that trusts the CA.
type benchTLS struct {
	Dir      string
	CertFile string // the server certificate (PEM), then the CA's
	KeyFile  string // the server's private key (PKCS #8 PEM)
	CAFile   string // the CA certificate (PEM)
	Client   *tls.Config
}

// newBenchTLS makes a CA and a server certificate valid for a day in a new
// temporary directory under parent; the caller removes Dir.
func newBenchTLS(parent string) (*benchTLS, error) {
	dir, err := os.MkdirTemp(parent, "tandem-bench-tls-")
	if err != nil {
		return nil, fmt.Errorf("tls certificates: %w", err)
	}
	bt, err := writeBenchTLS(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("tls certificates: %w", err)
	}
	return bt, nil
}

func writeBenchTLS(dir string) (*benchTLS, error) {
	now := time.Now()
	serial := func() (*big.Int, error) { return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) }
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "tandem bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if sn, err = serial(); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: "tandem bench server"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	bt := &benchTLS{Dir: dir, CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key"), CAFile: filepath.Join(dir, "ca.pem")}
	files := []struct {
		path string
		data []byte
	}{
		{bt.CertFile, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...)},
		{bt.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{bt.CAFile, caPEM},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	bt.Client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	return bt, nil
}

// clientOpts are the options every client of t adds: WithTLS when t serves
// TLS.
func (t *Tandem) clientOpts(opts ...client.Option) []client.Option {
	if t.TLS != nil {
		opts = append(opts, client.WithTLS(t.TLS.Client))
	}
	return opts
}

// tlsVariant returns a single-instance Tandem adapter like t serving
// plaintext (mode "plaintext") or TLS with bt (mode "tls").
func (t *Tandem) tlsVariant(mode string, bt *benchTLS) *Tandem {
	v := t.variant("", t.Engine)
	if mode == "tls" {
		v.TLS = bt
	}
	return v
}

// tlsOrder is the order of the variants of the tls scenario's measurement
// n (0-based, in run order): plaintext first in even ones, TLS first in odd
// ones, so a drift of the (shared) machine does not favour one.
func tlsOrder(n int) []string {
	if n%2 == 1 {
		return []string{tlsModes[1], tlsModes[0]}
	}
	return tlsModes
}

// runTLS measures each step of the tls scenario against a plaintext and a
// TLS server, in tlsOrder, each on a fresh server: durable publish
// (TLSSizes, one publisher, closed loop), persisted-ack latency and
// end-to-end latency at the fixed Rates (LatencySize).
func (r *runner) runTLS() error {
	t, ok := r.sys.(*Tandem)
	if !ok || (len(r.set.TLSSizes) == 0 && len(r.set.Rates) == 0) {
		return nil
	}
	if t.Pair != "" {
		return nil
	}
	bt, err := newBenchTLS(r.set.DataDir)
	if err != nil {
		return err
	}
	defer os.RemoveAll(bt.Dir)
	n := 0
	each := func(base Result, f func(rv *runner, res *Result) error) {
		order := tlsOrder(n)
		n++
		for _, mode := range order {
			res := base
			res.Key = fmt.Sprintf("%s mode=%s", base.Key, mode)
			res.Mode = mode
			rv := r.on(t.tlsVariant(mode, bt))
			rv.step(res, func(res *Result) error { return f(rv, res) })
		}
	}
	for _, size := range r.set.TLSSizes {
		res := r.result(ScenTLS, fmt.Sprintf("tls publish size=%d pubs=1", size))
		res.Size, res.Publishers = size, 1
		each(res, func(rv *runner, res *Result) error { return rv.measurePublish(res, size, 1, 0) })
	}
	for _, rate := range r.set.Rates {
		res := r.result(ScenTLS, fmt.Sprintf("tls ack-latency size=%d rate=%d", r.set.LatencySize, rate))
		res.Size, res.Publishers, res.RateLabel = r.set.LatencySize, 1, fmt.Sprint(rate)
		each(res, func(rv *runner, res *Result) error {
			return rv.measurePublish(res, r.set.LatencySize, 1, float64(rate))
		})
	}
	for _, rate := range r.set.Rates {
		res := r.result(ScenTLS, fmt.Sprintf("tls e2e-latency size=%d rate=%d", r.set.LatencySize, rate))
		res.Size, res.Publishers, res.Subscribers, res.RateLabel = r.set.LatencySize, 1, 1, fmt.Sprint(rate)
		each(res, func(rv *runner, res *Result) error { return rv.measureE2E(res, float64(rate)) })
	}
	return nil
}
