package hypervisor

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Networks is what a host offers network interfaces to attach to.
type Networks struct {
	Networks []string // active libvirt networks, sorted
	Bridges  []string // host bridges libvirt reports, sorted
}

// Networks lists the active libvirt networks and the bridges of the host at
// uri, so that a VM's interfaces can be checked before it moves there.
func (p *Pool) Networks(ctx context.Context, uri string) (Networks, error) {
	var out Networks
	err := p.do(ctx, uri, func(lv *libvirt.Connect) error {
		nets, err := lv.ListAllNetworks(libvirt.CONNECT_LIST_NETWORKS_ACTIVE)
		if err != nil {
			return fmt.Errorf("list networks: %s", errorMessage(err))
		}
		for i := range nets {
			if name, err := nets[i].GetName(); err == nil {
				out.Networks = append(out.Networks, name)
			}
			_ = nets[i].Free()
		}
		ifaces, err := lv.ListAllInterfaces(0)
		if err != nil {
			return fmt.Errorf("list interfaces: %s", errorMessage(err))
		}
		for i := range ifaces {
			if isBridge(&ifaces[i]) {
				if name, err := ifaces[i].GetName(); err == nil {
					out.Bridges = append(out.Bridges, name)
				}
			}
			_ = ifaces[i].Free()
		}
		return nil
	})
	if err != nil {
		return Networks{}, fmt.Errorf("list networks of %s: %w", uri, err)
	}
	sort.Strings(out.Networks)
	sort.Strings(out.Bridges)
	return out, nil
}

func isBridge(ifc *libvirt.Interface) bool {
	xml, err := ifc.GetXMLDesc(0)
	if err != nil {
		return false
	}
	var def libvirtxml.Interface
	return def.Unmarshal(xml) == nil && def.Bridge != nil
}

// Missing returns what nics need that n lacks, as "network NAME" or "bridge
// NAME", in the order of nics.
func (n Networks) Missing(nics []NIC) []string {
	var out []string
	for _, nic := range nics {
		switch {
		case nic.Network != "" && !slices.Contains(n.Networks, nic.Network):
			out = append(out, "network "+nic.Network)
		case nic.Bridge != "" && !slices.Contains(n.Bridges, nic.Bridge):
			out = append(out, "bridge "+nic.Bridge)
		}
	}
	return out
}

// CheckNetworks fails, naming what is missing, unless the host at uri has
// every network and bridge that nics need.
func (p *Pool) CheckNetworks(ctx context.Context, uri string, nics []NIC) error {
	if len(nics) == 0 {
		return nil
	}
	n, err := p.Networks(ctx, uri)
	if err != nil {
		return err
	}
	if missing := n.Missing(nics); len(missing) > 0 {
		return fmt.Errorf("host %s lacks %s", uri, strings.Join(missing, ", "))
	}
	return nil
}
