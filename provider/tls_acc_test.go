package provider

import (
	"context"
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
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/drover/terraform-provider-drover/internal/storage"
)

// tlsBoxAddr is the loopback address of the TLS test's own drover-target:
// not the lab's (127.0.0.1, and 127.0.0.4 for the lab's TLS box), so the
// test makes its own CA and nothing it does touches the lab's boxes.
const tlsBoxAddr = "127.0.0.5"

// tlsBox is a drover-target the test started, serving its API over https
// with a certificate of a CA the test made.
type tlsBox struct {
	endpoint, portal string
	token            string
	caFile           string          // the test's CA, PEM
	client           *storage.Client // trusting caFile
}

// writePEM writes one PEM block to path.
func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// makeCA makes a CA in dir and a certificate it signed for addr; it
// returns the paths of the CA's certificate and of the server's pair.
func makeCA(t *testing.T, dir, addr string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "drover TLS acceptance test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "drover-target"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(addr)},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePEM(t, caFile, "CERTIFICATE", caDER)
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return caFile, certFile, keyFile
}

// freeAddr is an address on host with a port nobody listens on now.
func freeAddr(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startTLSBox starts the lab's drover-target binary on tlsBoxAddr with a
// data folder of its own and the certificate of a new CA, waits until its
// API answers over https, and stops it by its PID when the test ends.
func startTLSBox(t *testing.T, root string) tlsBox {
	t.Helper()
	bin := filepath.Join(root, ".lab", "bin", "drover-target")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("drover-target is not built: %v (make lab builds it)", err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := makeCA(t, dir, tlsBoxAddr)
	box := tlsBox{
		endpoint: "https://" + freeAddr(t, tlsBoxAddr),
		portal:   freeAddr(t, tlsBoxAddr),
		token:    "tls-acceptance-test-token",
		caFile:   caFile,
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(box.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "drover-target.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"),
		"--iscsi-listen", box.portal, "--api-listen", strings.TrimPrefix(box.endpoint, "https://"),
		"--token-file", tokenFile, "--tls-cert", certFile, "--tls-key", keyFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// By its PID: SIGTERM, then SIGKILL if it does not exit in time.
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("drover-target (pid %d) did not stop on SIGTERM within 15s", cmd.Process.Pid)
		}
	})
	if box.client, err = storage.New(box.endpoint, box.token, storage.WithCAFile(caFile)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := box.client.Health(ctx)
		cancel()
		if err == nil {
			return box
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("drover-target exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("drover-target at %s did not answer within 30s: %v", box.endpoint, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// config is a provider block with the lab's hosts and this box as the
// storage (with caFile when set), a volume and the hosts' data source.
func (b tlsBox) config(l vmLab, caFile, volume string) string {
	ca := ""
	if caFile != "" {
		ca = fmt.Sprintf("\n    ca_file  = %q", caFile)
	}
	return fmt.Sprintf(`
provider "drover" {%s%s
  storage {
    endpoint = %q
    token    = %q
    portal   = %q%s
  }
}

resource "drover_volume" "test" {
  name     = %q
  size_mib = 8
}

data "drover_hosts" "all" {}
`, l.alpha(), l.beta(), b.endpoint, b.token, b.portal, ca, volume)
}

func TestAccTLSStorageWithACAOfItsOwn(t *testing.T) {
	l := newVMLab(t)
	box := startTLSBox(t, l.root)
	volume := accName(t, "tls")
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-ca.pem")
	notPEM := filepath.Join(dir, "ca.der")
	if err := os.WriteFile(notPEM, []byte("this is not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy: func(*terraform.State) error {
			if _, err := box.client.GetVolume(context.Background(), volume); !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("volume %s on the TLS box: got %v, want not found", volume, err)
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				// The box's certificate is of a CA the system does not
				// trust: refused, naming the problem and the fix.
				Config: box.config(l, "", volume),
				ExpectError: words("drover-target's TLS certificate is not trusted",
					"certificate signed by unknown authority", "set storage.ca_file to the CA that signed drover-target's certificate"),
			},
			{
				Config:      box.config(l, missing, volume),
				PlanOnly:    true,
				ExpectError: words("storage.ca_file: open "+missing+": no such file or directory", "give the PEM file of the CA"),
			},
			{
				Config:      box.config(l, notPEM, volume),
				PlanOnly:    true,
				ExpectError: words("storage.ca_file " + notPEM + " holds no PEM certificate"),
			},
			{
				// With the CA: the volume is made on the box, over https,
				// and the hosts are read beside it.
				Config: box.config(l, box.caFile, volume),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_volume.test", "id", volume),
					resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts.alpha.reachable", "true"),
					resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts.beta.reachable", "true"),
					func(*terraform.State) error {
						v, err := box.client.GetVolume(context.Background(), volume)
						if err != nil {
							return fmt.Errorf("volume %s on the TLS box: %w", volume, err)
						}
						if v.SizeMiB != 8 {
							return fmt.Errorf("volume %s on the TLS box: %d MiB, want 8", volume, v.SizeMiB)
						}
						return nil
					},
				),
			},
		},
	})
}
