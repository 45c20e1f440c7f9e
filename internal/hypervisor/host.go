package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// Host is what a hypervisor host has and runs, as libvirt reports it.
type Host struct {
	CPUs      int   // logical CPUs
	MemoryMiB int64 // physical memory
	// KVM tells whether the host offers hardware-accelerated "kvm" domains;
	// every QEMU host offers "qemu" (software emulation).
	KVM     bool
	Domains []Domain // every defined domain, running or not, sorted by name
}

// Domain is one domain (VM) defined on a host.
type Domain struct {
	Name         string
	UUID         string
	MemoryMiB    int64 // current memory
	MaxMemoryMiB int64 // the most it may grow to without a restart
	VCPUs        int
	State        State
}

// State is the run state of a domain.
type State string

// The run states of a domain, as libvirt names them.
const (
	StateRunning      State = "running"
	StateBlocked      State = "blocked"
	StatePaused       State = "paused"
	StateShuttingDown State = "shutdown"
	StateShutOff      State = "shutoff"
	StateCrashed      State = "crashed"
	StateSuspended    State = "pmsuspended"
	StateUnknown      State = "nostate"
)

// Active tells whether the domain is running on its host (paused counts:
// it holds its memory and can resume).
func (s State) Active() bool {
	return s != StateShutOff && s != StateCrashed && s != StateUnknown
}

func stateOf(s libvirt.DomainState) State {
	switch s {
	case libvirt.DOMAIN_RUNNING:
		return StateRunning
	case libvirt.DOMAIN_BLOCKED:
		return StateBlocked
	case libvirt.DOMAIN_PAUSED:
		return StatePaused
	case libvirt.DOMAIN_SHUTDOWN:
		return StateShuttingDown
	case libvirt.DOMAIN_SHUTOFF:
		return StateShutOff
	case libvirt.DOMAIN_CRASHED:
		return StateCrashed
	case libvirt.DOMAIN_PMSUSPENDED:
		return StateSuspended
	default:
		return StateUnknown
	}
}

// Host reads the facts of the host at uri.
func (p *Pool) Host(ctx context.Context, uri string) (Host, error) {
	var h Host
	err := p.read(ctx, uri, func(lv *libvirt.Connect) error {
		var err error
		h, err = readHost(lv)
		return err
	})
	if err != nil {
		return Host{}, fmt.Errorf("read host %s: %w", uri, err)
	}
	return h, nil
}

func readHost(lv *libvirt.Connect) (Host, error) {
	node, err := lv.GetNodeInfo()
	if err != nil {
		return Host{}, fmt.Errorf("node info: %s", errorMessage(err))
	}
	h := Host{CPUs: int(node.Cpus), MemoryMiB: int64(node.Memory / 1024)}
	// Node info sums the NUMA cells; memory plugged in at run time (as
	// some virtual machines do) can be missing from them, while the
	// all-cells memory statistics count every byte the host's kernel has.
	if stats, err := lv.GetMemoryStats(libvirt.NODE_MEMORY_STATS_ALL_CELLS, 0); err == nil && stats.TotalSet {
		h.MemoryMiB = max(h.MemoryMiB, int64(stats.Total/1024))
	}

	capsXML, err := lv.GetCapabilities()
	if err != nil {
		return Host{}, fmt.Errorf("capabilities: %s", errorMessage(err))
	}
	h.KVM, err = offersKVM(capsXML)
	if err != nil {
		return Host{}, err
	}

	h.Domains, err = listDomains(lv)
	return h, err
}

// offersKVM tells whether capabilities list a guest of domain type kvm.
func offersKVM(capsXML string) (bool, error) {
	var caps libvirtxml.Caps
	if err := caps.Unmarshal(capsXML); err != nil {
		return false, fmt.Errorf("parse capabilities: %w", err)
	}
	for _, g := range caps.Guests {
		for _, d := range g.Arch.Domains {
			if d.Type == "kvm" {
				return true, nil
			}
		}
	}
	return false, nil
}

func listDomains(lv *libvirt.Connect) ([]Domain, error) {
	doms, err := lv.ListAllDomains(0)
	if err != nil {
		return nil, fmt.Errorf("list domains: %s", errorMessage(err))
	}
	defer func() {
		for i := range doms {
			_ = doms[i].Free()
		}
	}()
	out := make([]Domain, 0, len(doms))
	for i := range doms {
		d, err := describe(&doms[i])
		if isNoDomain(err) {
			continue // undefined between the listing and now
		}
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func describe(dom *libvirt.Domain) (Domain, error) {
	name, err := dom.GetName()
	if err != nil {
		return Domain{}, err
	}
	uuid, err := dom.GetUUIDString()
	if err != nil {
		return Domain{}, err
	}
	info, err := dom.GetInfo()
	if err != nil {
		return Domain{}, fmt.Errorf("domain %s: %s", name, errorMessage(err))
	}
	return Domain{
		Name:         name,
		UUID:         uuid,
		MemoryMiB:    int64(info.Memory / 1024),
		MaxMemoryMiB: int64(info.MaxMem / 1024),
		VCPUs:        int(info.NrVirtCpu),
		State:        stateOf(info.State),
	}, nil
}

func isNoDomain(err error) bool {
	var lerr libvirt.Error
	return errors.As(err, &lerr) && lerr.Code == libvirt.ERR_NO_DOMAIN
}

// CommittedMemoryMiB is the memory promised to the host's domains: the sum of
// their maximum memory, running or not, since a stopped domain may start.
func (h Host) CommittedMemoryMiB() int64 {
	var sum int64
	for _, d := range h.Domains {
		sum += d.MaxMemoryMiB
	}
	return sum
}

// DomainNames returns the names of the host's domains, sorted.
func (h Host) DomainNames() []string {
	names := make([]string, len(h.Domains))
	for i, d := range h.Domains {
		names[i] = d.Name
	}
	sort.Strings(names)
	return names
}
