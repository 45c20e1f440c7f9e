package storage

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// qcow2Header is the start of a qcow2 image of the given version and
// virtual size.
func qcow2Header(version uint32, size uint64) []byte {
	h := make([]byte, 104)
	copy(h, "QFI\xfb")
	binary.BigEndian.PutUint32(h[4:], version)
	binary.BigEndian.PutUint64(h[24:], size)
	return h
}

func TestInspectImage(t *testing.T) {
	t.Parallel()
	vdi := make([]byte, 512)
	copy(vdi[0x40:], "<<< Oracle VM VirtualBox Disk Image >>>")
	tests := []struct {
		name     string
		data     []byte
		fileSize int64 // 0: len(data)
		want     ImageInfo
		wantErr  string
	}{
		{name: "a file of zeros is raw of the file's size", data: make([]byte, 3*MiB+1),
			want: ImageInfo{Format: FormatRaw, Size: 3*MiB + 1}},
		{name: "a qcow2 v3 header gives its virtual size", data: qcow2Header(3, 5*MiB),
			want: ImageInfo{Format: FormatQCOW2, Size: 5 * MiB}},
		{name: "a qcow2 v2 header is taken", data: qcow2Header(2, 1<<30),
			want: ImageInfo{Format: FormatQCOW2, Size: 1 << 30}},
		{name: "a qcow2 of unknown version is refused", data: qcow2Header(4, MiB), wantErr: "version 4"},
		{name: "a qcow2 of zero size is refused", data: qcow2Header(3, 0), wantErr: "virtual size"},
		{name: "a qcow2 of absurd size is refused", data: qcow2Header(3, 1<<62), wantErr: "virtual size"},
		{name: "a truncated qcow2 header is refused", data: []byte("QFI\xfb\x00\x00"), wantErr: "truncated"},
		{name: "a VMDK is refused with advice", data: []byte("KDMV\x01\x00"), wantErr: "VMDK: convert"},
		{name: "a VHDX is refused", data: []byte("vhdxfile...."), wantErr: "VHDX"},
		{name: "a VDI is refused", data: vdi, wantErr: "VDI"},
		{name: "an empty file is refused", data: nil, wantErr: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			size := tt.fileSize
			if size == 0 {
				size = int64(len(tt.data))
			}
			got, err := InspectImage(bytes.NewReader(tt.data), size)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("InspectImage error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("InspectImage = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestImageSizeMiBRoundsUp(t *testing.T) {
	t.Parallel()
	for size, want := range map[int64]int64{1: 1, MiB: 1, MiB + 1: 2, 10 * MiB: 10} {
		if got := (ImageInfo{Size: size}).SizeMiB(); got != want {
			t.Errorf("SizeMiB of %d bytes = %d, want %d", size, got, want)
		}
	}
}

// TestInspectImageFileOfQemuImg checks the header reading against a qcow2
// file made by qemu-img itself.
func TestInspectImageFileOfQemuImg(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img is not installed (package qemu-utils)")
	}
	file := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command(bin, "create", "-q", "-f", "qcow2", file, "7M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	got, err := InspectImageFile(file)
	if want := (ImageInfo{Format: FormatQCOW2, Size: 7 * MiB}); err != nil || got != want {
		t.Fatalf("InspectImageFile = %+v, %v; want %+v", got, err, want)
	}
	if _, err := InspectImageFile(filepath.Dir(file)); err == nil {
		t.Error("a directory was taken as an image")
	}
	if _, err := InspectImageFile(filepath.Join(filepath.Dir(file), "missing")); !os.IsNotExist(err) {
		t.Errorf("a missing file gave %v, want not-exist", err)
	}
}

func FuzzInspectImage(f *testing.F) {
	f.Add(qcow2Header(3, MiB), int64(104))
	f.Add([]byte("KDMV"), int64(4))
	f.Add(make([]byte, 600), int64(600))
	f.Fuzz(func(t *testing.T, data []byte, fileSize int64) {
		info, err := InspectImage(bytes.NewReader(data), fileSize)
		if err != nil {
			return
		}
		switch info.Format {
		case FormatQCOW2:
			if info.Size <= 0 || info.Size > maxImageSize {
				t.Fatalf("qcow2 size %d out of range", info.Size)
			}
		case FormatRaw:
			if info.Size != fileSize || info.Size <= 0 {
				t.Fatalf("raw size %d, file size %d", info.Size, fileSize)
			}
		default:
			t.Fatalf("format %q", info.Format)
		}
	})
}
