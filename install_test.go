package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestAccPlainTerraformInitFindsTheInstalledProvider is `make install` as a
// user outside the lab meets it: the provider installed into the implied
// local mirror of a fresh home folder, then `terraform init` with no CLI
// configuration at all (no dev_overrides, no registry reached) finds it, and
// `terraform validate` loads its schema.
func TestAccPlainTerraformInitFindsTheInstalledProvider(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("set TF_ACC=1 to run terraform init against the installed provider")
	}
	if _, err := exec.LookPath("terraform"); err != nil {
		t.Fatalf("TF_ACC=1 but no terraform on PATH: %v (make deps builds one)", err)
	}
	home := t.TempDir()
	version := strings.TrimSpace(run(t, ".", nil, "scripts/version.sh"))
	bin := filepath.Join(t.TempDir(), "terraform-provider-drover")
	run(t, ".", nil, "go", "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", bin, ".")
	run(t, ".", []string{"HOME=" + home}, "scripts/install.sh", version, bin)

	platform := runtime.GOOS + "_" + runtime.GOARCH
	installed := filepath.Join(home, ".terraform.d", "plugins", "registry.terraform.io", "drover", "drover", version, platform, "terraform-provider-drover_v"+version)
	if fi, err := os.Stat(installed); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("installed provider %s: %v (mode %v), want an executable", installed, err, fi)
	}

	dir := t.TempDir()
	config := `terraform {
  required_providers {
    drover = {
      source  = "drover/drover"
      version = "` + version + `"
    }
  }
}

# No provider block: validate loads the schema without needing hosts.
resource "drover_volume" "data" {
  name     = "data"
  size_mib = 64
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// No CLI configuration: only the implied local mirror can offer the
	// provider (the registry is not reachable from here).
	env := []string{"HOME=" + home, "TF_CLI_CONFIG_FILE=", "TF_PLUGIN_CACHE_DIR=", "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"}
	out := run(t, dir, env, "terraform", "init", "-input=false", "-no-color")
	if !strings.Contains(out, "Installing drover/drover v"+version) {
		t.Errorf("terraform init did not install drover/drover v%s:\n%s", version, out)
	}
	run(t, dir, env, "terraform", "validate", "-no-color")
}

// run runs a command in dir with env added and returns its output; it fails
// the test when the command fails.
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
