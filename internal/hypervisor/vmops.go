package hypervisor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Location is where a VM is defined: one host and the domain there.
type Location struct {
	Host   string // the host's name, as in the hosts map
	URI    string
	Domain Domain
}

// Locate looks for the VM named by UUID (or name) on every host (name →
// URI) at once and returns where it is defined, sorted by host name. More
// than one location is a VM defined on several hosts: the caller decides
// (Drover reports it, never guesses). Hosts that cannot be asked are named
// in the error; the locations found on the others are still returned.
func (p *Pool) Locate(ctx context.Context, hosts map[string]string, vm string) ([]Location, error) {
	var (
		mu  sync.Mutex // guards out
		out []Location
	)
	err := eachHost(hosts, func(name, uri string) error {
		d, found, err := p.Domain(ctx, uri, vm)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if found {
			mu.Lock()
			out = append(out, Location{Host: name, URI: uri, Domain: d})
			mu.Unlock()
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	if err != nil {
		return out, fmt.Errorf("locate %s: %w", vm, err)
	}
	return out, nil
}

// ReadVM reads the VM named by UUID or name on the host at uri: its
// persistent definition as a VM (what it boots with next; live changes made
// through this package are in it too) and its run-time facts.
func (p *Pool) ReadVM(ctx context.Context, uri, vm string) (VM, Domain, error) {
	var (
		spec VM
		info Domain
	)
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		var err error
		if spec, err = readVM(dom); err != nil {
			return err
		}
		info, err = describe(dom)
		return err
	})
	if err != nil {
		return VM{}, Domain{}, fmt.Errorf("read vm %s on %s: %w", vm, uri, err)
	}
	return spec, info, nil
}

func readVM(dom *libvirt.Domain) (VM, error) {
	xml, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE)
	if err != nil {
		return VM{}, fmt.Errorf("read XML: %s", errorMessage(err))
	}
	return ParseVM(xml)
}

// DefineVM defines vm on the host at uri without starting it. A VM already
// defined there with the same UUID gets the new definition, which a running
// VM boots with next time.
func (p *Pool) DefineVM(ctx context.Context, uri string, vm VM) (Domain, error) {
	d, err := p.defineVM(ctx, uri, vm, false)
	if err != nil {
		return Domain{}, fmt.Errorf("define vm %s on %s: %w", vm.Name, uri, err)
	}
	return d, nil
}

// CreateVM defines vm on the host at uri and starts it. When it does not
// start, a definition this call made is removed again.
func (p *Pool) CreateVM(ctx context.Context, uri string, vm VM) (Domain, error) {
	d, err := p.defineVM(ctx, uri, vm, true)
	if err != nil {
		return Domain{}, fmt.Errorf("create vm %s on %s: %w", vm.Name, uri, err)
	}
	return d, nil
}

func (p *Pool) defineVM(ctx context.Context, uri string, vm VM, start bool) (Domain, error) {
	xml, err := vm.XML()
	if err != nil {
		return Domain{}, err
	}
	var out Domain
	err = p.do(ctx, uri, func(lv *libvirt.Connect) error {
		existed := false
		if vm.UUID != "" {
			if old, err := lv.LookupDomainByUUIDString(vm.UUID); err == nil {
				existed = true
				old.Free()
			}
		}
		dom, err := lv.DomainDefineXML(xml)
		if err != nil {
			return fmt.Errorf("define: %s", errorMessage(err))
		}
		defer dom.Free()
		if start {
			if err := p.ensureLogDirs(lv, uri, xml); err != nil {
				if !existed {
					_ = undefineDomain(dom)
				}
				return err
			}
			if err := startDomain(dom); err != nil {
				if !existed {
					_ = undefineDomain(dom)
				}
				return fmt.Errorf("start: %s", errorMessage(err))
			}
		}
		out, err = describe(dom)
		return err
	})
	return out, err
}

