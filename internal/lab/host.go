package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// LabNetwork is the libvirt network every lab host has: isolated (no
// forwarding, no addresses, no DHCP), so guests can have NICs and migrations
// can check that the destination has the network, while no traffic leaves
// the machine. Each host backs it with a bridge of its own.
const LabNetwork = "lab"

// Host is one lab hypervisor: a libvirtd in its own mount and UTS namespace,
// with private libvirt directories under the lab's state folder, listening for
// TCP on its own loopback address.
type Host struct {
	Name    string
	Addr    string // loopback address it listens on
	UUID    string // libvirt host_uuid; libvirt refuses to migrate between equal ones
	MigPort [2]int // QEMU migration port range, distinct per host
}

// URI is the libvirt URI the provider and virsh use to reach the host.
func (h Host) URI() string { return "qemu+tcp://" + h.Addr + "/system" }

// Hosts are the lab's two hypervisors.
var defaultHosts = []Host{
	{Name: "alpha", Addr: "127.0.0.2", UUID: "6a1f3c2e-8d4b-4f0a-9c1e-a1a1a1a1a1a1", MigPort: [2]int{49152, 49183}},
	{Name: "beta", Addr: "127.0.0.3", UUID: "7b2e4d3f-9e5c-4a1b-8d2f-b2b2b2b2b2b2", MigPort: [2]int{49184, 49215}},
}

