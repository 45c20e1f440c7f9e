package hypervisor

import (
	"context"
	"fmt"

	"libvirt.org/go/libvirt"
)

// Remove stops the domain named by name or UUID on the host at uri, if it
// runs, and undefines it. A domain that is not there is not an error.
func (p *Pool) Remove(ctx context.Context, uri, vm string) error {
	err := p.read(ctx, uri, func(lv *libvirt.Connect) error {
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
	err := p.read(ctx, uri, func(lv *libvirt.Connect) error {
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