// Start starts the VM named by UUID or name on the host at uri; one that
// runs already is left alone.
func (p *Pool) Start(ctx context.Context, uri, vm string) (Domain, error) {
	var out Domain
	err := p.onDomainConn(ctx, uri, vm, func(lv *libvirt.Connect, dom *libvirt.Domain) error {
		active, err := dom.IsActive()
		if err != nil {
			return errors.New(errorMessage(err))
		}
		if !active {
			xml, err := dom.GetXMLDesc(0)
			if err != nil {
				return errors.New(errorMessage(err))
			}
			if err := p.ensureLogDirs(lv, uri, xml); err != nil {
				return err
			}
			if err := startDomain(dom); err != nil {
				return errors.New(errorMessage(err))
			}
		}
		out, err = describe(dom)
		return err
	})
	if err != nil {
		return Domain{}, fmt.Errorf("start vm %s on %s: %w", vm, uri, err)
	}
	return out, nil
}

// startDomain starts dom. libvirt names a NIC's tap device by looking for a
// free vnetN and then creating it; when something else on the machine takes
// that name in between (another libvirtd, as the lab's two hosts on one
// machine are, or any tool that makes vnetN devices), the start fails with
// "Device or resource busy" although nothing is wrong, and the next try
// takes the next free name. A failed start leaves nothing behind.
func startDomain(dom *libvirt.Domain) error {
	for try := 1; ; try++ {
		err := dom.Create()
		if err == nil || try == startTries || !tapNameTaken(err) {
			return err
		}
		time.Sleep(time.Duration(try) * 100 * time.Millisecond)
	}
}

// startTries bounds the starts of one domain whose tap name was taken.
const startTries = 4

func tapNameTaken(err error) bool {
	m := errorMessage(err)
	return strings.Contains(m, "Unable to create tap device") && strings.Contains(m, "Device or resource busy")
}

// shutdownPoll is how often Shutdown looks whether the guest is off, and
// shutdownRepress how often it presses the power button again meanwhile.
const (
	shutdownPoll    = 250 * time.Millisecond
	shutdownRepress = 5 * time.Second
)

// Shutdown asks the guest of the VM named by UUID or name on the host at
// uri to power off (ACPI power button, pressed again every few seconds, as
// a guest that is still booting misses a press) and waits up to grace for
// it; a guest still running then is powered off hard. forced tells which
// happened. A VM that is not running is not an error.
func (p *Pool) Shutdown(ctx context.Context, uri, vm string, grace time.Duration) (forced bool, err error) {
	err = p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		if !isActive(dom) {
			return nil
		}
		if err := dom.Shutdown(); err != nil && isActive(dom) {
			return fmt.Errorf("ask the guest to power off: %s", errorMessage(err))
		}
		deadline := time.Now().Add(grace)
		again := time.Now().Add(shutdownRepress)
		for time.Now().Before(deadline) {
			if !isActive(dom) {
				return nil
			}
			// A guest still booting misses the press: press again.
			if time.Now().After(again) {
				_ = dom.Shutdown()
				again = time.Now().Add(shutdownRepress)
			}
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(shutdownPoll):
			}
		}
		if err := dom.Destroy(); err != nil && isActive(dom) {
			return fmt.Errorf("power off after %s: %s", grace, errorMessage(err))
		}
		forced = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("shut down vm %s on %s: %w", vm, uri, err)
	}
	return forced, nil
}

// isActive tells whether dom runs; a domain that vanished does not.
func isActive(dom *libvirt.Domain) bool {
	active, err := dom.IsActive()
	return err == nil && active
}

// Undefine removes the definition (and UEFI variables) of the stopped VM
// named by UUID or name on the host at uri. A running VM is refused: stop it
// first. A VM that is not there is not an error.
func (p *Pool) Undefine(ctx context.Context, uri, vm string) error {
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		if isActive(dom) {
			return errors.New("it is running: shut it down first")
		}
		return undefineDomain(dom)
	})
	if errors.Is(err, ErrNotDefined) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("undefine vm %s on %s: %w", vm, uri, err)
	}
	return nil
}

// undefineDomain undefines dom together with its NVRAM file when it has
// one (libvirt refuses otherwise, and the file would outlive the VM).
func undefineDomain(dom *libvirt.Domain) error {
	var flags libvirt.DomainUndefineFlagsValues
	if xml, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE); err == nil {
		var def libvirtxml.Domain
		if def.Unmarshal(xml) == nil && def.OS != nil && (def.OS.NVRam != nil || def.OS.Firmware == "efi") {
			flags |= libvirt.DOMAIN_UNDEFINE_NVRAM
		}
	}
	if err := dom.UndefineFlags(flags); err != nil && !isNoDomain(err) {
		return fmt.Errorf("undefine: %s", errorMessage(err))
	}
	return nil
}

