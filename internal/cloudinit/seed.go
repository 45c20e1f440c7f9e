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

// Limits on what Read accepts. Write's seeds are far smaller: a root
// directory of one sector and files of a few KiB.
const (
	maxImageSize = 16 << 20 // bytes of the image Read looks at
	maxRootDir   = 64 << 10 // bytes of the root directory
	maxFileSize  = 1 << 20  // bytes of each seed file
)

// ISO 9660 layout that Read reads (ECMA-119 8.4 and 9.1).
const (
	sectorSize     = 2048
	pvdSector      = 16
	pvdVolumeID    = 40  // offset of the volume identifier (32 bytes) in the PVD
	pvdBlockSize   = 128 // offset of the logical block size (both-endian 16-bit)
	pvdRootRecord  = 156 // offset of the root directory record in the PVD
	dirRecordFixed = 33  // a directory record's size before its identifier
	flagDirectory  = 0x02
	flagMultiExt   = 0x80
)

// Read reads a seed back from its ISO 9660 image, as Write wrote it. A
// file the image lacks reads as empty: Write leaves out an empty
// network-config, so absent and empty are the same seed. user-data and
// meta-data must be there: Write always writes both.
//
// The image may come from anywhere (a storage volume), so Read parses it
// itself, strictly and within fixed bounds, and refuses what Write does not
// make: Rock Ridge and other System Use areas, multi-extent or interleaved
// files, block sizes other than 2048. It looks at the image's first 16 MiB
// at most; when image has a Size method (bytes.Reader, io.SectionReader),
// it looks no further than that size either.
func Read(image io.ReaderAt) (Seed, error) {
	s, err := read(image)
	if err != nil {
		return Seed{}, fmt.Errorf("cloud-init seed: %w", err)
	}
	return s, nil
}

