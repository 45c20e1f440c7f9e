package hypervisor

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// libvirt opens a domain's chardev log files (the serial console log) before
// it makes its own log folder, so on a host that lacks the folder of such a
// file — a cleaned /var/log, a libvirt packaged without /var/log/libvirt/qemu,
// a fresh lab host — the VM does not start ("Failed to create file …"). A VM
// must never fail to start for want of a folder, so the folders are made on
// the host before a domain starts there or migrates there.
//
// libvirt has no call that makes a folder on a host, but a storage pool of
// type "dir" does when it is built, and destroying a transient pool leaves
// its folder behind. A folder that exists is left as it is: building a pool
// on it would reset its mode.

// logDirs are the folders of the files domainXML logs its chardevs to.
func logDirs(domainXML string) ([]string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return nil, fmt.Errorf("parse domain XML: %w", err)
	}
	var dirs []string
	add := func(l *libvirtxml.DomainChardevLog) {
		if l != nil && l.File != "" && filepath.IsAbs(l.File) {
			if d := filepath.Dir(l.File); !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	if dom.Devices != nil {
		for _, s := range dom.Devices.Serials {
			add(s.Log)
		}
		for _, c := range dom.Devices.Consoles {
			add(c.Log)
		}
	}
	return dirs, nil
}

// ensureLogDirs makes the log folders of domainXML on the host behind lv
// (uri) unless this pool has seen them there already.
func (p *Pool) ensureLogDirs(lv *libvirt.Connect, uri, domainXML string) error {
	dirs, err := logDirs(domainXML)
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		key := uri + "\x00" + dir
		p.dirsMu.Lock()
		done := p.dirs[key]
		p.dirsMu.Unlock()
		if done {
			continue
		}
		if err := ensureDir(lv, dir); err != nil {
			return fmt.Errorf("make the folder %s for the serial console log: %w; create it on the host (mkdir -p %s)", dir, err, dir)
		}
		p.dirsMu.Lock()
		p.dirs[key] = true
		p.dirsMu.Unlock()
	}
	return nil
}

// ensureDir makes dir on the host unless it exists. Starting a transient dir
// pool without building it succeeds only when the folder is there; when it
// is not, the pool is started again with a build, which makes it (0755,
// owned by libvirtd's user).
func ensureDir(lv *libvirt.Connect, dir string) error {
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	def := libvirtxml.StoragePool{
		Type: "dir",
		Name: "drover-mkdir-" + hex.EncodeToString(id[:]),
		Target: &libvirtxml.StoragePoolTarget{
			Path:        dir,
			Permissions: &libvirtxml.StoragePoolTargetPermissions{Mode: "0755"},
		},
	}
	xml, err := def.Marshal()
	if err != nil {
		return err
	}
	pool, err := lv.StoragePoolCreateXML(xml, 0)
	if err != nil {
		// Missing (or another pool claims it: then building fails too and
		// says so).
		if pool, err = lv.StoragePoolCreateXML(xml, libvirt.STORAGE_POOL_CREATE_WITH_BUILD); err != nil {
			return fmt.Errorf("libvirt could not make it: %s", errorMessage(err))
		}
	}
	defer pool.Free()
	// The folder is made; a pool left behind would only be clutter.
	_ = pool.Destroy()
	return nil
}
