package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/lab"
	"github.com/drover/terraform-provider-drover/internal/storage"
)

// TestNewcomerQuickstartOnAFreshLab is `make demo` as a newcomer meets it:
// a lab started from an empty state folder (hosts and storage box that
// have never run anything; only the built guest and binaries are reused),
// the quickstart applied with the real terraform CLI, and then checked the
// way the demo's user looks: each VM running on its host and only there, its
// console log growing. A second apply changes nothing (`make demo` twice);
// after a destroy nothing is left, and an apply after it works again
// (`make demo` after `make demo-down`).
//
// It needs the lab's fixed addresses to itself, so `make test` runs it on
// its own before any other lab test (DROVER_NEWCOMER=1, after stopping the
// lab of .lab/): no earlier test can prepare the ground for it.
func TestNewcomerQuickstartOnAFreshLab(t *testing.T) {
	if os.Getenv("DROVER_NEWCOMER") != "1" {
		t.Skip("set DROVER_NEWCOMER=1 to run the quickstart on a fresh lab (make test does, with the lab of .lab/ stopped)")
	}
	for _, tool := range []string{"terraform", "virsh", "libvirtd", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("DROVER_NEWCOMER=1 but %s is missing: %v (make deps installs it)", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}

	l, err := lab.New(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	l.BinDir = filepath.Join(root, ".lab", "bin")
	l.GuestDir = filepath.Join(root, ".lab", "guest")
	for _, bin := range []string{"terraform-provider-drover", "drover-target"} {
		if _, err := os.Stat(filepath.Join(l.BinDir, bin)); err != nil {
			t.Fatalf("%s is not built in %s: run make build first: %v", bin, l.BinDir, err)
		}
	}
	if entries, _ := os.ReadDir(l.Dir); len(entries) != 0 {
		t.Fatalf("the lab's state folder %s is not empty", l.Dir)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := l.Down(ctx); err != nil {
			t.Errorf("stop the fresh lab: %v", err)
		}
	})
	info, err := l.Up(ctx)
	if err != nil {
		t.Fatalf("start a lab from an empty state: %v", err)
	}

	tf := quickstart(t, root, l.Dir)
	tf.run(ctx, "apply", "-input=false", "-auto-approve", "-var-file="+filepath.Join(l.Dir, "lab.tfvars"))
	where := map[string]string{"web1": "alpha", "web2": "beta"}
	checkRunning(t, ctx, info, l.Dir, where)

	out := tf.run(ctx, "apply", "-input=false", "-auto-approve", "-var-file="+filepath.Join(l.Dir, "lab.tfvars"))
	if !strings.Contains(out, "No changes.") {
		t.Errorf("a second apply (make demo twice) changed something:\n%s", out)
	}

	tf.run(ctx, "destroy", "-input=false", "-auto-approve", "-var-file="+filepath.Join(l.Dir, "lab.tfvars"))
	checkNothingLeft(t, ctx, info)

	tf.run(ctx, "apply", "-input=false", "-auto-approve", "-var-file="+filepath.Join(l.Dir, "lab.tfvars"))
	checkRunning(t, ctx, info, l.Dir, where)
	tf.run(ctx, "destroy", "-input=false", "-auto-approve", "-var-file="+filepath.Join(l.Dir, "lab.tfvars"))
	checkNothingLeft(t, ctx, info)
}

// terraformDir runs the terraform CLI in one folder with the lab's CLI
// configuration (its dev_overrides name the freshly built provider).
type terraformDir struct {
	t   *testing.T
	dir string
	env []string
}

// quickstart copies examples/quickstart's configuration (not its state)
// into a folder of the test's own.
func quickstart(t *testing.T, root, labDir string) terraformDir {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "quickstart")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "examples", "quickstart", "*.tf"))
	if len(files) == 0 {
		t.Fatal("examples/quickstart has no .tf files")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "TF_CLI_CONFIG_FILE="+filepath.Join(labDir, "terraformrc"), "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	return terraformDir{t: t, dir: dir, env: env}
}

func (tf terraformDir) run(ctx context.Context, args ...string) string {
	tf.t.Helper()
	cmd := exec.CommandContext(ctx, "terraform", append(args, "-no-color")...)
	cmd.Dir, cmd.Env = tf.dir, tf.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tf.t.Fatalf("terraform %s: %v\n%s", args[0], err, out.String())
	}
	return out.String()
}

// virsh runs virsh against uri and returns its trimmed output.
func virsh(ctx context.Context, uri string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

var recordLine = regexp.MustCompile(`drover-guest: record seq=\d+`)

// checkRunning checks that each VM runs on its host and is defined on no
// other, and that its console log, as the demo's summary names it, grows.
func checkRunning(t *testing.T, ctx context.Context, info lab.Info, labDir string, where map[string]string) {
	t.Helper()
	uris := info.HostURIs()
	for vm, host := range where {
		if state, err := virsh(ctx, uris[host], "domstate", vm); err != nil || state != "running" {
			t.Errorf("%s on %s: got state %q (%v), want running", vm, host, state, err)
		}
		for other, uri := range uris {
			if other == host {
				continue
			}
			names, err := virsh(ctx, uri, "list", "--all", "--name")
			if err != nil {
				t.Fatalf("list domains on %s: %v: %s", other, err, names)
			}
			if strings.Contains("\n"+names+"\n", "\n"+vm+"\n") {
				t.Errorf("%s is defined on %s too", vm, other)
			}
		}
		log := filepath.Join(labDir, "hosts", host, "log", "qemu", vm+"-console.log")
		if err := grows(ctx, log); err != nil {
			t.Errorf("%s's console log %s: %v", vm, log, err)
		}
	}
}

// grows waits until the console log has a record line, then until it has
// more of them.
func grows(ctx context.Context, log string) error {
	count := func() int {
		b, _ := os.ReadFile(log)
		return len(recordLine.FindAll(b, -1))
	}
	first := -1
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		n := count()
		if first < 0 && n > 0 {
			first = n
		} else if first > 0 && n > first {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if first < 0 {
		return errors.New("no record line within 90 s: the guest did not write to its disk")
	}
	return fmt.Errorf("stuck at %d record lines", first)
}

// checkNothingLeft checks that no domain is defined on any host and no
// volume is left on the storage box.
func checkNothingLeft(t *testing.T, ctx context.Context, info lab.Info) {
	t.Helper()
	for host, uri := range info.HostURIs() {
		names, err := virsh(ctx, uri, "list", "--all", "--name")
		if err != nil {
			t.Fatalf("list domains on %s: %v: %s", host, err, names)
		}
		if names != "" {
			t.Errorf("after destroy, %s still has domains: %s", host, names)
		}
	}
	store, err := storage.New(info.StorageEndpoint, info.StorageToken)
	if err != nil {
		t.Fatal(err)
	}
	vols, err := store.ListVolumes(ctx)
	if err != nil {
		t.Fatalf("list volumes: %v", err)
	}
	for _, v := range vols {
		t.Errorf("after destroy, volume %s is left on the storage box", v.Name)
	}
}
