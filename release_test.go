package main

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestReleaseHasTheRegistryLayout runs scripts/release.sh with a signing key
// the test makes and checks what a registry (and a user verifying a
// download) checks: the zips' names and contents, the manifest, every
// checksum, and the signature.
func TestReleaseHasTheRegistryLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a release (about a minute)")
	}
	gnupg := t.TempDir()
	gpgEnv := []string{"GNUPGHOME=" + gnupg}
	// gpg starts an agent for the folder; stop it with the test.
	t.Cleanup(func() { run(t, ".", gpgEnv, "gpgconf", "--kill", "gpg-agent") })
	run(t, ".", gpgEnv, "gpg", "--batch", "--passphrase", "", "--quick-gen-key", "Drover release test <release-test@drover.invalid>", "ed25519", "sign", "never")

	out := filepath.Join(t.TempDir(), "dist")
	const version = "0.9.8"
	run(t, ".", append(gpgEnv, "VERSION="+version), "scripts/release.sh", "-o", out, "-k", "release-test@drover.invalid")

	platform := runtime.GOOS + "_" + runtime.GOARCH
	prefix := "terraform-provider-drover_" + version
	want := []string{
		"drover-target_" + version + "_" + platform + ".zip",
		prefix + "_SHA256SUMS",
		prefix + "_SHA256SUMS.sig",
		prefix + "_" + platform + ".zip",
		prefix + "_manifest.json",
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("release files:\n got %q\nwant %q", got, want)
	}

	manifest, _ := os.ReadFile(filepath.Join(out, prefix+"_manifest.json"))
	source, _ := os.ReadFile("terraform-registry-manifest.json")
	if !bytes.Equal(manifest, source) || !bytes.Contains(manifest, []byte(`"6.0"`)) {
		t.Errorf("manifest: got %s, want terraform-registry-manifest.json with protocol 6.0", manifest)
	}

	checkZipHas(t, filepath.Join(out, prefix+"_"+platform+".zip"), "terraform-provider-drover_v"+version)
	checkZipHas(t, filepath.Join(out, "drover-target_"+version+"_"+platform+".zip"), "drover-target")

	sums, err := os.ReadFile(filepath.Join(out, prefix+"_SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	summed := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q is not \"SUM  NAME\"", line)
		}
		summed[name] = sum
	}
	for _, name := range []string{want[0], want[3], want[4]} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if summed[name] != hex.EncodeToString(sum[:]) {
			t.Errorf("SHA256SUMS has %q for %s, the file's sum is %x", summed[name], name, sum)
		}
	}
	if len(summed) != 3 {
		t.Errorf("SHA256SUMS covers %d files, want the two zips and the manifest:\n%s", len(summed), sums)
	}
	run(t, ".", gpgEnv, "gpg", "--batch", "--verify", filepath.Join(out, prefix+"_SHA256SUMS.sig"), filepath.Join(out, prefix+"_SHA256SUMS"))
}

// checkZipHas checks that the zip holds an executable file named name at
// its top level.
func checkZipHas(t *testing.T, path, name string) {
	t.Helper()
	r, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, f := range r.File {
		if f.Name == name {
			if f.Mode().Perm()&0o111 == 0 || f.UncompressedSize64 == 0 {
				t.Errorf("%s in %s: mode %v, %d bytes; want a non-empty executable", name, filepath.Base(path), f.Mode(), f.UncompressedSize64)
			}
			return
		}
	}
	t.Errorf("%s has no %s", filepath.Base(path), name)
}
