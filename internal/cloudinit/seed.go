package cloudinit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kdomanski/iso9660"
)

// Label is the volume label cloud-init's NoCloud datasource looks for.
const Label = "cidata"

// Seed is what a VM's cloud-init reads on first boot. MetaData should carry
// an instance-id: cloud-init runs its once-per-instance steps again when it
// changes.
type Seed struct {
	UserData      string
	MetaData      string
	NetworkConfig string // optional: the file is left out when empty
}

// Write writes the seed as an ISO 9660 image to w.
func (s Seed) Write(w io.Writer) error {
	if strings.TrimSpace(s.MetaData) == "" && strings.TrimSpace(s.UserData) == "" {
		return errors.New("cloud-init seed: user-data and meta-data are both empty")
	}
	iw, err := iso9660.NewWriter()
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	defer iw.Cleanup()
	for _, f := range s.files() {
		if err := iw.AddFile(strings.NewReader(f.data), f.name); err != nil {
			return fmt.Errorf("cloud-init seed: add %s: %w", f.name, err)
		}
	}
	if err := iw.WriteTo(w, Label); err != nil {
		return fmt.Errorf("cloud-init seed: write image: %w", err)
	}
	return nil
}

// Image returns the seed as an ISO 9660 image.
func (s Seed) Image() ([]byte, error) {
	var buf bytes.Buffer
	if err := s.Write(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type file struct{ name, data string }

// files are the seed's files by their NoCloud names. user-data and
// meta-data are always there (cloud-init wants both, even empty).
func (s Seed) files() []file {
	fs := []file{{"user-data", s.UserData}, {"meta-data", s.MetaData}}
	if s.NetworkConfig != "" {
		fs = append(fs, file{"network-config", s.NetworkConfig})
	}
	return fs
}