// SetMemory sets the memory of the VM named by UUID or name on the host at
// uri, live when it runs (through its balloon) and in its definition. It
// cannot go past the VM's maximum: that needs a new definition and a
// restart.
func (p *Pool) SetMemory(ctx context.Context, uri, vm string, memoryMiB int64) error {
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		spec, err := readVM(dom)
		if err != nil {
			return err
		}
		if memoryMiB <= 0 || memoryMiB > spec.MaxMemoryMiB {
			return fmt.Errorf("%d MiB is outside 1..%d MiB, the most it can have without a restart", memoryMiB, spec.MaxMemoryMiB)
		}
		// Live first, then the definition, in two calls: some drivers
		// refuse both flags in one, and a refused live change must not
		// leave the definition changed alone.
		if isActive(dom) {
			if err := dom.SetMemoryFlags(uint64(memoryMiB)<<10, libvirt.DOMAIN_MEM_LIVE); err != nil {
				return fmt.Errorf("live: %s", errorMessage(err))
			}
		}
		if err := dom.SetMemoryFlags(uint64(memoryMiB)<<10, libvirt.DOMAIN_MEM_CONFIG); err != nil {
			return fmt.Errorf("definition: %s", errorMessage(err))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set memory of vm %s on %s to %d MiB: %w", vm, uri, memoryMiB, err)
	}
	return nil
}

// SetVCPUs sets how many vCPUs of the VM named by UUID or name on the host
// at uri are online, live when it runs (hot-plug) and in its definition. It
// cannot go past the VM's maximum: that needs a new definition and a
// restart. Unplugging a vCPU live needs the guest's cooperation.
func (p *Pool) SetVCPUs(ctx context.Context, uri, vm string, vcpus int) error {
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		spec, err := readVM(dom)
		if err != nil {
			return err
		}
		if vcpus <= 0 || vcpus > spec.MaxVCPUs {
			return fmt.Errorf("%d is outside 1..%d, the most it can have without a restart", vcpus, spec.MaxVCPUs)
		}
		// Live first, then the definition, as in SetMemory.
		if isActive(dom) {
			if err := dom.SetVcpusFlags(uint(vcpus), libvirt.DOMAIN_VCPU_LIVE); err != nil {
				return fmt.Errorf("live: %s", errorMessage(err))
			}
		}
		if err := dom.SetVcpusFlags(uint(vcpus), libvirt.DOMAIN_VCPU_CONFIG); err != nil {
			return fmt.Errorf("definition: %s", errorMessage(err))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set vcpus of vm %s on %s to %d: %w", vm, uri, vcpus, err)
	}
	return nil
}

// SetMetadata rewrites Drover's metadata of the VM on the host at uri from
// vm (found by vm.UUID, else vm.Name): placement, allow_restart, declared
// maxima and volume names. It applies to the running domain and to its
// definition.
func (p *Pool) SetMetadata(ctx context.Context, uri string, vm VM) error {
	id := vmID(vm)
	err := p.onDomain(ctx, uri, id, func(dom *libvirt.Domain) error {
		return writeMetadata(dom, vm)
	})
	if err != nil {
		return fmt.Errorf("set metadata of vm %s on %s: %w", id, uri, err)
	}
	return nil
}

func writeMetadata(dom *libvirt.Domain, vm VM) error {
	xml, err := vm.metadata().marshal()
	if err != nil {
		return err
	}
	flags := libvirt.DOMAIN_AFFECT_CONFIG
	if isActive(dom) {
		flags |= libvirt.DOMAIN_AFFECT_LIVE
	}
	if err := dom.SetMetadata(libvirt.DOMAIN_METADATA_ELEMENT, xml, MetadataPrefix, MetadataNamespace, flags); err != nil {
		return fmt.Errorf("write metadata: %s", errorMessage(err))
	}
	return nil
}

func vmID(vm VM) string {
	if vm.UUID != "" {
		return vm.UUID
	}
	return vm.Name
}

