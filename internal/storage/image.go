package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Image formats the target takes.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// MiB is a mebibyte; sizes on the target are whole MiB.
const MiB = 1 << 20

// maxImageSize bounds the virtual size read from an image header (1 PiB),
// so a corrupt header cannot ask for an absurd volume.
const maxImageSize = 1 << 50

// ImageInfo is what an image file's header says about it.
type ImageInfo struct {
	Format string // FormatRaw or FormatQCOW2
	// Size is the disk's size in bytes: the file's size for raw, the
	// virtual size for qcow2.
	Size int64
}

// SizeMiB is the smallest whole number of MiB that holds the image.
func (i ImageInfo) SizeMiB() int64 { return (i.Size + MiB - 1) / MiB }

// foreignMagics are formats recognised by their first bytes but not taken.
var foreignMagics = []struct {
	magic []byte
	name  string
}{
	{[]byte("KDMV"), "VMDK"},
	{[]byte("vhdxfile"), "VHDX"},
	{[]byte("conectix"), "VHD"},
}

// InspectImage reads the header of an image of fileSize bytes: qcow2 by its
// magic "QFI\xfb", raw otherwise. VMDK, VHDX, VHD and VDI images are refused
// with the advice to convert them.
func InspectImage(r io.ReaderAt, fileSize int64) (ImageInfo, error) {
	head := make([]byte, 512)
	n, err := r.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return ImageInfo{}, fmt.Errorf("read image header: %w", err)
	}
	head = head[:n]
	if bytes.HasPrefix(head, []byte("QFI\xfb")) {
		return inspectQCOW2(head)
	}
	for _, m := range foreignMagics {
		if bytes.HasPrefix(head, m.magic) {
			return ImageInfo{}, fmt.Errorf("the image is %s: convert it first, e.g. `qemu-img convert -O qcow2 IMAGE out.qcow2`", m.name)
		}
	}
	if len(head) >= 0x48 && bytes.Equal(head[0x40:0x48], []byte("<<< Orac")) {
		return ImageInfo{}, errors.New("the image is VDI: convert it first, e.g. `qemu-img convert -O qcow2 IMAGE out.qcow2`")
	}
	if fileSize <= 0 {
		return ImageInfo{}, errors.New("the image is empty")
	}
	return ImageInfo{Format: FormatRaw, Size: fileSize}, nil
}

// inspectQCOW2 reads a qcow2 header: big-endian version at byte 4 and
// virtual size at byte 24.
func inspectQCOW2(head []byte) (ImageInfo, error) {
	if len(head) < 32 {
		return ImageInfo{}, errors.New("the qcow2 header is truncated")
	}
	if v := binary.BigEndian.Uint32(head[4:8]); v != 2 && v != 3 {
		return ImageInfo{}, fmt.Errorf("qcow2 version %d is not supported: use version 2 or 3", v)
	}
	size := binary.BigEndian.Uint64(head[24:32])
	if size == 0 || size > maxImageSize {
		return ImageInfo{}, fmt.Errorf("the qcow2 header gives a virtual size of %d bytes, which is not usable", size)
	}
	return ImageInfo{Format: FormatQCOW2, Size: int64(size)}, nil
}

// InspectImageFile is InspectImage on a file.
func InspectImageFile(path string) (ImageInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return ImageInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ImageInfo{}, err
	}
	if !st.Mode().IsRegular() {
		return ImageInfo{}, fmt.Errorf("%s is not a regular file", path)
	}
	info, err := InspectImage(f, st.Size())
	if err != nil {
		return ImageInfo{}, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}
