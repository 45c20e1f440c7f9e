package cluster

import (
	"context"
	"fmt"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// Locate finds the VM (by UUID or name) on every configured host (see
// LocateOn).
func (c *Cluster) Locate(ctx context.Context, vm string) (loc hypervisor.Location, found bool, warning string, err error) {
	return LocateOn(ctx, c.hosts.Locator, c.cfg.HostURIs(), vm)
}

// LocateOn finds the VM (by UUID or name) on every host (name → URI). A VM
// defined on two hosts is a *DefinedTwiceError, and nothing is touched. A
// VM missing from every host that answered is not found, unless a host did
// not answer: then nobody can tell, and that is an error. warning names
// hosts that did not answer when the VM was found elsewhere.
func LocateOn(ctx context.Context, l Locator, hosts map[string]string, vm string) (loc hypervisor.Location, found bool, warning string, err error) {
	locs, lerr := l.Locate(ctx, hosts, vm)
	switch {
	case len(locs) > 1:
		names := make([]string, len(locs))
		for i, l := range locs {
			names[i] = l.Host
		}
		return loc, false, "", &DefinedTwiceError{VM: vm, Domain: locs[0].Domain.Name, Hosts: names}
	case len(locs) == 1 && lerr != nil:
		return locs[0], true, lerr.Error(), nil
	case len(locs) == 1:
		return locs[0], true, "", nil
	case lerr != nil:
		return loc, false, "", fmt.Errorf("VM %s is on no host that answered, and some did not, so it may be there: %w", vm, lerr)
	}
	return loc, false, "", nil
}

// ReadVM reads the VM at loc, which must be Drover's.
func (c *Cluster) ReadVM(ctx context.Context, loc hypervisor.Location) (hypervisor.VM, hypervisor.Domain, error) {
	vm, dom, err := c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID)
	if err != nil {
		return vm, dom, err
	}
	if !vm.Managed {
		return vm, dom, fmt.Errorf("domain %s on %s is not managed by Drover (no Drover metadata): Drover leaves it alone", vm.Name, loc.Host)
	}
	return vm, dom, nil
}
