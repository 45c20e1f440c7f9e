package lab

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Each lab host is also reachable over libvirt's ssh transport, as real hosts
// are: an sshd of the lab's own runs in the host's namespaces (so the
// virt-ssh-helper it starts reaches that host's libvirtd), listening on the
// host's loopback address only, with key authentication only. The key and the
// hosts' public keys live in .lab/ssh; the ssh command libvirt runs for the
// lab's URIs is a small wrapper that uses them and nothing of ~/.ssh.

// sshPort is the port of every lab host's sshd (on its own address). Not 22,
// where the machine may run an sshd of its own on every address.
const sshPort = 2322

// sshDir is the lab-wide ssh folder: the client key, known_hosts, the
// client configuration and the wrapper libvirt runs as ssh.
func (l *Lab) sshDir() string { return filepath.Join(l.Dir, "ssh") }

// sshURI is the host's libvirt URI over ssh through the lab's wrapper.
func (l *Lab) sshURI(h Host) string {
	return fmt.Sprintf("qemu+ssh://root@%s:%d/system?command=%s", h.Addr, sshPort, url.QueryEscape(filepath.Join(l.sshDir(), "ssh")))
}

// prepareSSH makes the lab's client key and the wrapper once; each host's key
// is made by prepareHostSSH.
func (l *Lab) prepareSSH(ctx context.Context) error {
	dir := l.sshDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key := filepath.Join(dir, "id_ed25519")
	if err := keygen(ctx, key, "drover-lab"); err != nil {
		return err
	}
	config := fmt.Sprintf(`# Written by the Drover lab: how libvirt's ssh transport reaches the lab hosts.
Host *
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
`, key, filepath.Join(dir, "known_hosts"))
	if err := writeFileAtomic(filepath.Join(dir, "config"), []byte(config), 0o600); err != nil {
		return err
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n# Written by the Drover lab: ssh with the lab's key and known hosts.\nexec ssh -F %s \"$@\"\n", shellQuote(filepath.Join(dir, "config")))
	return writeFileAtomic(filepath.Join(dir, "ssh"), []byte(wrapper), 0o755)
}

// keygen makes an ed25519 key pair at path unless it exists.
func keygen(ctx context.Context, path, comment string) error {
	if exists(path) && exists(path+".pub") {
		return nil
	}
	_ = os.Remove(path)
	_ = os.Remove(path + ".pub")
	if out, err := command(ctx, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path); err != nil {
		return fmt.Errorf("make ssh key %s: %w: %s", path, err, out)
	}
	return nil
}

// prepareHostSSH makes the host's key and sshd_config in its state folder.
func (l *Lab) prepareHostSSH(ctx context.Context, h Host) error {
	dir := filepath.Join(l.hostDir(h), "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := keygen(ctx, hostKey, "drover-lab-"+h.Name); err != nil {
		return err
	}
	conf := fmt.Sprintf(`# Written by the Drover lab: host %s over ssh, loopback only, keys only.
ListenAddress %s:%d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
`, h.Name, h.Addr, sshPort, hostKey, filepath.Join(dir, "sshd.pid"), filepath.Join(l.sshDir(), "id_ed25519.pub"))
	return os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o644)
}

// writeKnownHosts writes the public keys of the hosts up to and including
// upTo where the wrapper's ssh looks.
func (l *Lab) writeKnownHosts(upTo Host) error {
	var b strings.Builder
	for _, h := range defaultHosts {
		pub, err := os.ReadFile(filepath.Join(l.hostDir(h), "ssh", "ssh_host_ed25519_key.pub"))
		if errors.Is(err, os.ErrNotExist) && h.Name != upTo.Name {
			continue // not prepared yet
		}
		if err != nil {
			return err
		}
		f := strings.Fields(string(pub))
		if len(f) < 2 {
			return fmt.Errorf("host %s: bad public key %q", h.Name, pub)
		}
		fmt.Fprintf(&b, "[%s]:%d %s %s\n", h.Addr, sshPort, f[0], f[1])
	}
	return writeFileAtomic(filepath.Join(l.sshDir(), "known_hosts"), []byte(b.String()), 0o600)
}

// startSSHD starts the host's sshd in the namespaces of its libvirtd (pid)
// unless it runs, and waits until the host answers over ssh.
func (l *Lab) startSSHD(ctx context.Context, h Host, libvirtd int) error {
	if err := l.prepareHostSSH(ctx, h); err != nil {
		return err
	}
	if err := l.writeKnownHosts(h); err != nil {
		return err
	}
	dir := filepath.Join(l.hostDir(h), "ssh")
	pid, err := readPID(filepath.Join(dir, "sshd.pid"))
	if err != nil {
		return err
	}
	if !running(pid, "sshd") {
		// sshd forks into the background and writes its pid file.
		script := fmt.Sprintf("mkdir -p /run/sshd && exec /usr/sbin/sshd -f %s -E %s",
			shellQuote(filepath.Join(dir, "sshd_config")), shellQuote(filepath.Join(dir, "sshd.log")))
		if out, err := command(ctx, "", "nsenter", "-t", fmt.Sprint(libvirtd), "-m", "-u", "sh", "-c", script); err != nil {
			return fmt.Errorf("host %s: start sshd: %w: %s %s", h.Name, err, out, tail(filepath.Join(dir, "sshd.log"), 5))
		}
		if err := l.waitSSH(ctx, h); err != nil {
			return err
		}
		pid, _ = readPID(filepath.Join(dir, "sshd.pid"))
		l.Logf("host %s: sshd started (pid %d) at %s", h.Name, pid, l.sshURI(h))
		return nil
	}
	return l.waitSSH(ctx, h)
}

// stopSSHD stops the host's sshd by its pid file.
func stopSSHD(hostDir string) error {
	pidFile := filepath.Join(hostDir, "ssh", "sshd.pid")
	pid, err := readPID(pidFile)
	if err != nil || pid == 0 {
		return err
	}
	if err := stopPID(pid, "sshd", 5*time.Second); err != nil {
		return err
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// waitSSH waits until the host answers on its ssh URI with its own name.
func (l *Lab) waitSSH(ctx context.Context, h Host) error {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := command(ctx, "", "virsh", "-c", l.sshURI(h), "hostname")
		if err == nil && strings.TrimSpace(out) == h.Name {
			return nil
		}
		last = out
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("host %s: %s did not answer within 30s: %s (see %s)", h.Name, l.sshURI(h), strings.TrimSpace(last),
		filepath.Join(l.hostDir(h), "ssh", "sshd.log"))
}
