package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The lab has a second storage box that serves its API over https with a
// certificate of a CA of the lab's own, as a real storage box does: the
// guide to real hosts is walked against it, with storage.ca_file. It has
// an address of its own and the standard ports, so its settings read like
// a real box's, and a data folder of its own; the http box on 127.0.0.1
// stays what `make lab` and `make demo` have always used.
const (
	tlsBoxAddr   = "127.0.0.4"
	tlsBoxAPI    = tlsBoxAddr + ":3261"
	tlsBoxPortal = tlsBoxAddr + ":3260"
)

// tlsDir holds the lab's CA and the TLS box's certificate:
//
//	ca.pem   the CA's certificate: what storage.ca_file names
//	ca.key   the CA's key (kept to issue a new certificate)
//	tls.crt  the box's certificate for 127.0.0.4, signed by the CA
//	tls.key  its key (drover-target --tls-key)
func (l *Lab) tlsDir() string      { return filepath.Join(l.Dir, "tls") }
func (l *Lab) tlsCAFile() string   { return filepath.Join(l.tlsDir(), "ca.pem") }
func (l *Lab) tlsBoxDir() string   { return filepath.Join(l.Dir, "target-tls") }
func (l *Lab) tlsCertFile() string { return filepath.Join(l.tlsDir(), "tls.crt") }
func (l *Lab) tlsKeyFile() string  { return filepath.Join(l.tlsDir(), "tls.key") }

// prepareTLS makes the lab's CA and the box's certificate unless a
// certificate that the CA signed for the box's address, valid for at
// least another day, is there. It reports whether it made new ones (a box
// still serving the old certificate must then be restarted).
func (l *Lab) prepareTLS() (made bool, err error) {
	if err := checkCert(l.tlsCAFile(), l.tlsCertFile(), l.tlsKeyFile(), tlsBoxAddr); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(l.tlsDir(), 0o700); err != nil {
		return false, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "Drover lab CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return false, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return false, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "drover-target (lab)"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(tlsBoxAddr)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return false, err
	}
	for _, f := range []struct {
		path, kind string
		der        []byte
		key        *ecdsa.PrivateKey
		perm       os.FileMode
	}{
		{l.tlsCAFile(), "CERTIFICATE", caDER, nil, 0o644},
		{filepath.Join(l.tlsDir(), "ca.key"), "", nil, caKey, 0o600},
		{l.tlsCertFile(), "CERTIFICATE", der, nil, 0o644},
		{l.tlsKeyFile(), "", nil, key, 0o600},
	} {
		if f.key != nil {
			if f.der, err = x509.MarshalPKCS8PrivateKey(f.key); err != nil {
				return false, err
			}
			f.kind = "PRIVATE KEY"
		}
		if err := writeFileAtomic(f.path, pem.EncodeToMemory(&pem.Block{Type: f.kind, Bytes: f.der}), f.perm); err != nil {
			return false, err
		}
	}
	l.Logf("made the lab's CA (%s) and a certificate for %s", l.tlsCAFile(), tlsBoxAddr)
	return true, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// checkCert tells why the certificate at certFile, with its key, is not
// one that the CA at caFile signed for addr and that is valid tomorrow.
func checkCert(caFile, certFile, keyFile, addr string) error {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s holds no certificate", caFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	if _, err := os.Stat(keyFile); err != nil {
		return err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return errors.New("no PEM block in " + certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: addr, CurrentTime: time.Now().Add(24 * time.Hour)})
	return err
}

// caPool is the lab's CA as a pool, to check the TLS box's health.
func (l *Lab) caPool() (*x509.CertPool, error) {
	b, err := os.ReadFile(l.tlsCAFile())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no certificate", l.tlsCAFile())
	}
	return pool, nil
}
