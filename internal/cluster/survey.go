package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// hostReadTimeout bounds how long one host may take to report its facts; a
// host slower than that counts as one that cannot be reached.
const hostReadTimeout = 30 * time.Second

// surveyConcurrency bounds how many hosts are asked at once.
const surveyConcurrency = 8

// View is what every configured host has and runs right now: the input of
// placement decisions, plan-time checks and drover_hosts.
type View struct {
	Hosts []HostView // in the order of Config.Hosts (by name)
	// Booked are the decisions under way (see Placer): their VMs count
	// where they are going, whatever the hosts said.
	Booked map[string]Booking
	// Planned are the VMs this plan has created or changed so far (see
	// Placer.Planned): they count as they will be (invariant 6).
	Planned map[string]placement.VM
	// FencesErr is why the storage box could not say which hosts are
	// fenced; no host counts as fenced then.
	FencesErr error
}

// HostView is one configured host as it answered.
type HostView struct {
	Config HostConfig
	Facts  hypervisor.Host
	Err    error // the host could not be asked; Facts and VMs are empty
	// VMs are the Drover VMs defined on the host, by domain name; the other
	// domains count as foreign load.
	VMs map[string]hypervisor.VM
	// Fenced is a host whose initiator the storage box shuts out: its
	// copies of VMs that run elsewhere are stale (see View.Stale).
	Fenced bool
}

// Survey asks every configured host, at once (bounded), for its facts and
// the Drover metadata of its domains. It is the one survey of the hosts.
func (c *Cluster) Survey(ctx context.Context) View {
	view := Survey(ctx, c.hosts.Reader, c.cfg.Hosts)
	fenced, err := c.fenced(ctx)
	view.FencesErr = err
	for i := range view.Hosts {
		view.Hosts[i].Fenced = fenced[view.Hosts[i].Config.Name]
	}
	return view
}

// Survey asks the hosts through r; see Cluster.Survey.
func Survey(ctx context.Context, r HostReader, hosts []HostConfig) View {
	view := View{Hosts: make([]HostView, len(hosts))}
	var g errgroup.Group
	g.SetLimit(surveyConcurrency)
	for i, h := range hosts {
		g.Go(func() error {
			view.Hosts[i] = surveyHost(ctx, r, h)
			return nil
		})
	}
	_ = g.Wait() // every host's error is kept in its view
	return view
}

func surveyHost(ctx context.Context, r HostReader, h HostConfig) HostView {
	v := HostView{Config: h, VMs: map[string]hypervisor.VM{}}
	fctx, cancel := context.WithTimeout(ctx, hostReadTimeout)
	v.Facts, v.Err = r.Host(fctx, h.URI)
	cancel()
	if v.Err != nil {
		return v
	}
	for _, d := range v.Facts.Domains {
		vm, _, err := r.ReadVM(ctx, h.URI, d.UUID)
		if err == nil && vm.Managed {
			v.VMs[d.Name] = vm
		}
	}
	return v
}

// Host returns the view of the named host.
func (v View) Host(name string) (HostView, bool) {
	for _, h := range v.Hosts {
		if h.Config.Name == name {
			return h, true
		}
	}
	return HostView{}, false
}

// placementHost is the engine's view of the host, without its load.
func (h HostView) placementHost() placement.Host {
	return placement.Host{
		Name:              h.Config.Name,
		MemoryMiB:         h.Facts.MemoryMiB,
		CPUs:              h.Facts.CPUs,
		ReservedMemoryMiB: h.Config.ReservedMemoryMiB,
		MemoryOvercommit:  h.Config.MemoryOvercommit,
		CPUOvercommit:     h.Config.CPUOvercommit,
		Maintenance:       h.Config.Maintenance,
		Failed:            h.Config.Failed,
		DomainTypes:       []string{h.Config.DomainTypeOn(h.Facts)},
	}
}

// FreeMemoryMiB is the memory placement may still give to VMs on the named
// host, as the engine counts it (see placement.Cluster.FreeMemoryMiB); 0
// for a host that did not answer.
func (v View) FreeMemoryMiB(host string) int64 {
	return v.PlacementCluster("").FreeMemoryMiB(host)
}

