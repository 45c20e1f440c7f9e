package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Info is what a running lab tells its users: the addresses of its hosts and
// storage box, and the guest it built. It is written to .lab/lab.json by Up and
// mirrored, as Terraform variables, in .lab/lab.tfvars.
type Info struct {
	AlphaURI string `json:"alpha_uri"`
	BetaURI  string `json:"beta_uri"`
	// The same hosts over libvirt's ssh transport (key in .lab/ssh).
	AlphaSSHURI     string `json:"alpha_ssh_uri"`
	BetaSSHURI      string `json:"beta_ssh_uri"`
	StorageEndpoint string `json:"storage_endpoint"`
	StorageToken    string `json:"storage_token"`
	StoragePortal   string `json:"storage_portal"`
	// The lab's second storage box, whose API is https with a certificate
	// of the lab's own CA (StorageCAFile); same token.
	TLSStorageEndpoint string `json:"tls_storage_endpoint"`
	TLSStoragePortal   string `json:"tls_storage_portal"`
	StorageCAFile      string `json:"storage_ca_file"`
	GuestKernel        string `json:"guest_kernel"`
	GuestInitrd        string `json:"guest_initrd"`
}

// HostURIs returns the lab's hosts by name, as the provider's host blocks name them.
func (i Info) HostURIs() map[string]string {
	return map[string]string{"alpha": i.AlphaURI, "beta": i.BetaURI}
}

// HostSSHURIs returns the lab's hosts by name with their ssh URIs.
func (i Info) HostSSHURIs() map[string]string {
	return map[string]string{"alpha": i.AlphaSSHURI, "beta": i.BetaSSHURI}
}

// Find locates the repository root above the working directory and reads the
// running lab's Info from its .lab folder. It fails with a hint to run `make lab`
// when no lab is up.
func Find() (Info, error) {
	root, err := RepoRoot()
	if err != nil {
		return Info{}, err
	}
	return Load(filepath.Join(root, ".lab"))
}

// Load reads Info from a lab state directory.
func Load(dir string) (Info, error) {
	var info Info
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("no lab state in %s: start the lab with `make lab`", dir)
	}
	if err != nil {
		return info, fmt.Errorf("read lab state: %w", err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("read lab state %s: %w", filepath.Join(dir, "lab.json"), err)
	}
	return info, nil
}

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