func read(image io.ReaderAt) (Seed, error) {
	size := int64(maxImageSize)
	if sz, ok := image.(interface{ Size() int64 }); ok {
		size = max(min(sz.Size(), size), 0)
	}
	r := io.NewSectionReader(image, 0, size)

	pvd, err := readAt(r, pvdSector*sectorSize, sectorSize)
	if err != nil {
		return Seed{}, fmt.Errorf("not an ISO 9660 image: read primary volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" || pvd[6] != 1 {
		return Seed{}, errors.New("not an ISO 9660 image: no primary volume descriptor")
	}
	if label := strings.TrimRight(string(pvd[pvdVolumeID:pvdVolumeID+32]), " "); label != Label {
		return Seed{}, fmt.Errorf("label is %q, want %q", label, Label)
	}
	le, be := binary.LittleEndian.Uint16(pvd[pvdBlockSize:]), binary.BigEndian.Uint16(pvd[pvdBlockSize+2:])
	if le != be || le != sectorSize {
		return Seed{}, fmt.Errorf("logical block size is %d/%d, want %d", le, be, sectorSize)
	}

	root, err := parseRecord(pvd[pvdRootRecord : pvdRootRecord+34])
	if err != nil {
		return Seed{}, fmt.Errorf("root directory record: %w", err)
	}
	if root.flags&flagDirectory == 0 || root.id != "\x00" {
		return Seed{}, errors.New("root directory record is not a directory's own record")
	}
	if root.length == 0 || root.length > maxRootDir {
		return Seed{}, fmt.Errorf("root directory is %d bytes, want 1 to %d", root.length, maxRootDir)
	}
	dir, err := readExtent(r, size, root)
	if err != nil {
		return Seed{}, fmt.Errorf("root directory: %w", err)
	}

	var s Seed
	fields := map[string]*string{"user-data": &s.UserData, "meta-data": &s.MetaData, "network-config": &s.NetworkConfig}
	seen := map[string]bool{}
	// Every turn moves off forward by at least one byte, and dir is at most
	// maxRootDir bytes.
	for off := 0; off < len(dir); {
		n := int(dir[off])
		if n == 0 {
			// No record starts here: the next one is at the next sector.
			off = (off/sectorSize + 1) * sectorSize
			continue
		}
		if off+n > len(dir) {
			return Seed{}, fmt.Errorf("root directory: record at %d runs past the directory's end", off)
		}
		if off/sectorSize != (off+n-1)/sectorSize {
			return Seed{}, fmt.Errorf("root directory: record at %d crosses a sector boundary", off)
		}
		rec, err := parseRecord(dir[off : off+n])
		if err != nil {
			return Seed{}, fmt.Errorf("root directory: record at %d: %w", off, err)
		}
		off += n
		name := fileName(rec.id)
		field, ok := fields[name]
		if !ok || rec.flags&flagDirectory != 0 {
			continue
		}
		if seen[name] {
			return Seed{}, fmt.Errorf("root directory holds %s twice", name)
		}
		seen[name] = true
		if rec.flags&flagMultiExt != 0 || rec.interleaved || rec.xattrLen != 0 {
			return Seed{}, fmt.Errorf("%s is multi-extent, interleaved or has extended attributes", name)
		}
		if rec.length > maxFileSize {
			return Seed{}, fmt.Errorf("%s is %d bytes, more than %d", name, rec.length, maxFileSize)
		}
		b, err := readExtent(r, size, rec)
		if err != nil {
			return Seed{}, fmt.Errorf("read %s: %w", name, err)
		}
		*field = string(b)
	}
	for _, name := range []string{"user-data", "meta-data"} {
		if !seen[name] {
			return Seed{}, fmt.Errorf("the image has no %s file", name)
		}
	}
	return s, nil
}

// record is the part of an ISO 9660 directory record that Read uses.
type record struct {
	xattrLen    byte
	extent      uint32 // logical block of the data
	length      uint32 // bytes of data
	flags       byte
	interleaved bool
	id          string
}

// parseRecord parses one directory record; b is exactly the record's bytes
// (its length byte says how many).
func parseRecord(b []byte) (record, error) {
	if len(b) < dirRecordFixed+1 || int(b[0]) != len(b) {
		return record{}, fmt.Errorf("record of %d bytes, want 34 to 255", len(b))
	}
	extent, ok1 := bothEndian32(b[2:10])
	length, ok2 := bothEndian32(b[10:18])
	if !ok1 || !ok2 {
		return record{}, errors.New("both-endian fields disagree")
	}
	idLen := int(b[32])
	if idLen == 0 {
		return record{}, errors.New("empty file identifier")
	}
	end := dirRecordFixed + idLen
	if idLen%2 == 0 {
		end++ // a padding byte follows an identifier of even length
	}
	if end > len(b) {
		return record{}, errors.New("file identifier runs past the record")
	}
	if end < len(b) {
		return record{}, errors.New("record has a System Use area (Rock Ridge): Drover's seeds have none")
	}
	return record{
		xattrLen:    b[1],
		extent:      extent,
		length:      length,
		flags:       b[25],
		interleaved: b[26] != 0 || b[27] != 0,
		id:          string(b[dirRecordFixed : dirRecordFixed+idLen]),
	}, nil
}

// bothEndian32 decodes an ISO 9660 both-endian 32-bit number.
func bothEndian32(b []byte) (uint32, bool) {
	le, be := binary.LittleEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8])
	return le, le == be
}

// fileName is a file identifier as Linux shows it, and so as cloud-init
// looks for it: in lower case, without the ";1" version and the "." of an
// empty extension.
func fileName(id string) string {
	if i := strings.LastIndexByte(id, ';'); i >= 0 {
		id = id[:i]
	}
	return strings.ToLower(strings.TrimSuffix(id, "."))
}

// readExtent reads rec's data, which must lie inside the first size bytes
// of r. The caller bounds rec.length.
func readExtent(r io.ReaderAt, size int64, rec record) ([]byte, error) {
	start := int64(rec.extent) * sectorSize
	if start < (pvdSector+1)*sectorSize || start+int64(rec.length) > size {
		return nil, fmt.Errorf("extent at block %d (%d bytes) lies outside the image of %d bytes", rec.extent, rec.length, size)
	}
	return readAt(r, start, int(rec.length))
}

// readAt reads exactly n bytes at off.
func readAt(r io.ReaderAt, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	got, err := r.ReadAt(b, off)
	if got == n {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
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