// PlacementCluster converts the hosts that answered, and the VMs on them,
// into the placement engine's types. The VM named skip (the one being
// placed) is left out. A failed host that did not answer is there too,
// empty and out of service, so that the VMs last seen on it can leave it.
// VMs on a failed host leave it cold (its copies are never trusted), and
// stale copies on a fenced host count as its foreign load only.
func (v View) PlacementCluster(skip string) placement.Cluster {
	var out placement.Cluster
	stale := v.Stale()
	for _, h := range v.Hosts {
		if h.Err != nil {
			if h.Config.Failed {
				out.Hosts = append(out.Hosts, h.placementHost())
			}
			continue
		}
		ph := h.placementHost()
		for _, d := range h.Facts.Domains {
			vm, ours := h.VMs[d.Name]
			if _, booked := v.Booked[d.Name]; booked && ours {
				continue // counted below, where it is going
			}
			if !ours || stale[h.Config.Name][d.UUID] {
				ph.ForeignMemoryMiB += d.MaxMemoryMiB
				ph.ForeignVCPUs += d.VCPUs
				continue
			}
			if d.Name == skip {
				continue
			}
			pvm := PlacementVM(vm)
			pvm.Name = d.Name
			pvm.MemoryMiB = max(d.MaxMemoryMiB, pvm.MemoryMiB)
			pvm.Current, pvm.Running, pvm.Fixed = h.Config.Name, d.State.Active() && !h.Config.Failed, true
			out.VMs = append(out.VMs, pvm)
		}
		out.Hosts = append(out.Hosts, ph)
	}
	v.addBooked(&out, skip)
	return out
}

// Stale are the copies of VMs on fenced hosts that are also defined on a
// host that is not fenced, by host name and domain UUID: the VM was
// restarted elsewhere while its host was cut off, so these copies must
// never run again (invariants 1 and 5).
func (v View) Stale() map[string]map[string]bool {
	live := map[string]bool{} // UUIDs defined on hosts that are not fenced
	for _, h := range v.Hosts {
		if h.Fenced {
			continue
		}
		for _, d := range h.Facts.Domains {
			if _, ours := h.VMs[d.Name]; ours {
				live[d.UUID] = true
			}
		}
	}
	out := map[string]map[string]bool{}
	for _, h := range v.Hosts {
		if !h.Fenced {
			continue
		}
		for _, d := range h.Facts.Domains {
			if _, ours := h.VMs[d.Name]; ours && live[d.UUID] {
				if out[h.Config.Name] == nil {
					out[h.Config.Name] = map[string]bool{}
				}
				out[h.Config.Name][d.UUID] = true
			}
		}
	}
	return out
}

// addBooked counts every booked VM on its destination, and on the source of
// its move too, as foreign load, until the move is done.
func (v View) addBooked(out *placement.Cluster, skip string) {
	at := map[string]int{}
	for i, h := range out.Hosts {
		at[h.Name] = i
	}
	for _, name := range slices.Sorted(maps.Keys(v.Booked)) {
		b := v.Booked[name]
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

// PlacementVM is the engine's view of vm: it commits its maximum memory and
// vCPUs. It is the one conversion of a VM into the engine's types.
func PlacementVM(vm hypervisor.VM) placement.VM {
	return placement.VM{
		Name:           vm.Name,
		MemoryMiB:      max(vm.MaxMemoryMiB, vm.MemoryMiB),
		VCPUs:          max(vm.MaxVCPUs, vm.VCPUs),
		Host:           vm.Placement.Host,
		PreferredHosts: vm.Placement.PreferredHosts,
		SpreadGroup:    vm.Placement.SpreadGroup,
	}
}

// TooLargeError is memory that no configured host could ever hold, empty or
// not.
type TooLargeError struct {
	MemoryMiB int64
	Limits    []string // what each host can hold at most, or why it cannot say
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%d MiB is more than any host can hold (%s)", e.MemoryMiB, strings.Join(e.Limits, "; "))
}

// CheckMemoryFits fails with a *TooLargeError when no configured host could
// ever hold memMiB, empty or not.
func (v View) CheckMemoryFits(memMiB int64) error {
	var limits []string
	for _, h := range v.Hosts {
		if h.Err != nil {
			limits = append(limits, h.Config.Name+": cannot be reached")
			continue
		}
		capacity := h.placementHost().MemoryCapacityMiB()
		if memMiB <= capacity {
			return nil
		}
		limits = append(limits, fmt.Sprintf("%s: at most %d MiB", h.Config.Name, capacity))
	}
	if len(limits) == 0 {
		return errors.New("no hosts are configured")
	}
	return &TooLargeError{MemoryMiB: memMiB, Limits: limits}
}

func (v View) hostNames() string {
	names := make([]string, len(v.Hosts))
	for i, h := range v.Hosts {
		names[i] = h.Config.Name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// UnreachableNote names the hosts that could not be asked, for the end of
// an error message; "" when every host answered.
func (v View) UnreachableNote() string {
	var down []string
	for _, h := range v.Hosts {
		if h.Err != nil {
			down = append(down, h.Config.Name)
		}
	}
	if len(down) == 0 {
		return ""
	}
	return " (not asked, cannot be reached: " + strings.Join(down, ", ") + ")"
}
