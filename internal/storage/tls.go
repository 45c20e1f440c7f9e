package storage

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
)

// WithCAFile makes the client trust only the CAs of the PEM file at path
// for the target's TLS certificate: a storage box with a CA of its own
// (the common case) needs no change to the system's roots. Its errors name
// storage.ca_file, the setting the path comes from.
func WithCAFile(path string) Option {
	return func(c *Client) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("storage.ca_file: %w; give the PEM file of the CA that signed drover-target's certificate", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("storage.ca_file %s holds no PEM certificate: give the CA's certificate, "+
				"a file that begins with -----BEGIN CERTIFICATE-----", path)
		}
		c.roots = pool
		return nil
	}
}

// newTransport is the default transport, trusting roots when set, whose
// certificate errors say what to do about them.
func newTransport(roots *x509.CertPool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return certAdvice{t}
}

// certAdvice adds to a refused TLS certificate what the admin can do about
// it, whichever request met it.
type certAdvice struct{ next http.RoundTripper }

func (a certAdvice) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := a.next.RoundTrip(req)
	if err != nil {
		return nil, adviseOnCert(err)
	}
	return resp, nil
}

// adviseOnCert wraps a TLS certificate error with its fix; other errors
// are returned as they are.
func adviseOnCert(err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("drover-target's TLS certificate is not trusted: %w; "+
			"set storage.ca_file to the CA that signed drover-target's certificate", err)
	case errors.As(err, &hostname):
		return fmt.Errorf("drover-target's TLS certificate is not for this name: %w; "+
			"set storage.endpoint to a name the certificate is for", err)
	case errors.As(err, &invalid):
		return fmt.Errorf("drover-target's TLS certificate is refused: %w; "+
			"give drover-target a valid certificate (--tls-cert)", err)
	}
	return err
}
