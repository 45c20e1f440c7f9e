package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Image formats accepted by WriteImage.
const (
	FormatAuto  = ""
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

const sniffLen = 512

// magics of formats we recognise but do not take, with the advice to give.
var foreignMagics = []struct {
	magic []byte
	name  string
}{
	{[]byte("KDMV"), "VMDK"},
	{[]byte("vhdxfile"), "VHDX"},
	{[]byte("conectix"), "VHD"},
}

// DetectFormat names the format of an image from its first bytes: qcow2 by
// its magic "QFI\xfb", raw otherwise. It refuses formats it recognises but
// cannot take.
func DetectFormat(head []byte) (string, error) {
	if bytes.HasPrefix(head, []byte("QFI\xfb")) {
		return FormatQCOW2, nil
	}
	for _, m := range foreignMagics {
		if bytes.HasPrefix(head, m.magic) {
			return "", errorf(ErrInvalid, "the image is %s: convert it first, e.g. `qemu-img convert -O qcow2 IMAGE out.qcow2`, then upload raw or qcow2", m.name)
		}
	}
	if len(head) >= 0x48 && bytes.Equal(head[0x40:0x48], []byte("<<< Orac")) {
		return "", errorf(ErrInvalid, "the image is VDI: convert it first, e.g. `qemu-img convert -O qcow2 IMAGE out.qcow2`, then upload raw or qcow2")
	}
	return FormatRaw, nil
}

// WriteImage replaces a volume's content with an image read from r: raw,
// or qcow2 converted to raw with qemu-img (package qemu-utils). format is
// FormatAuto (detect), FormatRaw or FormatQCOW2. An image larger than the
// volume is refused. The new content is built in a temporary file and
// renamed over the backing file, so a crash leaves the old or the new
// content; the caller must stop exporting the volume around the call, since
// the backing file is a new file afterwards.
func (s *Store) WriteImage(ctx context.Context, name string, r io.Reader, format string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if format != FormatAuto && format != FormatRaw && format != FormatQCOW2 {
		return errorf(ErrInvalid, "format %q is not supported: use raw or qcow2, or leave it out to detect", format)
	}
	unlock, err := s.locks.lock(ctx, "volume/"+name)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := s.readyVolume(name)
	if err != nil {
		return err
	}
	size := rec.SizeMiB * MiB

	head := make([]byte, sniffLen)
	n, err := io.ReadFull(r, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read image: %w", err)
	}
	head = head[:n]
	if format == FormatAuto {
		if format, err = DetectFormat(head); err != nil {
			return err
		}
	}
	body := io.MultiReader(bytes.NewReader(head), r)

	tmp, err := os.CreateTemp(s.abs(tmpDir), name+"-*.raw")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	done := false
	defer func() {
		if !done {
			os.Remove(tmpPath)
		}
	}()
	defer tmp.Close()

	switch format {
	case FormatRaw:
		err = writeSparse(ctx, tmp, body, size)
	case FormatQCOW2:
		err = s.convertQCOW2(ctx, tmp, body, size)
	}
	if err != nil {
		return err
	}
	if err := tmp.Truncate(size); err != nil {
		return mapNoSpace(err)
	}
	if err := tmp.Sync(); err != nil {
		return mapNoSpace(err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	s.step("image/written")
	if err := os.Rename(tmpPath, s.abs(rec.File)); err != nil {
		return fmt.Errorf("replace content of volume %q: %w", name, err)
	}
	done = true
	return syncDir(s.abs(volumesDir))
}

// writeSparse copies r to f, leaving all-zero blocks as holes, and refuses
// more than limit bytes.
func writeSparse(ctx context.Context, f *os.File, r io.Reader, limit int64) error {
	const block = 64 << 10
	buf := make([]byte, block)
	zero := make([]byte, block)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if off+int64(n) > limit {
				return errorf(ErrTooLarge, "the image is larger than the volume's %d MiB: grow the volume first (PATCH size_mib) or upload a smaller image", limit/MiB)
			}
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return mapNoSpace(werr)
				}
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read image: %w", err)
		}
	}
}

// qemuImgInfo is the part of `qemu-img info --output=json` we look at.
type qemuImgInfo struct {
	VirtualSize     int64  `json:"virtual-size"`
	Format          string `json:"format"`
	BackingFilename string `json:"backing-filename"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

// convertQCOW2 stores the qcow2 stream next to dst, checks it (no backing
// or external data file: either would read files of the storage box into
// the volume; virtual size within the volume) and converts it into dst.
func (s *Store) convertQCOW2(ctx context.Context, dst *os.File, r io.Reader, size int64) error {
	bin, err := exec.LookPath(s.qemuImg)
	if err != nil {
		return errorf(ErrUnsupported, "qcow2 images need qemu-img, which is not installed on the storage box: install the qemu-utils package (apt-get install qemu-utils), or upload a raw image")
	}
	src, err := os.CreateTemp(filepath.Dir(dst.Name()), "upload-*.qcow2")
	if err != nil {
		return err
	}
	defer os.Remove(src.Name())
	defer src.Close()
	// A qcow2 file holds at most the virtual size plus metadata; a bound
	// keeps a bogus upload from filling the disk.
	limit := size + size/4 + 64*MiB
	n, err := io.Copy(src, io.LimitReader(r, limit+1))
	if err != nil {
		return fmt.Errorf("receive qcow2 image: %w", mapNoSpace(err))
	}
	if n > limit {
		return errorf(ErrTooLarge, "the qcow2 file is larger than a qcow2 image of the volume's %d MiB can be: grow the volume first or upload a smaller image", size/MiB)
	}
	if err := src.Close(); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, bin, "info", "--output=json", "-f", "qcow2", src.Name()).Output()
	if err != nil {
		return errorf(ErrInvalid, "the image is not a valid qcow2 file: %s", cmdErr(err))
	}
	var info qemuImgInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return fmt.Errorf("read qemu-img info: %w", err)
	}
	switch {
	case info.BackingFilename != "":
		return errorf(ErrInvalid, "the qcow2 image has a backing file (%q): flatten it first with `qemu-img convert -O qcow2 IMAGE flat.qcow2`", info.BackingFilename)
	case info.FormatSpecific.Data.DataFile != "":
		return errorf(ErrInvalid, "the qcow2 image uses an external data file: convert it to a self-contained image first")
	case info.VirtualSize > size:
		return errorf(ErrTooLarge, "the qcow2 image's virtual size is %d MiB, larger than the volume's %d MiB: grow the volume first", (info.VirtualSize+MiB-1)/MiB, size/MiB)
	}
	// The json: form pins the driver and forbids a backing file even if
	// the header changed between info and convert.
	spec, err := json.Marshal(map[string]any{
		"driver":  "qcow2",
		"backing": nil,
		"file":    map[string]any{"driver": "file", "filename": src.Name()},
	})
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "convert", "-q", "-O", "raw", "json:"+string(spec), dst.Name())
	if _, err := cmd.Output(); err != nil {
		return errorf(ErrInvalid, "converting the qcow2 image failed: %s", cmdErr(err))
	}
	return nil
}

func cmdErr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return err.Error()
}
