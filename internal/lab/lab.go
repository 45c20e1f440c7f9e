package lab

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The storage box's addresses in the lab.
const (
	targetAPI    = "127.0.0.1:3261"
	targetPortal = "127.0.0.1:3260"
)

// Lab is the local lab rooted at one state folder (.lab at the repository root).
type Lab struct {
	Dir string
	// BinDir holds the freshly built terraform-provider-drover and
	// drover-target; .lab/terraformrc points Terraform's dev_overrides at it.
	BinDir string
	// GuestDir holds the lab guest's kernel and initramfs, built by Up when
	// they are missing (Dir/guest unless set).
	GuestDir string
	Logf     func(format string, args ...any)
}

// New returns the lab whose state lives in dir.
func New(dir string, logf func(string, ...any)) (*Lab, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Lab{Dir: abs, BinDir: filepath.Join(abs, "bin"), GuestDir: filepath.Join(abs, "guest"), Logf: logf}, nil
}

func (l *Lab) hostDir(h Host) string { return filepath.Join(l.Dir, "hosts", h.Name) }
func (l *Lab) targetDir() string     { return filepath.Join(l.Dir, "target") }
func (l *Lab) targetBin() string     { return filepath.Join(l.BinDir, "drover-target") }

// Up starts whatever part of the lab is not running yet and writes the files
// its users read: lab.json, lab.tfvars, ssh.tfvars, tls.tfvars and
// terraformrc. A second Up finds the
// lab running and changes nothing.
func (l *Lab) Up(ctx context.Context) (Info, error) {
	if os.Geteuid() != 0 {
		return Info{}, errors.New("the lab needs root: it starts libvirtd in namespaces of its own")
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return Info{}, err
	}
	guest, err := BuildGuest(ctx, l.GuestDir, l.Logf)
	if err != nil {
		return Info{}, fmt.Errorf("build lab guest: %w", err)
	}
	if err := l.prepareSSH(ctx); err != nil {
		return Info{}, err
	}
	for _, h := range defaultHosts {
		pid, err := h.start(ctx, l.hostDir(h), l.Logf)
		if err != nil {
			return Info{}, err
		}
		if err := l.startSSHD(ctx, h, pid); err != nil {
			return Info{}, err
		}
	}
	token, err := l.startTargets(ctx)
	if err != nil {
		return Info{}, err
	}
	info := Info{
		AlphaURI:           defaultHosts[0].URI(),
		BetaURI:            defaultHosts[1].URI(),
		AlphaSSHURI:        l.sshURI(defaultHosts[0]),
		BetaSSHURI:         l.sshURI(defaultHosts[1]),
		StorageEndpoint:    "http://" + targetAPI,
		StorageToken:       token,
		StoragePortal:      targetPortal,
		TLSStorageEndpoint: "https://" + tlsBoxAPI,
		TLSStoragePortal:   tlsBoxPortal,
		StorageCAFile:      l.tlsCAFile(),
		GuestKernel:        guest.Kernel,
		GuestInitrd:        guest.Initrd,
	}
	if err := l.writeInfo(info); err != nil {
		return Info{}, err
	}
	return info, nil
}

