package lab

import (
	"context"
	"crypto/rand"
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
// its users read: lab.json, lab.tfvars and terraformrc. A second Up finds the
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
	token, err := l.startTarget(ctx)
	if err != nil {
		return Info{}, err
	}
	info := Info{
		AlphaURI:        defaultHosts[0].URI(),
		BetaURI:         defaultHosts[1].URI(),
		AlphaSSHURI:     l.sshURI(defaultHosts[0]),
		BetaSSHURI:      l.sshURI(defaultHosts[1]),
		StorageEndpoint: "http://" + targetAPI,
		StorageToken:    token,
		StoragePortal:   targetPortal,
		GuestKernel:     guest.Kernel,
		GuestInitrd:     guest.Initrd,
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
	if err := l.stopTarget(); err != nil {
		errs = append(errs, err)
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
	pid, _ := readPID(filepath.Join(l.targetDir(), "pid"))
	st["drover-target"] = running(pid, "drover-target")
	return st
}

// startTarget starts drover-target unless it runs, with a token generated on
// the first start and kept in the lab's state.
func (l *Lab) startTarget(ctx context.Context) (string, error) {
	dir := l.targetDir()
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return "", err
	}
	tokenFile := filepath.Join(dir, "token")
	token, err := os.ReadFile(tokenFile)
	if errors.Is(err, os.ErrNotExist) {
		buf := make([]byte, 24)
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		token = []byte(hex.EncodeToString(buf))
		err = os.WriteFile(tokenFile, token, 0o600)
	}
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(token))

	pidFile := filepath.Join(dir, "pid")
	pid, err := readPID(pidFile)
	if err != nil {
		return "", err
	}
	if running(pid, "drover-target") {
		l.Logf("drover-target already running (pid %d)", pid)
		return tok, l.waitTarget(ctx, pidAlive(pid, "drover-target"), tok)
	}
	if !exists(l.targetBin()) {
		return "", fmt.Errorf("drover-target is not built at %s: run `make lab`, which builds it", l.targetBin())
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "drover-target.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	cmd := exec.Command(l.targetBin(), "serve",
		"--data-dir", filepath.Join(dir, "data"),
		"--iscsi-listen", targetPortal,
		"--api-listen", targetAPI,
		"--token-file", tokenFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start drover-target: %w", err)
	}
	alive := childAlive(cmd)
	if err := writePID(pidFile, cmd.Process.Pid); err != nil {
		return "", err
	}
	l.Logf("drover-target started (pid %d): API http://%s, iSCSI %s", cmd.Process.Pid, targetAPI, targetPortal)
	return tok, l.waitTarget(ctx, alive, tok)
}

func (l *Lab) waitTarget(ctx context.Context, alive func() bool, token string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+targetAPI+"/v1/health", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !alive() {
			log := filepath.Join(l.targetDir(), "drover-target.log")
			return fmt.Errorf("drover-target exited; see %s: %s", log, tail(log, 10))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("drover-target did not answer on http://%s/v1/health within 30s", targetAPI)
}

func (l *Lab) stopTarget() error {
	pidFile := filepath.Join(l.targetDir(), "pid")
	pid, err := readPID(pidFile)
	if err != nil || pid == 0 {
		return err
	}
	if err := stopPID(pid, "drover-target", 15*time.Second); err != nil {
		return fmt.Errorf("drover-target: %w", err)
	}
	l.Logf("drover-target stopped (pid %d)", pid)
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