// AttachDisk adds disk d, reached as s says, to the VM named by UUID or name
// on the host at uri: live when it runs, and to its definition and metadata.
// An empty d.Target gets the first free one; the disk is returned with it.
func (p *Pool) AttachDisk(ctx context.Context, uri, vm string, s Storage, d Disk) (Disk, error) {
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		spec, err := readVM(dom)
		if err != nil {
			return err
		}
		spec.Disks = append(spec.Disks, d)
		spec.Storage = s
		if err := spec.Validate(); err != nil {
			return err
		}
		d.Target = spec.DiskTargets()[len(spec.Disks)-1]
		spec.Disks[len(spec.Disks)-1] = d
		disk := s.disk(d, d.Target)
		xml, err := disk.Marshal()
		if err != nil {
			return err
		}
		if err := dom.AttachDeviceFlags(xml, deviceFlags(dom)); err != nil {
			return errors.New(errorMessage(err))
		}
		return writeMetadata(dom, spec)
	})
	if err != nil {
		return Disk{}, fmt.Errorf("attach disk %s to vm %s on %s: %w", d.IQN, vm, uri, err)
	}
	return d, nil
}

// DetachDisk removes the disk at guest device target from the VM named by
// UUID or name on the host at uri: live when it runs (the guest is asked to
// let go of it; libvirt returns once the request is sent), and from its
// definition and metadata.
func (p *Pool) DetachDisk(ctx context.Context, uri, vm, target string) error {
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		def, err := inactiveDef(dom)
		if err != nil {
			return err
		}
		var found *libvirtxml.DomainDisk
		for i, d := range def.Devices.Disks {
			if d.Target != nil && d.Target.Dev == target {
				found = &def.Devices.Disks[i]
			}
		}
		if found == nil {
			return errors.New("no such disk")
		}
		xml, err := found.Marshal()
		if err != nil {
			return err
		}
		live := isActive(dom)
		if err := dom.DetachDeviceFlags(xml, deviceFlags(dom)); err != nil {
			return errors.New(errorMessage(err))
		}
		spec, err := readVM(dom)
		if err != nil {
			return err
		}
		if err := writeMetadata(dom, spec); err != nil {
			return err
		}
		if live {
			return waitUnplugged(ctx, dom, target)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("detach disk %s from vm %s on %s: %w", target, vm, uri, err)
	}
	return nil
}

// unplugTimeout bounds how long DetachDisk waits for a running guest to let
// go of a disk.
const unplugTimeout = 60 * time.Second

// waitUnplugged waits until the running domain no longer has the disk
// target: libvirt asks the guest to release a disk and returns; until the
// guest has, QEMU keeps the disk (and its iSCSI session) open.
func waitUnplugged(ctx context.Context, dom *libvirt.Domain, target string) error {
	deadline := time.Now().Add(unplugTimeout)
	for {
		x, err := dom.GetXMLDesc(0)
		if err != nil {
			return fmt.Errorf("read the running domain: %s", errorMessage(err))
		}
		var d libvirtxml.Domain
		if err := d.Unmarshal(x); err != nil {
			return err
		}
		if !slices.ContainsFunc(d.Devices.Disks, func(disk libvirtxml.DomainDisk) bool {
			return disk.Target != nil && disk.Target.Dev == target
		}) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the guest has not released the disk after %s: it is out of the VM's definition, "+
				"but stays attached (and its volume in use) until the guest lets go of it or the VM restarts", unplugTimeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the guest to release the disk: %w", context.Cause(ctx))
		case <-time.After(shutdownPoll):
		}
	}
}

// AttachNIC adds network interface n to the VM named by UUID or name on the
// host at uri: live when it runs, and to its definition. An empty n.MAC gets
// a random locally administered one; the NIC is returned with it.
func (p *Pool) AttachNIC(ctx context.Context, uri, vm string, n NIC) (NIC, error) {
	if n.MAC == "" {
		mac, err := randomMAC()
		if err != nil {
			return NIC{}, err
		}
		n.MAC = mac
	}
	if err := n.validate(); err != nil {
		return NIC{}, fmt.Errorf("attach network interface to vm %s on %s: %w", vm, uri, err)
	}
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		ifc := n.iface()
		xml, err := ifc.Marshal()
		if err != nil {
			return err
		}
		if err := dom.AttachDeviceFlags(xml, deviceFlags(dom)); err != nil {
			return errors.New(errorMessage(err))
		}
		return nil
	})
	if err != nil {
		return NIC{}, fmt.Errorf("attach network interface %s to vm %s on %s: %w", n.MAC, vm, uri, err)
	}
	return n, nil
}