// Down stops every process the lab started, by pid, and keeps its state
// (guest definitions, volumes, the built guest) for the next Up.
func (l *Lab) Down(ctx context.Context) error {
	var errs []error
	for _, h := range defaultHosts {
		if err := h.stop(ctx, l.hostDir(h), l.Logf); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, b := range l.boxes() {
		if err := l.stopBox(b); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(filepath.Join(l.Dir, "lab.json"))
	return errors.Join(errs...)
}

// Status reports, per lab process, whether it runs.
func (l *Lab) Status() map[string]bool {
	st := map[string]bool{}
	for _, h := range defaultHosts {
		pid, _ := readPID(filepath.Join(l.hostDir(h), "pid"))
		st["host "+h.Name] = running(pid, "libvirtd")
		sshd, _ := readPID(filepath.Join(l.hostDir(h), "ssh", "sshd.pid"))
		st["host "+h.Name+" sshd"] = running(sshd, "sshd")
	}
	for _, b := range l.boxes() {
		pid, _ := readPID(filepath.Join(b.dir, "pid"))
		st[b.name] = running(pid, "drover-target")
	}
	return st
}

// box is one of the lab's drover-targets.
type box struct {
	name     string // in logs and status
	dir      string // pid, log and data/
	api      string // management API address
	portal   string // iSCSI portal
	certFile string // serve the API over https with this certificate (and keyFile)
	keyFile  string
	roots    *x509.CertPool // the CA to check the API's certificate with
}

func (b box) endpoint() string {
	if b.certFile != "" {
		return "https://" + b.api
	}
	return "http://" + b.api
}

// boxes are the lab's storage boxes: the http one every lab user has
// always had, and the one serving its API over TLS (see tls.go).
func (l *Lab) boxes() []box {
	return []box{
		{name: "drover-target", dir: l.targetDir(), api: targetAPI, portal: targetPortal},
		{name: "drover-target tls", dir: l.tlsBoxDir(), api: tlsBoxAPI, portal: tlsBoxPortal,
			certFile: l.tlsCertFile(), keyFile: l.tlsKeyFile()},
	}
}

// token returns the lab's API token, generated on the first start and kept
// in the lab's state; both boxes take it.
func (l *Lab) token() (string, error) {
	if err := os.MkdirAll(l.targetDir(), 0o755); err != nil {
		return "", err
	}
	token, err := os.ReadFile(l.tokenFile())
	if errors.Is(err, os.ErrNotExist) {
		buf := make([]byte, 24)
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		token = []byte(hex.EncodeToString(buf))
		err = os.WriteFile(l.tokenFile(), token, 0o600)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(token)), nil
}

func (l *Lab) tokenFile() string { return filepath.Join(l.targetDir(), "token") }

// startTargets starts the storage boxes that do not run yet, after making
// the TLS box's certificate when it has none that is good.
func (l *Lab) startTargets(ctx context.Context) (string, error) {
	tok, err := l.token()
	if err != nil {
		return "", err
	}
	made, err := l.prepareTLS()
	if err != nil {
		return "", fmt.Errorf("make the lab's TLS certificate: %w", err)
	}
	roots, err := l.caPool()
	if err != nil {
		return "", err
	}
	for _, b := range l.boxes() {
		if b.certFile != "" {
			b.roots = roots
			if made {
				// A box still serving a certificate of an older CA.
				if err := l.stopBox(b); err != nil {
					return "", err
				}
			}
		}
		if err := l.startBox(ctx, b, tok); err != nil {
			return "", err
		}
	}
	return tok, nil
}

// startBox starts one drover-target unless it runs, and waits until its
// API answers.
func (l *Lab) startBox(ctx context.Context, b box, tok string) error {
	if err := os.MkdirAll(filepath.Join(b.dir, "data"), 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(b.dir, "pid")
	pid, err := readPID(pidFile)
	if err != nil {
		return err
	}
	if running(pid, "drover-target") {
		l.Logf("%s already running (pid %d)", b.name, pid)
		return l.waitTarget(ctx, b, pidAlive(pid, "drover-target"), tok)
	}
	if !exists(l.targetBin()) {
		return fmt.Errorf("drover-target is not built at %s: run `make lab`, which builds it", l.targetBin())
	}
	logFile, err := os.OpenFile(filepath.Join(b.dir, "drover-target.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	args := []string{"serve",
		"--data-dir", filepath.Join(b.dir, "data"),
		"--iscsi-listen", b.portal,
		"--api-listen", b.api,
		"--token-file", l.tokenFile()}
	if b.certFile != "" {
		args = append(args, "--tls-cert", b.certFile, "--tls-key", b.keyFile)
	}
	cmd := exec.Command(l.targetBin(), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.name, err)
	}
	alive := childAlive(cmd)
	if err := writePID(pidFile, cmd.Process.Pid); err != nil {
		return err
	}
	l.Logf("%s started (pid %d): API %s, iSCSI %s", b.name, cmd.Process.Pid, b.endpoint(), b.portal)
	return l.waitTarget(ctx, b, alive, tok)
}

func (l *Lab) waitTarget(ctx context.Context, b box, alive func() bool, token string) error {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if b.roots != nil {
		transport.TLSClientConfig = &tls.Config{RootCAs: b.roots, MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: transport}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.endpoint()+"/v1/health", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		if !alive() {
			log := filepath.Join(b.dir, "drover-target.log")
			return fmt.Errorf("%s exited; see %s: %s", b.name, log, tail(log, 10))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer on %s/v1/health within 30s: %v", b.name, b.endpoint(), last)
}

func (l *Lab) stopBox(b box) error {
	pidFile := filepath.Join(b.dir, "pid")
	pid, err := readPID(pidFile)
	if err != nil || pid == 0 {
		return err
	}
	if err := stopPID(pid, "drover-target", 15*time.Second); err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	l.Logf("%s stopped (pid %d)", b.name, pid)
	return os.Remove(pidFile)
}

// writeInfo writes lab.json for Go tests, lab.tfvars for Terraform
// configurations and terraformrc for the CLI's dev_overrides.
func (l *Lab) writeInfo(info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(l.Dir, "lab.json"), append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(l.Dir, "lab.tfvars"), []byte(info.tfvars()), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(l.Dir, "ssh.tfvars"), []byte(info.sshTfvars()), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(l.Dir, "tls.tfvars"), []byte(info.tlsTfvars()), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(l.Dir, "terraformrc"), []byte(terraformrc(l.BinDir)), 0o644)
}

func (i Info) tfvars() string {
	var b strings.Builder
	b.WriteString("# Written by the Drover lab (make lab).\n")
	for _, kv := range [][2]string{
		{"alpha_uri", i.AlphaURI},
		{"beta_uri", i.BetaURI},
		{"storage_endpoint", i.StorageEndpoint},
		{"storage_token", i.StorageToken},
		{"storage_portal", i.StoragePortal},
		{"guest_kernel", i.GuestKernel},
		{"guest_initrd", i.GuestInitrd},
	} {
		fmt.Fprintf(&b, "%-16s = %s\n", kv[0], hclString(kv[1]))
	}
	return b.String()
}

// sshTfvars sets the hosts' URIs to their ssh ones: given after lab.tfvars
// (-var-file=lab.tfvars -var-file=ssh.tfvars), any configuration of the lab
// reaches its hosts over ssh, as real hosts are reached.
func (i Info) sshTfvars() string {
	var b strings.Builder
	b.WriteString("# Written by the Drover lab (make lab): the hosts over libvirt's ssh transport.\n")
	b.WriteString("# Give it after lab.tfvars: -var-file=.lab/lab.tfvars -var-file=.lab/ssh.tfvars\n")
	fmt.Fprintf(&b, "%-16s = %s\n", "alpha_uri", hclString(i.AlphaSSHURI))
	fmt.Fprintf(&b, "%-16s = %s\n", "beta_uri", hclString(i.BetaSSHURI))
	return b.String()
}

// tlsTfvars points the storage settings at the lab's TLS box and sets
// storage_ca_file to the lab's CA: given after lab.tfvars, a configuration
// that passes var.storage_ca_file to storage.ca_file reaches its storage
// box over https, as a real one is reached.
func (i Info) tlsTfvars() string {
	var b strings.Builder
	b.WriteString("# Written by the Drover lab (make lab): the storage box over https, with the lab's own CA.\n")
	b.WriteString("# Give it after lab.tfvars: -var-file=.lab/lab.tfvars -var-file=.lab/tls.tfvars\n")
	for _, kv := range [][2]string{
		{"storage_endpoint", i.TLSStorageEndpoint},
		{"storage_portal", i.TLSStoragePortal},
		{"storage_ca_file", i.StorageCAFile},
	} {
		fmt.Fprintf(&b, "%-16s = %s\n", kv[0], hclString(kv[1]))
	}
	return b.String()
}

func terraformrc(binDir string) string {
	return fmt.Sprintf(`# Written by the Drover lab: use the locally built provider.
# export TF_CLI_CONFIG_FILE=%s
provider_installation {
  dev_overrides {
    "drover/drover" = %s
  }
  direct {}
}
`, filepath.Join(filepath.Dir(binDir), "terraformrc"), hclString(binDir))
}

// hclString quotes s as an HCL string literal.
func hclString(s string) string {
	b, _ := json.Marshal(s)
	// JSON escapes are valid HCL escapes; HCL also interpolates ${ and %{.
	out := strings.ReplaceAll(string(b), "${", "$${")
	return strings.ReplaceAll(out, "%{", "%%{")
}
