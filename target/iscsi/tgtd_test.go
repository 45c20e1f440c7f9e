package iscsi

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tgtd is a running tgtd (the Linux SCSI target framework daemon), the
// baseline our engine is compared with. It serves one file as LUN 1.
type tgtd struct {
	cmd     *exec.Cmd
	ctl     string
	addr    string
	iqn     string
	backing string
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startTgtd starts tgtd on a free loopback port serving path; it is killed
// (by PID, SIGKILL: tgtd ignores SIGTERM while it has targets) at cleanup.
func startTgtd(t testing.TB, path string) *tgtd {
	t.Helper()
	requireTool(t, "tgtd")
	requireTool(t, "tgtadm")
	port := freeLoopbackPort(t)
	ctl := strconv.Itoa(100 + port%30000)
	g := &tgtd{ctl: ctl, addr: fmt.Sprintf("127.0.0.1:%d", port), iqn: "iqn.2026-11.io.drover:tgtd-baseline", backing: path}
	g.cmd = exec.Command("tgtd", "-f", "-C", ctl, "--iscsi", "portal="+g.addr)
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start tgtd: %v", err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGKILL)
		g.cmd.Wait()
		os.Remove("/var/run/tgtd/socket." + ctl)
		os.Remove("/var/run/tgtd/socket." + ctl + ".lock")
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := g.adm("--op", "show", "--mode", "target"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("tgtd did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, args := range [][]string{
		{"--op", "new", "--mode", "target", "--tid", "1", "-T", g.iqn},
		{"--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", path},
		{"--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"},
	} {
		if err := g.adm(args...); err != nil {
			t.Fatalf("tgtadm %s: %v", strings.Join(args, " "), err)
		}
	}
	return g
}

func (g *tgtd) adm(args ...string) error {
	out, err := exec.Command("tgtadm", append([]string{"-C", g.ctl, "--lld", "iscsi"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

func (g *tgtd) url() string { return fmt.Sprintf("iscsi://%s/%s/1", g.addr, g.iqn) }

func (g *tgtd) pid() int { return g.cmd.Process.Pid }
