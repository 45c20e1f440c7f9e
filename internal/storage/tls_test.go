package storage_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
)

// testCA is a certificate authority of the test's own, with its PEM file.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "drover test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key, file: file}
}

// serve starts an HTTPS server whose certificate for 127.0.0.1 the CA
// signed, answering the health check.
func (ca testCA) serve(t *testing.T) *httptest.Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "storage"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestATargetWithACAOfItsOwnIsTrustedOnlyWithItsCAFile(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	srv := ca.serve(t)
	ctx := context.Background()

	without, err := storage.New(srv.URL, "token")
	if err != nil {
		t.Fatal(err)
	}
	err = without.Health(ctx)
	for _, want := range []string{"certificate signed by unknown authority",
		"set storage.ca_file to the CA that signed drover-target's certificate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("without ca_file: got error %v, want one that says %q", err, want)
		}
	}

	with, err := storage.New(srv.URL, "token", storage.WithCAFile(ca.file))
	if err != nil {
		t.Fatal(err)
	}
	if err := with.Health(ctx); err != nil {
		t.Errorf("with ca_file: %v", err)
	}

	other, err := storage.New(srv.URL, "token", storage.WithCAFile(newTestCA(t).file))
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Health(ctx); err == nil || !strings.Contains(err.Error(), "storage.ca_file") {
		t.Errorf("with another CA's file: got error %v, want the certificate refused with the fix", err)
	}
}

func TestACAFileThatCannotBeUsedIsRefusedNamingIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, want string
	}{
		{"a file that does not exist", missing, "no such file"},
		{"a file without a PEM certificate", empty, "holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := storage.New("https://127.0.0.1:3261", "token", storage.WithCAFile(tt.file))
			for _, want := range []string{tt.file, tt.want} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got error %v, want one that says %q", err, want)
				}
			}
		})
	}
}
