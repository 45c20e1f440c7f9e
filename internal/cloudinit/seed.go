package cloudinit

import (
	"bytes"
	"encoding/binary"
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

// Read reads a seed back from its ISO 9660 image, as Write wrote it. A
// file the image lacks reads as empty: Write leaves out an empty
// network-config, so absent and empty are the same seed.
func Read(image io.ReaderAt) (Seed, error) {
	if err := checkNoSystemUse(image); err != nil {
		return Seed{}, fmt.Errorf("cloud-init seed: %w", err)
	}
	img, err := iso9660.OpenImage(image)
	if err != nil {
		return Seed{}, fmt.Errorf("cloud-init seed: open image: %w", err)
	}
	label, err := img.Label()
	if err != nil {
		return Seed{}, fmt.Errorf("cloud-init seed: label: %w", err)
	}
	if label != Label {
		return Seed{}, fmt.Errorf("cloud-init seed: label is %q, want %q", label, Label)
	}
	root, err := img.RootDir()
	if err != nil {
		return Seed{}, fmt.Errorf("cloud-init seed: root directory: %w", err)
	}
	children, err := root.GetChildren()
	if err != nil {
		return Seed{}, fmt.Errorf("cloud-init seed: root directory: %w", err)
	}
	var s Seed
	fields := map[string]*string{"user-data": &s.UserData, "meta-data": &s.MetaData, "network-config": &s.NetworkConfig}
	for _, f := range children {
		// Linux, and so cloud-init, shows plain ISO 9660 names in lower case.
		field, ok := fields[strings.ToLower(f.Name())]
		if !ok || f.IsDir() {
			continue
		}
		b, err := io.ReadAll(f.Reader())
		if err != nil {
			return Seed{}, fmt.Errorf("cloud-init seed: read %s: %w", f.Name(), err)
		}
		*field = string(b)
	}
	return s, nil
}

// ISO 9660 layout that checkNoSystemUse reads (ECMA-119 8.4 and 9.1).
const (
	sectorSize     = 2048
	pvdSector      = 16
	pvdRootRecord  = 156 // offset of the root directory record in the PVD
	dirRecordFixed = 33  // a directory record's size before its identifier
)

// checkNoSystemUse refuses an image whose root directory's "." record has a
// System Use area (SUSP, Rock Ridge). Write never makes one, and the
// iso9660 package loops forever on some malformed ones (an entry of length
// zero, a continuation area that points at itself).
func checkNoSystemUse(image io.ReaderAt) error {
	pvd := make([]byte, sectorSize)
	if _, err := image.ReadAt(pvd, pvdSector*sectorSize); err != nil {
		return fmt.Errorf("read primary volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return errors.New("not an ISO 9660 image: no primary volume descriptor")
	}
	root := pvd[pvdRootRecord : pvdRootRecord+34]
	extent := int64(binary.LittleEndian.Uint32(root[2:6]))
	length := int64(binary.LittleEndian.Uint32(root[10:14]))
	sector := make([]byte, sectorSize)
	// The iso9660 package looks at every record named "." (identifier 0)
	// in the root directory, so this does too.
	for off := int64(0); off < length; off += sectorSize {
		if _, err := image.ReadAt(sector, (extent*sectorSize)+off); err != nil {
			return fmt.Errorf("read root directory: %w", err)
		}
		for i := 0; i < sectorSize && sector[i] != 0; i += int(sector[i]) {
			rec := sector[i:min(i+int(sector[i]), sectorSize)]
			if len(rec) < dirRecordFixed+1 {
				return errors.New("root directory: record too short")
			}
			idLen := int(rec[32])
			if idLen != 1 || rec[dirRecordFixed] != 0 {
				continue
			}
			if len(rec) > dirRecordFixed+idLen {
				return errors.New("root directory has a System Use area (Rock Ridge): Drover's seeds have none")
			}
		}
	}
	return nil
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
