package hypervisor

import (
	"context"
	"errors"
	"fmt"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// DomainSpec describes a diskless domain that boots a kernel directly: the
// smallest domain a test can run. Drover's VMs are described by VM.
type DomainSpec struct {
	Name      string
	UUID      string // optional: libvirt makes one up when empty
	Type      string // "kvm" or "qemu"
	MemoryMiB int64
	VCPUs     int
	Kernel    string // path on the host
	Initrd    string // path on the host, optional
	Cmdline   string // optional
	// ConsoleLog is a file on the host that receives the serial console;
	// optional.
	ConsoleLog string
}

// Validate reports the first thing that makes s unusable.
func (s DomainSpec) Validate() error {
	switch {
	case s.Name == "":
		return errors.New("domain name is empty")
	case s.Type != "kvm" && s.Type != "qemu":
		return fmt.Errorf("domain %s: type %q is neither kvm nor qemu", s.Name, s.Type)
	case s.MemoryMiB <= 0:
		return fmt.Errorf("domain %s: memory must be positive, got %d MiB", s.Name, s.MemoryMiB)
	case s.VCPUs <= 0:
		return fmt.Errorf("domain %s: vcpus must be positive, got %d", s.Name, s.VCPUs)
	case s.Kernel == "":
		return fmt.Errorf("domain %s: no kernel to boot", s.Name)
	}
	return nil
}

// XML returns the libvirt domain XML of s.
func (s DomainSpec) XML() (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	dom := libvirtxml.Domain{
		Type:   s.Type,
		Name:   s.Name,
		UUID:   s.UUID,
		Memory: &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: uint(s.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Type: "hvm"},
			Kernel:  s.Kernel,
			Initrd:  s.Initrd,
			Cmdline: s.Cmdline,
		},
		// Without ACPI and APIC the guest sees no PCI devices.
		Features: &libvirtxml.DomainFeatureList{
			ACPI: &libvirtxml.DomainFeature{},
			APIC: &libvirtxml.DomainFeatureAPIC{},
		},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices:    &libvirtxml.DomainDeviceList{},
	}
	if s.ConsoleLog != "" {
		dom.Devices.Serials = []libvirtxml.DomainSerial{{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Log:    &libvirtxml.DomainChardevLog{File: s.ConsoleLog, Append: "on"},
		}}
	}
	return dom.Marshal()
}

// Define defines the domain of s on the host at uri, persistently, without
// starting it.
func (p *Pool) Define(ctx context.Context, uri string, s DomainSpec) (Domain, error) {
	d, err := p.define(ctx, uri, s, false)
	if err != nil {
		return Domain{}, fmt.Errorf("define domain %s on %s: %w", s.Name, uri, err)
	}
	return d, nil
}

// Create defines the domain of s on the host at uri, persistently, and
// starts it. When it does not start, it is undefined again.
func (p *Pool) Create(ctx context.Context, uri string, s DomainSpec) (Domain, error) {
	d, err := p.define(ctx, uri, s, true)
	if err != nil {
		return Domain{}, fmt.Errorf("create domain %s on %s: %w", s.Name, uri, err)
	}
	return d, nil
}

func (p *Pool) define(ctx context.Context, uri string, s DomainSpec, start bool) (Domain, error) {
	xml, err := s.XML()
	if err != nil {
		return Domain{}, err
	}
	var out Domain
	err = p.do(ctx, uri, func(lv *libvirt.Connect) error {
		dom, err := lv.DomainDefineXML(xml)
		if err != nil {
			return fmt.Errorf("define: %s", errorMessage(err))
		}
		defer dom.Free()
		if start {
			if err := dom.Create(); err != nil {
				_ = dom.Undefine()
				return fmt.Errorf("start: %s", errorMessage(err))
			}
		}
		out, err = describe(dom)
		return err
	})
	return out, err
}

// Remove stops the domain named by name or UUID on the host at uri, if it
// runs, and undefines it. A domain that is not there is not an error.
func (p *Pool) Remove(ctx context.Context, uri, vm string) error {
	err := p.do(ctx, uri, func(lv *libvirt.Connect) error {
		dom, err := lookup(lv, vm)
		if isNoDomain(err) {
			return nil
		}
		if err != nil {
			return err
		}
		defer dom.Free()
		if active, err := dom.IsActive(); err == nil && active {
			if err := dom.Destroy(); err != nil && !isNoDomain(err) {
				return fmt.Errorf("stop: %s", errorMessage(err))
			}
		}
		return undefineDomain(dom)
	})
	if err != nil {
		return fmt.Errorf("remove domain %s from %s: %w", vm, uri, err)
	}
	return nil
}

// Domain returns the domain named by name or UUID on the host at uri, and
// whether it is there.
func (p *Pool) Domain(ctx context.Context, uri, vm string) (Domain, bool, error) {
	var (
		out   Domain
		found bool
	)
	err := p.do(ctx, uri, func(lv *libvirt.Connect) error {
		dom, err := lookup(lv, vm)
		if isNoDomain(err) {
			return nil
		}
		if err != nil {
			return err
		}
		defer dom.Free()
		out, err = describe(dom)
		if isNoDomain(err) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return Domain{}, false, fmt.Errorf("look up domain %s on %s: %w", vm, uri, err)
	}
	return out, found, nil
}

// lookup finds a domain by UUID when vm is one, else by name.
func lookup(lv *libvirt.Connect, vm string) (*libvirt.Domain, error) {
	if looksLikeUUID(vm) {
		dom, err := lv.LookupDomainByUUIDString(vm)
		if err == nil || !isNoDomain(err) {
			return dom, err
		}
	}
	return lv.LookupDomainByName(vm)
}

// looksLikeUUID tells whether s has the 8-4-4-4-12 hex shape of a UUID.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case '0' <= r && r <= '9', 'a' <= r && r <= 'f', 'A' <= r && r <= 'F':
		default:
			return false
		}
	}
	return true
}
