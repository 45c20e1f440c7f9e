package provider

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
)

// guideMarker is the line of the guide "Running on real hosts" that comes
// just before the configuration this test applies.
const guideMarker = "<!-- The acceptance test TestAccGuideRunningOnRealHostsOnTheLab applies this block. -->"

// guideConfig returns the terraform block that follows guideMarker in the
// guide's template, as a reader copies it.
func guideConfig(t *testing.T, template string) string {
	t.Helper()
	b, err := os.ReadFile(template)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), guideMarker+"\n```terraform\n")
	if !ok {
		t.Fatalf("%s: no terraform block right after %q", template, guideMarker)
	}
	block, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatalf("%s: the terraform block after the marker does not end", template)
	}
	return block + "\n"
}

// TestAccGuideRunningOnRealHostsOnTheLab follows the guide as a user
// does, against the lab playing the real machines: the provider built by
// make installed into the implied local mirror of a fresh home folder,
// the guide's main.tf in a folder of its own, `terraform init` with no CLI
// configuration (no dev_overrides, no registry), then apply over ssh and
// https with storage.ca_file, alpha into maintenance, and destroy — the
// terraform CLI running the installed provider binary, not an in-process one.
func TestAccGuideRunningOnRealHostsOnTheLab(t *testing.T) {
	l := sshLab(t)
	if l.info.TLSStorageEndpoint == "" || l.info.StorageCAFile == "" {
		t.Fatal("the lab has no TLS storage box: restart it with make lab")
	}
	if _, err := exec.LookPath("terraform"); err != nil {
		t.Fatalf("TF_ACC=1 but no terraform on PATH: %v", err)
	}
	bin := filepath.Join(l.root, ".lab", "bin", "terraform-provider-drover")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the provider is not built: %v (make lab builds it)", err)
	}
	tlsBox, err := storage.New(l.info.TLSStorageEndpoint, l.info.StorageToken, storage.WithCAFile(l.info.StorageCAFile))
	if err != nil {
		t.Fatal(err)
	}

	home, dir := t.TempDir(), t.TempDir()
	version := strings.TrimSpace(run(t, l.root, nil, "scripts/version.sh"))
	run(t, l.root, []string{"HOME=" + home}, "scripts/install.sh", version, bin)
	if err := os.WriteFile(filepath.Join(dir, "main.tf"),
		[]byte(guideConfig(t, filepath.Join(l.root, "templates", "guides", "running-on-real-hosts.md.tmpl"))), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "TF_CLI_CONFIG_FILE=", "TF_PLUGIN_CACHE_DIR=", "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"}
	lab := filepath.Join(l.root, ".lab")
	vars := []string{"-input=false", "-no-color",
		"-var-file=" + filepath.Join(lab, "lab.tfvars"), "-var-file=" + filepath.Join(lab, "ssh.tfvars"),
		"-var-file=" + filepath.Join(lab, "tls.tfvars"),
		"-var", "domain_type=qemu", "-var", "alpha_migration_address=127.0.0.2", "-var", "beta_migration_address=127.0.0.3"}
	tf := func(args ...string) string {
		t.Helper()
		return run(t, dir, env, "terraform", args...)
	}
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			cmd := exec.Command("terraform", append([]string{"destroy", "-auto-approve"}, vars...)...)
			cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("terraform destroy after the failure: %v\n%s", err, out)
			}
		}
	})
	outputs := func() (reachable map[string]bool, host string) {
		t.Helper()
		var out struct {
			Reachable struct{ Value map[string]bool } `json:"reachable"`
			Host      struct{ Value string }          `json:"first_runs_on"`
		}
		if err := json.Unmarshal([]byte(tf("output", "-json")), &out); err != nil {
			t.Fatal(err)
		}
		return out.Reachable.Value, out.Host.Value
	}
	onBox := func(wantThere bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := tlsBox.GetVolume(ctx, "first-disk")
		switch {
		case wantThere && err != nil:
			t.Fatalf("volume first-disk on the TLS box %s: %v", l.info.TLSStorageEndpoint, err)
		case !wantThere && !errors.Is(err, storage.ErrNotFound):
			t.Fatalf("volume first-disk on the TLS box after destroy: got %v, want not found", err)
		}
	}

	if out := tf("init", "-input=false", "-no-color"); !strings.Contains(out, "Installing drover/drover v"+version) {
		t.Fatalf("terraform init did not install drover/drover v%s from the local mirror:\n%s", version, out)
	}
	tf(append([]string{"apply", "-auto-approve"}, vars...)...)
	reachable, host := outputs()
	if !reachable["alpha"] || !reachable["beta"] || host != "alpha" {
		t.Fatalf("after apply: reachable %v, first_runs_on %q; want both hosts reachable and the VM on alpha", reachable, host)
	}
	if err := l.checkOnlyOnOverSSH("alpha", "first")(nil); err != nil {
		t.Fatal(err)
	}
	onBox(true)
	if _, err := l.target.GetVolume(context.Background(), "first-disk"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("volume first-disk on the lab's http box: got %v, want it only on the TLS box", err)
	}

	tf(append([]string{"apply", "-auto-approve", "-var", "alpha_maintenance=true"}, vars...)...)
	if _, host := outputs(); host != "beta" {
		t.Fatalf("with alpha in maintenance first_runs_on is %q, want beta", host)
	}
	if err := l.checkOnlyOnOverSSH("beta", "first")(nil); err != nil {
		t.Fatal(err)
	}

	tf(append([]string{"destroy", "-auto-approve", "-var", "alpha_maintenance=true"}, vars...)...)
	destroyed = true
	if err := l.checkVMGone([]string{"first"}, nil)(nil); err != nil {
		t.Fatal(err)
	}
	onBox(false)
}

// run runs a command in dir with env added and returns its output; it
// fails the test when the command fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
