package provider

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// clusterView is what every configured host has and runs right now: the
// input of placement decisions and plan-time checks.
type clusterView struct {
	Hosts []hostView // in the order of config.Hosts (by name)
	// Booked are the decisions under way (see placer): their VMs count
	// where they are going, whatever the hosts said.
	Booked map[string]booking
}

// hostView is one configured host as it answered.
type hostView struct {
	Config hostConfig
	Facts  hypervisor.Host
	Err    error // the host could not be asked; Facts and VMs are empty
	// VMs are the Drover VMs defined on the host, by domain name; the other
	// domains count as foreign load.
	VMs map[string]hypervisor.VM
}

// surveyHosts asks every configured host, at once, for its facts and the
// Drover metadata of its domains.
func surveyHosts(ctx context.Context, cfg config, hv vmHosts) clusterView {
	view := clusterView{Hosts: make([]hostView, len(cfg.Hosts))}
	var wg sync.WaitGroup
	for i, h := range cfg.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			view.Hosts[i] = surveyHost(ctx, h, hv)
		}()
	}
	wg.Wait()
	return view
}

func surveyHost(ctx context.Context, h hostConfig, hv vmHosts) hostView {
	v := hostView{Config: h, VMs: map[string]hypervisor.VM{}}
	v.Facts, v.Err = hv.Host(ctx, h.URI)
	if v.Err != nil {
		return v
	}
	for _, d := range v.Facts.Domains {
		vm, _, err := hv.ReadVM(ctx, h.URI, d.UUID)
		if err == nil && vm.Managed {
			v.VMs[d.Name] = vm
		}
	}
	return v
}

// host returns the view of the named host.
func (c clusterView) host(name string) (hostView, bool) {
	for _, h := range c.Hosts {
		if h.Config.Name == name {
			return h, true
		}
	}
	return hostView{}, false
}

// placementCluster converts the hosts that answered, and the VMs on them,
// into the placement engine's types. The VM named skip (the one being
// placed) is left out.
func (c clusterView) placementCluster(skip string) placement.Cluster {
	var out placement.Cluster
	for _, h := range c.Hosts {
		if h.Err != nil {
			continue
		}
		ph := placement.Host{
			Name:              h.Config.Name,
			MemoryMiB:         h.Facts.MemoryMiB,
			CPUs:              h.Facts.CPUs,
			ReservedMemoryMiB: h.Config.ReservedMemoryMiB,
			MemoryOvercommit:  h.Config.MemoryOvercommit,
			CPUOvercommit:     h.Config.CPUOvercommit,
			Maintenance:       h.Config.Maintenance,
			DomainTypes:       []string{h.Config.domainType(h.Facts)},
		}
		for _, d := range h.Facts.Domains {
			vm, ours := h.VMs[d.Name]
			if _, booked := c.Booked[d.Name]; booked && ours {
				continue // counted below, where it is going
			}
			if !ours {
				ph.ForeignMemoryMiB += d.MaxMemoryMiB
				ph.ForeignVCPUs += d.VCPUs
				continue
			}
			if d.Name == skip {
				continue
			}
			out.VMs = append(out.VMs, placement.VM{
				Name:           d.Name,
				MemoryMiB:      max(d.MaxMemoryMiB, vm.MaxMemoryMiB),
				VCPUs:          max(vm.MaxVCPUs, vm.VCPUs),
				Host:           vm.Placement.Host,
				PreferredHosts: vm.Placement.PreferredHosts,
				SpreadGroup:    vm.Placement.SpreadGroup,
				Current:        h.Config.Name,
				Running:        d.State.Active(),
				Fixed:          true,
			})
		}
		out.Hosts = append(out.Hosts, ph)
	}
	c.addBooked(&out, skip)
	return out
}

// addBooked counts every booked VM on its destination, and on the source of
// its move too, as foreign load, until the move is done.
func (c clusterView) addBooked(out *placement.Cluster, skip string) {
	at := map[string]int{}
	for i, h := range out.Hosts {
		at[h.Name] = i
	}
	for _, name := range slices.Sorted(maps.Keys(c.Booked)) {
		b := c.Booked[name]
		if name == skip {
			continue
		}
		if i, ok := at[b.From]; ok && b.From != b.Host {
			out.Hosts[i].ForeignMemoryMiB += b.VM.MemoryMiB
			out.Hosts[i].ForeignVCPUs += b.VM.VCPUs
		}
		if _, ok := at[b.Host]; !ok {
			continue // its destination did not answer: no decision counts on it
		}
		vm := b.VM
		vm.Current, vm.Fixed = b.Host, true
		out.VMs = append(out.VMs, vm)
	}
}

// placementVM is the engine's view of vm.
func placementVM(vm hypervisor.VM) placement.VM {
	return placement.VM{
		Name:           vm.Name,
		MemoryMiB:      max(vm.MaxMemoryMiB, vm.MemoryMiB),
		VCPUs:          max(vm.MaxVCPUs, vm.VCPUs),
		Host:           vm.Placement.Host,
		PreferredHosts: vm.Placement.PreferredHosts,
		SpreadGroup:    vm.Placement.SpreadGroup,
	}
}

// chooseHost decides where a new VM goes: its pinned host when it has one,
// else where the placement engine ranks best (by strategy). It is the one
// place that makes this choice.
func chooseHost(c clusterView, vm hypervisor.VM, strategy placement.Strategy) (string, error) {
	if pin := vm.Placement.Host; pin != "" {
		h, ok := c.host(pin)
		if !ok {
			return "", fmt.Errorf("placement.host %q is not a configured host; the hosts are %s", pin, c.hostNames())
		}
		if h.Err != nil {
			return "", fmt.Errorf("pinned host %s cannot be reached: %w", pin, h.Err)
		}
	}
	a, err := placement.Place(c.placementCluster(vm.Name), placementVM(vm), placement.Options{Strategy: strategy})
	if err != nil {
		return "", fmt.Errorf("%w%s", err, c.unreachableNote())
	}
	return a.Host, nil
}

// checkMemoryFits fails when no configured host could ever hold memMiB,
// empty or not, naming what each host can hold at most.
func (c clusterView) checkMemoryFits(memMiB int64) error {
	var limits []string
	for _, h := range c.Hosts {
		if h.Err != nil {
			limits = append(limits, h.Config.Name+": cannot be reached")
			continue
		}
		capacity := placement.Host{
			MemoryMiB: h.Facts.MemoryMiB, ReservedMemoryMiB: h.Config.ReservedMemoryMiB,
			MemoryOvercommit: h.Config.MemoryOvercommit,
		}.MemoryCapacityMiB()
		if memMiB <= capacity {
			return nil
		}
		limits = append(limits, fmt.Sprintf("%s: at most %d MiB", h.Config.Name, capacity))
	}
	if len(limits) == 0 {
		return errors.New("no hosts are configured")
	}
	return fmt.Errorf("%d MiB is more than any host can hold (%s)", memMiB, strings.Join(limits, "; "))
}

func (c clusterView) hostNames() string {
	names := make([]string, len(c.Hosts))
	for i, h := range c.Hosts {
		names[i] = h.Config.Name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (c clusterView) unreachableNote() string {
	var down []string
	for _, h := range c.Hosts {
		if h.Err != nil {
			down = append(down, h.Config.Name)
		}
	}
	if len(down) == 0 {
		return ""
	}
	return " (not asked, cannot be reached: " + strings.Join(down, ", ") + ")"
}