// DetachNIC removes the network interface with MAC address mac from the VM
// named by UUID or name on the host at uri: live when it runs, and from its
// definition.
func (p *Pool) DetachNIC(ctx context.Context, uri, vm, mac string) error {
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		def, err := inactiveDef(dom)
		if err != nil {
			return err
		}
		for _, ifc := range def.Devices.Interfaces {
			if ifc.MAC == nil || !strings.EqualFold(ifc.MAC.Address, mac) {
				continue
			}
			xml, err := ifc.Marshal()
			if err != nil {
				return err
			}
			if err := dom.DetachDeviceFlags(xml, deviceFlags(dom)); err != nil {
				return errors.New(errorMessage(err))
			}
			return nil
		}
		return errors.New("no such network interface")
	})
	if err != nil {
		return fmt.Errorf("detach network interface %s from vm %s on %s: %w", mac, vm, uri, err)
	}
	return nil
}

func inactiveDef(dom *libvirt.Domain) (*libvirtxml.Domain, error) {
	xml, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE)
	if err != nil {
		return nil, fmt.Errorf("read XML: %s", errorMessage(err))
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(xml); err != nil {
		return nil, fmt.Errorf("parse XML: %w", err)
	}
	if def.Devices == nil {
		def.Devices = &libvirtxml.DomainDeviceList{}
	}
	return &def, nil
}

// deviceFlags changes the definition, and the running domain when it runs.
func deviceFlags(dom *libvirt.Domain) libvirt.DomainDeviceModifyFlags {
	flags := libvirt.DOMAIN_DEVICE_MODIFY_CONFIG
	if isActive(dom) {
		flags |= libvirt.DOMAIN_DEVICE_MODIFY_LIVE
	}
	return flags
}

// randomMAC returns a MAC address in QEMU's 52:54:00 range.
func randomMAC() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a MAC address: %w", err)
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2]), nil
}

// ErrNotDefined is the error (for errors.Is) of an operation on a VM that
// is not defined on the host it names.
var ErrNotDefined = errors.New("not defined on this host")

// onDomain runs fn with the domain named by UUID or name on the host at
// uri; a missing domain gives ErrNotDefined.
func (p *Pool) onDomain(ctx context.Context, uri, vm string, fn func(*libvirt.Domain) error) error {
	return p.onDomainConn(ctx, uri, vm, func(_ *libvirt.Connect, dom *libvirt.Domain) error { return fn(dom) })
}

// onDomainConn is onDomain for an fn that also needs the host's connection.
func (p *Pool) onDomainConn(ctx context.Context, uri, vm string, fn func(*libvirt.Connect, *libvirt.Domain) error) error {
	return p.do(ctx, uri, func(lv *libvirt.Connect) error {
		dom, err := lookup(lv, vm)
		if isNoDomain(err) {
			return ErrNotDefined
		}
		if connectionLost(err) {
			return err // do drops the connection
		}
		if err != nil {
			return errors.New(errorMessage(err))
		}
		defer dom.Free()
		return fn(lv, dom)
	})
}

// eachHost runs fn for every host (name → URI) at once and joins their
// errors in host-name order.
func eachHost(hosts map[string]string, fn func(name, uri string) error) error {
	names := make([]string, 0, len(hosts))
	for name := range hosts {
		names = append(names, name)
	}
	sort.Strings(names)
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(name, hosts[name])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func freeAll(doms []libvirt.Domain) {
	for i := range doms {
		_ = doms[i].Free()
	}
}

func sortResized(rs []Resized) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Host != rs[j].Host {
			return rs[i].Host < rs[j].Host
		}
		if rs[i].VM != rs[j].VM {
			return rs[i].VM < rs[j].VM
		}
		return rs[i].Target < rs[j].Target
	})
}
