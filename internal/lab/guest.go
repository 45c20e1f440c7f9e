package lab

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed guest/init
var guestInit []byte

// guestPowerOff runs when the guest's ACPI power button is pressed (a
// graceful shutdown from libvirt): it flushes the disks and powers off.
var guestPowerOff = []byte("#!/bin/sh\necho 'drover-guest: power button, shutting down'\nsync\necho o > /proc/sysrq-trigger\n")

// guestRecipe changes whenever the guest's contents change, so that a cached
// guest built by an older recipe is rebuilt.
const guestRecipe = "7"

// guestModules are the kernel modules the guest needs beyond the kernel's
// built-ins: virtio disks and NICs, and a CD-ROM for cloud-init seeds. Their
// dependencies are added and ordered from each module's .modinfo.
var guestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "ata_piix", "sr_mod", "isofs", "virtio_balloon", "button", "evdev"}

// Guest is a built lab guest: a kernel and an initramfs for direct kernel boot.
type Guest struct {
	Kernel string
	Initrd string
}

// BuildGuest builds the lab guest into dir once and reuses it afterwards. The
// kernel is Debian's cloud kernel (downloaded with apt-get), the userland is
// busybox-static.
func BuildGuest(ctx context.Context, dir string, logf func(string, ...any)) (Guest, error) {
	g := Guest{Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")}
	stamp := filepath.Join(dir, "recipe")
	if b, err := os.ReadFile(stamp); err == nil && string(b) == guestRecipe && exists(g.Kernel) && exists(g.Initrd) {
		return g, nil
	}
	logf("building the lab guest (Debian cloud kernel + busybox) in %s", dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return g, err
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return g, err
	}
	defer os.RemoveAll(work)

	pkg, err := kernelPackage(ctx)
	if err != nil {
		return g, err
	}
	// apt's download sandbox user cannot write to a root-only folder.
	if err := os.Chmod(work, 0o777); err != nil {
		return g, err
	}
	if out, err := command(ctx, work, "apt-get", "download", "-q", pkg); err != nil {
		return g, fmt.Errorf("download guest kernel %s: %w: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(work, "*.deb"))
	if len(debs) != 1 {
		return g, fmt.Errorf("download guest kernel %s: expected one .deb, found %d", pkg, len(debs))
	}
	root := filepath.Join(work, "root")
	if out, err := command(ctx, work, "dpkg-deb", "-x", debs[0], root); err != nil {
		return g, fmt.Errorf("unpack %s: %w: %s", debs[0], err, out)
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return g, fmt.Errorf("unpack %s: expected one boot/vmlinuz-*, found %d", pkg, len(kernels))
	}
	kernel, err := os.ReadFile(kernels[0])
	if err != nil {
		return g, err
	}
	modules, err := resolveModules(filepath.Join(root, "lib", "modules"), guestModules)
	if err != nil {
		return g, err
	}
	initrd, err := buildInitramfs(modules)
	if err != nil {
		return g, err
	}
	if err := writeFileAtomic(g.Kernel, kernel, 0o644); err != nil {
		return g, err
	}
	if err := writeFileAtomic(g.Initrd, initrd, 0o644); err != nil {
		return g, err
	}
	if err := writeFileAtomic(stamp, []byte(guestRecipe), 0o644); err != nil {
		return g, err
	}
	logf("lab guest ready: %s, %d modules", filepath.Base(kernels[0]), len(modules))
	return g, nil
}

// kernelPackage names the versioned package behind linux-image-cloud-amd64.
func kernelPackage(ctx context.Context) (string, error) {
	out, err := command(ctx, "", "apt-cache", "depends", "linux-image-cloud-amd64")
	if err != nil || !strings.Contains(out, "Depends:") {
		// A fresh machine may have no package lists yet.
		if out, err := command(ctx, "", "apt-get", "update", "-qq"); err != nil {
			return "", fmt.Errorf("apt-get update: %w: %s", err, out)
		}
		out, err = command(ctx, "", "apt-cache", "depends", "linux-image-cloud-amd64")
		if err != nil {
			return "", fmt.Errorf("find the guest kernel package: %w: %s", err, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(name, "linux-image-") {
			return name, nil
		}
	}
	return "", errors.New("find the guest kernel package: linux-image-cloud-amd64 names no linux-image dependency")
}

// kmod is a kernel module found in the unpacked kernel package.
type kmod struct {
	Name string
	Path string
}

// resolveModules finds the wanted modules under dir and returns them with
// their dependencies, each after the modules it depends on.
func resolveModules(dir string, wanted []string) ([]kmod, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := strings.CutSuffix(d.Name(), ".ko"); ok {
			paths[strings.ReplaceAll(name, "-", "_")] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []kmod
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string) error
	visit = func(name string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("kernel module %s: dependency cycle", name)
		case 2:
			return nil
		}
		p, ok := paths[name]
		if !ok {
			return fmt.Errorf("kernel module %s: not in the kernel package", name)
		}
		state[name] = 1
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, kmod{Name: name, Path: p})
		return nil
	}
	for _, w := range wanted {
		if err := visit(w); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDepends reads the "depends=" entry of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("kernel module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("kernel module %s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			sort.Strings(deps)
			return deps, nil
		}
	}
	return nil, nil
}

// buildInitramfs packs busybox, the init script and the modules as a gzipped
// newc cpio archive.
func buildInitramfs(modules []kmod) ([]byte, error) {
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("read busybox (install busybox-static): %w", err)
	}
	if f, err := elf.Open("/bin/busybox"); err == nil {
		dynamic := f.Section(".interp") != nil
		f.Close()
		if dynamic {
			return nil, errors.New("/bin/busybox is dynamically linked: install busybox-static")
		}
	}
	entries := []cpioEntry{
		{Name: "bin", Mode: modeDir | 0o755},
		{Name: "dev", Mode: modeDir | 0o755},
		{Name: "dev/console", Mode: modeCharDev | 0o600, Major: 5, Minor: 1},
		{Name: "etc", Mode: modeDir | 0o755},
		{Name: "lib", Mode: modeDir | 0o755},
		{Name: "lib/modules", Mode: modeDir | 0o755},
		{Name: "proc", Mode: modeDir | 0o755},
		{Name: "sys", Mode: modeDir | 0o755},
		{Name: "tmp", Mode: modeDir | 0o1777},
		{Name: "bin/busybox", Mode: modeFile | 0o755, Data: busybox},
		{Name: "bin/sh", Mode: modeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "init", Mode: modeFile | 0o755, Data: guestInit},
		{Name: "etc/acpi", Mode: modeDir | 0o755},
		{Name: "etc/acpi/power", Mode: modeFile | 0o755, Data: guestPowerOff},
	}
	var order strings.Builder
	for _, m := range modules {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return nil, err
		}
		entries = append(entries, cpioEntry{Name: "lib/modules/" + m.Name + ".ko", Mode: modeFile | 0o644, Data: data})
		order.WriteString(m.Name + "\n")
	}
	entries = append(entries, cpioEntry{Name: "etc/modules.order", Mode: modeFile | 0o644, Data: []byte(order.String())})

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := writeCPIO(zw, entries); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func command(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
