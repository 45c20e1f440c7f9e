package hypervisor

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"libvirt.org/go/libvirt"
)

func TestLogDirsAreTheFoldersOfTheChardevLogs(t *testing.T) {
	t.Parallel()
	xml := `<domain type='qemu'><name>d</name><devices>
  <serial type='pty'><log file='/var/log/libvirt/qemu/d-console.log' append='on'/></serial>
  <serial type='pty'><log file='/var/log/libvirt/qemu/d-second.log'/></serial>
  <console type='pty'><log file='/srv/logs/d.log'/></console>
  <serial type='pty'/>
</devices></domain>`
	got, err := logDirs(xml)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/var/log/libvirt/qemu", "/srv/logs"}
	if !slices.Equal(got, want) {
		t.Errorf("log folders: got %q, want %q", got, want)
	}
	vm := VM{Name: "web1", Type: "qemu", MemoryMiB: 128, VCPUs: 1, Boot: Boot{Kernel: "/k"}, ConsoleLog: "/var/log/libvirt/qemu/web1-console.log"}
	built, err := vm.XML()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := logDirs(built); !slices.Equal(got, []string{"/var/log/libvirt/qemu"}) {
		t.Errorf("log folders of a built VM: got %q", got)
	}
}

// TestAccAGuestWhoseConsoleLogFolderIsMissingStarts is the host a newcomer
// has (a fresh lab host, a cleaned /var/log): the folder of the console log
// does not exist, and the VM starts all the same; a folder that exists keeps
// its mode.
func TestAccAGuestWhoseConsoleLogFolderIsMissingStarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	root := t.TempDir()

	vm := env.guest(t, ctx, "drover-logdir")
	vm.ConsoleLog = filepath.Join(root, "made", "by", "drover", "console.log")
	if _, err := env.pool.CreateVM(ctx, env.info.AlphaURI, vm); err != nil {
		t.Fatalf("a VM whose console log folder is missing: %v", err)
	}
	waitConsole(t, vm.ConsoleLog, aliveLine, 2*time.Minute)
	if fi, err := os.Stat(filepath.Dir(vm.ConsoleLog)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("made folder: %v, mode %v; want 0755", err, fi.Mode().Perm())
	}
	if err := env.pool.Remove(ctx, env.info.AlphaURI, vm.Name); err != nil {
		t.Fatal(err)
	}

	private := filepath.Join(root, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	vm.ConsoleLog = filepath.Join(private, "console.log")
	if _, err := env.pool.CreateVM(ctx, env.info.AlphaURI, vm); err != nil {
		t.Fatalf("a VM whose console log folder exists: %v", err)
	}
	waitConsole(t, vm.ConsoleLog, aliveLine, 2*time.Minute)
	if fi, _ := os.Stat(private); fi.Mode().Perm() != 0o700 {
		t.Errorf("an existing log folder's mode: got %v, want 0700 (left as it was)", fi.Mode().Perm())
	}
}

func TestOnlyATakenTapNameIsRetried(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"Unable to create tap device vnet0: Device or resource busy", true},
		{"Unable to create tap device vnet0: Operation not permitted", false},
		{"Failed to create file '/var/log/libvirt/qemu/web1-console.log': No such file or directory", false},
		{"internal error: process exited while connecting to monitor", false},
	} {
		if got := tapNameTaken(libvirt.Error{Message: c.msg}); got != c.want {
			t.Errorf("%q: retried %v, want %v", c.msg, got, c.want)
		}
	}
}
