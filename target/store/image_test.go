package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestARawImageReplacesTheContentAndKeepsHoles(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "img", 4)
	writeAt(t, v.Path, 3*MiB, []byte("old content"))
	img := make([]byte, 2*MiB)
	copy(img, "boot sector")
	copy(img[MiB+7:], "middle")
	if err := s.WriteImage(context.Background(), "img", bytes.NewReader(img), FormatAuto); err != nil {
		t.Fatal(err)
	}
	if got := string(readAt(t, v.Path, 0, 11)); got != "boot sector" {
		t.Errorf("content at 0 = %q, want %q", got, "boot sector")
	}
	if got := string(readAt(t, v.Path, MiB+7, 6)); got != "middle" {
		t.Errorf("content at 1 MiB+7 = %q, want %q", got, "middle")
	}
	if got := readAt(t, v.Path, 3*MiB, 11); !bytes.Equal(got, make([]byte, 11)) {
		t.Errorf("content past the image = %q, want zeros", got)
	}
	fi, _ := os.Stat(v.Path)
	if fi.Size() != 4*MiB {
		t.Errorf("file size = %d, want %d", fi.Size(), 4*MiB)
	}
	if got := allocated(t, v.Path); got > 512<<10 {
		t.Errorf("allocated = %d bytes, want zero blocks left as holes (at most 512 KiB)", got)
	}
}

func TestARawImageLargerThanTheVolumeIsRefused(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "small", 1)
	writeAt(t, v.Path, 0, []byte("keep"))
	before := describe(t, s)
	img := bytes.Repeat([]byte{1}, MiB+1)
	err := s.WriteImage(context.Background(), "small", bytes.NewReader(img), FormatAuto)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("WriteImage error = %v, want ErrTooLarge", err)
	}
	if after := describe(t, s); after != before {
		t.Errorf("store changed:\n got %s\nwant %s", after, before)
	}
}

func TestForeignImageFormatsAreRefusedWithAHint(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "v", 1)
	err := s.WriteImage(context.Background(), "v", strings.NewReader("KDMV and more"), FormatAuto)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "qemu-img convert") {
		t.Errorf("WriteImage(vmdk) error = %v, want ErrInvalid suggesting qemu-img convert", err)
	}
}

func TestQCOW2WithoutQemuImgSaysToInstallQemuUtils(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{QemuImg: "qemu-img-that-does-not-exist"})
	mustCreate(t, s, "v", 1)
	err := s.WriteImage(context.Background(), "v", strings.NewReader("QFI\xfb\x00\x00\x00\x03"), FormatAuto)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "qemu-utils") {
		t.Errorf("WriteImage(qcow2) error = %v, want ErrUnsupported naming qemu-utils", err)
	}
}

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img not installed (package qemu-utils)")
	}
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
}

func TestAQCOW2ImageIsConvertedToRaw(t *testing.T) {
	t.Parallel()
	needQemuImg(t)
	work := t.TempDir()
	raw := filepath.Join(work, "src.raw")
	touch(t, raw, 3*MiB)
	writeAt(t, raw, 2*MiB+5, []byte("inside qcow2"))
	q := filepath.Join(work, "src.qcow2")
	qemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, q)

	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "q", 4)
	f, err := os.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.WriteImage(context.Background(), "q", f, FormatAuto); err != nil {
		t.Fatal(err)
	}
	if got := string(readAt(t, v.Path, 2*MiB+5, 12)); got != "inside qcow2" {
		t.Errorf("converted content = %q, want %q", got, "inside qcow2")
	}
	describe(t, s) // size and orphan checks
}

func TestQCOW2ImagesThatWouldReadHostFilesOrOverflowAreRefused(t *testing.T) {
	t.Parallel()
	needQemuImg(t)
	work := t.TempDir()
	secret := filepath.Join(work, "host-secret.raw")
	touch(t, secret, MiB)
	writeAt(t, secret, 0, []byte("host secret"))
	backed := filepath.Join(work, "backed.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", secret, backed)
	big := filepath.Join(work, "big.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", big, "8M")

	for _, tc := range []struct {
		name, file, want string
	}{
		{"an image with a backing file", backed, "backing file"},
		{"an image larger than the volume", big, "larger than the volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, t.TempDir(), Options{})
			mustCreate(t, s, "q", 4)
			before := describe(t, s)
			f, err := os.Open(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = s.WriteImage(context.Background(), "q", f, FormatAuto)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("WriteImage error = %v, want one saying %q", err, tc.want)
			}
			if after := describe(t, s); after != before {
				t.Errorf("store changed:\n got %s\nwant %s", after, before)
			}
		})
	}
}
