package cluster

import (
	"context"
	"fmt"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// Locate finds the VM (by UUID or name) on every configured host (see
// LocateOn). Copies on fenced hosts are stale when the VM is defined on a
// host that is not fenced too: they are not where the VM is.
func (c *Cluster) Locate(ctx context.Context, vm string) (loc hypervisor.Location, found bool, warning string, err error) {
	return LocateOn(ctx, fenceAware{c: c, l: c.hosts.Locator}, c.cfg.HostURIs(), vm)
}

// fenceAware leaves out the stale copies on fenced hosts.
type fenceAware struct {
	c *Cluster
	l Locator
}

func (f fenceAware) Locate(ctx context.Context, hosts map[string]string, vm string) ([]hypervisor.Location, error) {
	locs, err := f.l.Locate(ctx, hosts, vm)
	if len(locs) < 2 {
		return locs, err
	}
	fenced, ferr := f.c.fenced(ctx)
	if ferr != nil {
		return locs, err
	}
	var live []hypervisor.Location
	for _, l := range locs {
		if !fenced[l.Host] {
			live = append(live, l)
		}
	}
	if len(live) == 0 {
		return locs, err
	}
	return live, err
}

// NotAnsweredError is a VM found on no host that answered while some did
// not: it may be on one of those.
type NotAnsweredError struct {
	VM  string
	Err error // names the hosts that did not answer
}

func (e *NotAnsweredError) Error() string {
	return fmt.Sprintf("VM %s is on no host that answered, and some did not, so it may be there: %v", e.VM, e.Err)
}

func (e *NotAnsweredError) Unwrap() error { return e.Err }

// HostAnswers asks the named host for its facts: nil when it answers.
func (c *Cluster) HostAnswers(ctx context.Context, name string) error {
	h, ok := c.cfg.Host(name)
	if !ok {
		return fmt.Errorf("host %s is not in the provider block", name)
	}
	ctx, cancel := context.WithTimeout(ctx, hostReadTimeout)
	defer cancel()
	_, err := c.hosts.Reader.Host(ctx, h.URI)
	return err
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
		return loc, false, "", &NotAnsweredError{VM: vm, Err: lerr}
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