// bindDirs maps a host's private folders (relative to its state folder) onto
// the system paths libvirtd uses.
var bindDirs = [][2]string{
	{"etc", "/etc/libvirt"},
	{"run", "/run/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"cache", "/var/cache/libvirt"},
	{"log", "/var/log/libvirt"},
}

func (h Host) libvirtdConf() string {
	return fmt.Sprintf(`# Written by the Drover lab. TCP without auth is for the loopback lab only,
# never for a real host.
listen_tcp = 1
listen_tls = 0
listen_addr = %q
auth_tcp = "none"
auth_unix_rw = "none"
host_uuid = %q
`, h.Addr, h.UUID)
}

func (h Host) qemuConf() string {
	return fmt.Sprintf(`# Written by the Drover lab: QEMU as root without sandboxing, which the lab
# needs to run two hypervisors side by side in one machine.
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
migration_address = %q
migration_host = %q
migration_port_min = %d
migration_port_max = %d
`, h.Addr, h.Addr, h.MigPort[0], h.MigPort[1])
}

// prepare lays out the host's state folder as the libvirt packages lay out a
// host: a copy of the system's libvirt configuration with the lab's
// libvirtd.conf and qemu.conf on top, and the packages' folders under
// /var/log/libvirt, /var/lib/libvirt and /var/cache/libvirt (qemu/ among
// them), empty. libvirtd makes some of these itself, but not all: without
// /var/log/libvirt/qemu a domain logging its console there does not start.
func (h Host) prepare(dir string) error {
	for _, b := range bindDirs {
		if err := os.MkdirAll(filepath.Join(dir, b[0]), 0o755); err != nil {
			return err
		}
		if b[0] == "etc" || b[0] == "run" {
			continue
		}
		if err := copyFolders(b[1], filepath.Join(dir, b[0])); err != nil {
			return fmt.Errorf("lay out %s for host %s: %w", b[1], h.Name, err)
		}
	}
	etc := filepath.Join(dir, "etc")
	if err := copyTree("/etc/libvirt", etc); err != nil {
		return fmt.Errorf("copy /etc/libvirt for host %s: %w", h.Name, err)
	}
	if err := os.WriteFile(filepath.Join(etc, "libvirtd.conf"), []byte(h.libvirtdConf()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(etc, "qemu.conf"), []byte(h.qemuConf()), 0o644)
}

// startScript runs inside the new namespaces: it puts the private folders over
// the system ones, names the host, and becomes libvirtd (exec keeps the pid).
func (h Host) startScript(dir string) string {
	var b strings.Builder
	b.WriteString("set -e\nmount --make-rprivate /\n")
	for _, d := range bindDirs {
		fmt.Fprintf(&b, "mkdir -p %s\nmount --bind %s %s\n", d[1], shellQuote(filepath.Join(dir, d[0])), d[1])
	}
	fmt.Fprintf(&b, "hostname %s\n", h.Name)
	b.WriteString("exec libvirtd --listen -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid\n")
	return b.String()
}

// start launches the host's libvirtd unless it already runs, waits until
// it answers on its URI, and returns its pid.
func (h Host) start(ctx context.Context, dir string, logf func(string, ...any)) (int, error) {
	pidFile := filepath.Join(dir, "pid")
	pid, err := readPID(pidFile)
	if err != nil {
		return 0, err
	}
	if running(pid, "libvirtd") {
		logf("host %s: libvirtd already running (pid %d)", h.Name, pid)
		if err := h.waitReady(ctx, pidAlive(pid, "libvirtd"), dir); err != nil {
			return 0, err
		}
		return pid, h.ensureNetwork(ctx, dir)
	}
	// An sshd left from a libvirtd that is gone lives in its old namespaces.
	if err := stopSSHD(dir); err != nil {
		return 0, fmt.Errorf("host %s: %w", h.Name, err)
	}
	if err := h.prepare(dir); err != nil {
		return 0, err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "libvirtd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	cmd := exec.Command("unshare", "-m", "-u", "sh", "-c", h.startScript(dir))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start libvirtd for host %s: %w", h.Name, err)
	}
	pid = cmd.Process.Pid
	alive := childAlive(cmd)
	if err := writePID(pidFile, pid); err != nil {
		return 0, err
	}
	logf("host %s: libvirtd started (pid %d) at %s", h.Name, pid, h.URI())
	if err := h.waitReady(ctx, alive, dir); err != nil {
		return 0, err
	}
	return pid, h.ensureNetwork(ctx, dir)
}

// networkXML is the definition of LabNetwork on this host.
func (h Host) networkXML() string {
	return fmt.Sprintf("<network>\n  <name>%s</name>\n  <bridge name='drlab-%s' stp='off'/>\n</network>\n", LabNetwork, h.Name)
}

// ensureNetwork defines and starts LabNetwork on the host unless it runs.
func (h Host) ensureNetwork(ctx context.Context, dir string) error {
	info, err := command(ctx, "", "virsh", "-c", h.URI(), "net-info", LabNetwork)
	if err != nil {
		file := filepath.Join(dir, "network-"+LabNetwork+".xml")
		if err := os.WriteFile(file, []byte(h.networkXML()), 0o644); err != nil {
			return err
		}
		if out, err := command(ctx, "", "virsh", "-c", h.URI(), "net-define", file); err != nil {
			return fmt.Errorf("host %s: define network %s: %w: %s", h.Name, LabNetwork, err, out)
		}
		if out, err := command(ctx, "", "virsh", "-c", h.URI(), "net-autostart", LabNetwork); err != nil {
			return fmt.Errorf("host %s: autostart network %s: %w: %s", h.Name, LabNetwork, err, out)
		}
	} else if strings.Contains(info, "Active:         yes") {
		return nil
	}
	if out, err := command(ctx, "", "virsh", "-c", h.URI(), "net-start", LabNetwork); err != nil {
		return fmt.Errorf("host %s: start network %s: %w: %s", h.Name, LabNetwork, err, out)
	}
	return nil
}

// waitReady waits until virsh reaches the host and it names itself correctly.
func (h Host) waitReady(ctx context.Context, alive func() bool, dir string) error {
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := command(ctx, "", "virsh", "-c", h.URI(), "hostname")
		if err == nil && strings.TrimSpace(out) == h.Name {
			return nil
		}
		last = out
		if err == nil {
			return fmt.Errorf("host %s: %s answers as %q: another libvirtd holds the address", h.Name, h.URI(), out)
		}
		if !alive() {
			return fmt.Errorf("host %s: libvirtd exited; see %s: %s", h.Name, filepath.Join(dir, "libvirtd.log"), tail(filepath.Join(dir, "libvirtd.log"), 10))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("host %s: %s did not answer within 60s: %s", h.Name, h.URI(), last)
}

// stop destroys the host's running guests, then stops its libvirtd, each by
// pid. Guest definitions stay, as on a real host.
func (h Host) stop(ctx context.Context, dir string, logf func(string, ...any)) error {
	if err := stopSSHD(dir); err != nil {
		return fmt.Errorf("host %s: %w", h.Name, err)
	}
	pid, err := readPID(filepath.Join(dir, "pid"))
	if err != nil {
		return err
	}
	if running(pid, "libvirtd") {
		if out, err := command(ctx, "", "virsh", "-c", h.URI(), "list", "--name"); err == nil {
			for _, name := range strings.Fields(out) {
				if _, err := command(ctx, "", "virsh", "-c", h.URI(), "destroy", name); err == nil {
					logf("host %s: stopped guest %s", h.Name, name)
				}
			}
		}
		// Stopping the network removes its bridge; autostart brings it back.
		_, _ = command(ctx, "", "virsh", "-c", h.URI(), "net-destroy", LabNetwork)
	}
	// QEMU processes outlive libvirtd, so stop any left by their pid files.
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "run", "qemu", "*.pid"))
	for _, f := range pidFiles {
		if qpid, err := readPID(f); err == nil && running(qpid, "qemu") {
			if err := stopPID(qpid, "qemu", 5*time.Second); err != nil {
				return fmt.Errorf("host %s: %w", h.Name, err)
			}
			logf("host %s: stopped qemu pid %d", h.Name, qpid)
		}
	}
	if running(pid, "libvirtd") {
		if err := stopPID(pid, "libvirtd", 15*time.Second); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		logf("host %s: libvirtd stopped (pid %d)", h.Name, pid)
	}
	return os.Remove(filepath.Join(dir, "pid"))
}

// copyFolders makes, under dst, each folder that is under src (with its
// mode), and nothing else. A src that does not exist gives no folders.
func copyFolders(src, dst string) error {
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		return os.Chmod(target, info.Mode().Perm())
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// copyTree copies regular files, folders and symlinks from src into dst,
// leaving files that already exist in dst alone.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if _, err := os.Lstat(target); err == nil && !d.IsDir() {
			return nil
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.WriteFile(target, data, info.Mode().Perm())
		}
		return nil
	})
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
