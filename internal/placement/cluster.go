package placement

import (
	"fmt"
	"slices"
	"strings"
)

// Cluster is everything a placement decision looks at.
type Cluster struct {
	Hosts []Host
	VMs   []VM
}

// Host is one hypervisor host, its capacity and its state.
type Host struct {
	Name              string
	MemoryMiB         int64 // physical memory
	CPUs              int
	ReservedMemoryMiB int64 // kept free for the host itself

	// MemoryOvercommit and CPUOvercommit multiply what the host can commit:
	// memory (MemoryMiB − ReservedMemoryMiB) × MemoryOvercommit, vCPUs
	// CPUs × CPUOvercommit. Zero means 1 (no overcommit); below 1 is invalid.
	MemoryOvercommit float64
	CPUOvercommit    float64

	Maintenance bool // no Drover VM may stay or go there
	// Failed is a host declared dead or cut off: out of service like one
	// in maintenance, and its VMs are restarted elsewhere.
	Failed      bool
	DomainTypes []string // domain types the host offers, e.g. "kvm", "qemu"

	// ForeignMemoryMiB and ForeignVCPUs are committed to domains that Drover
	// does not manage; they count against the host's capacity like any VM.
	ForeignMemoryMiB int64
	ForeignVCPUs     int
}

// MemoryCapacityMiB is the most memory that may be committed on the host:
// (MemoryMiB − ReservedMemoryMiB) × MemoryOvercommit.
func (h Host) MemoryCapacityMiB() int64 {
	return int64(float64(h.MemoryMiB-h.ReservedMemoryMiB) * orOne(h.MemoryOvercommit))
}

// VCPUCapacity is the most vCPUs that may be committed on the host:
// CPUs × CPUOvercommit.
func (h Host) VCPUCapacity() int64 {
	return int64(float64(h.CPUs) * orOne(h.CPUOvercommit))
}

func orOne(f float64) float64 {
	if f == 0 {
		return 1
	}
	return f
}

// VM is one Drover VM: what it needs, where it may go and where it is now.
type VM struct {
	Name string
	// MemoryMiB is what the VM commits on its host: its maximum memory, the
	// ceiling it may grow to without a restart, not its current size.
	MemoryMiB int64
	VCPUs     int

	Host string // hard pin: the VM runs there or nowhere
	// PreferredHosts are soft and in order: a VM goes to the first that can
	// take it; a VM on one of them stays; a VM on none of them returns to
	// the first that can take it (failback).
	PreferredHosts []string
	SpreadGroup    string // no two VMs of one group share a host
	DomainType     string // the domain type the VM needs; empty for any

	Current string // the host it is on now; empty for a new VM
	// Running selects how a move is made (live migration or a cold move).
	// It does not change placement: a stopped VM keeps its room so that it
	// can start again.
	Running bool
	// Fixed VMs may not move in this decision. They keep Current and count
	// against it as they are, without being checked: a caller that plans one
	// VM marks the others fixed.
	Fixed bool
}

// Strategy says how new and displaced VMs are spread over feasible hosts.
type Strategy int

const (
	// Spread puts a VM on the host with the least committed share (default).
	Spread Strategy = iota
	// Pack puts a VM on the host with the most committed share, keeping
	// other hosts free.
	Pack
)

func (s Strategy) String() string {
	switch s {
	case Spread:
		return "spread"
	case Pack:
		return "pack"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// InService tells whether VMs may stay on or go to the host.
func (h Host) InService() bool { return !h.Maintenance && !h.Failed }

// Options tune a placement decision.
type Options struct {
	Strategy Strategy
	// StrictSpread never lets two VMs of a spread group share a host: a
	// group with more VMs than there are hosts in service is refused. By
	// default such a group shares hosts, as evenly as possible, while
	// hosts are out of service (see Result.Shared).
	StrictSpread bool
}

// Reason says why a VM is where its assignment puts it.
type Reason string

// The reasons of an assignment. All but Stays and New are reasons to move.
const (
	Stays        Reason = "stays"
	New          Reason = "new"
	Maintenance  Reason = "maintenance"
	PinChanged   Reason = "pin changed"
	NoLongerFits Reason = "no longer fits"
	SpreadGroup  Reason = "spread group" // shared its host with another VM of its group
	HostRemoved  Reason = "host removed" // its host is no longer in the cluster
	HostFailed   Reason = "host failed"  // its host is declared failed
	Failback     Reason = "failback to preferred host"
)

// Assignment is where one VM goes.
type Assignment struct {
	VM     string
	Host   string // where the VM runs after the plan
	From   string // where it runs now; empty for a new VM
	Reason Reason
	// Live is set when a running VM changes host: a live migration rather
	// than a cold move.
	Live bool
}

// String reads as a sentence: "db1 moves from alpha to beta (maintenance)",
// "web1 stays on alpha", "mail goes to beta (new)".
func (a Assignment) String() string {
	switch {
	case a.Moves():
		return fmt.Sprintf("%s moves from %s to %s (%s)", a.VM, a.From, a.Host, a.Reason)
	case a.From == "":
		return fmt.Sprintf("%s goes to %s (%s)", a.VM, a.Host, a.Reason)
	}
	return fmt.Sprintf("%s stays on %s", a.VM, a.Host)
}

// Moves tells whether the VM changes host (a new VM does not move).
func (a Assignment) Moves() bool { return a.From != "" && a.From != a.Host }

// Result is a placement plan: one assignment per VM, sorted by VM name.
type Result struct {
	Assignments []Assignment
	// Shared lists, by group name, the spread groups whose VMs share hosts
	// in this plan because too few hosts are in service.
	Shared []Shared
}

// Shared is a spread group that shares hosts while hosts are out of
// service: it has more VMs than there are hosts in service, so each host in
// service takes up to Each of them.
type Shared struct {
	Group        string
	Each         int         // the most VMs of the group one host takes
	Hosts        []HostShare // the hosts that run more than one of its VMs, by name
	OutOfService []string    // the hosts in maintenance or failed, by name
	InService    []string    // the hosts in service, by name
}

// HostShare is the VMs of one spread group on one host.
type HostShare struct {
	Host string
	VMs  []string // sorted
}

// String reads as a sentence: `spread group "web" shares hosts while alpha
// is out of service: beta runs web1, web2`.
func (s Shared) String() string {
	var runs []string
	for _, h := range s.Hosts {
		runs = append(runs, h.Host+" runs "+strings.Join(h.VMs, ", "))
	}
	if len(runs) == 0 {
		runs = []string{"no host runs two of them yet"}
	}
	return fmt.Sprintf("spread group %q shares hosts while %s %s out of service: %s",
		s.Group, strings.Join(s.OutOfService, ", "), isAre(len(s.OutOfService)), strings.Join(runs, "; "))
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

// Moves lists the assignments of VMs that change host.
func (r Result) Moves() []Assignment {
	var moves []Assignment
	for _, a := range r.Assignments {
		if a.Moves() {
			moves = append(moves, a)
		}
	}
	return moves
}

// Lookup returns the assignment of the named VM.
func (r Result) Lookup(vm string) (Assignment, bool) {
	i, ok := slices.BinarySearchFunc(r.Assignments, vm, func(a Assignment, vm string) int {
		return strings.Compare(a.VM, vm)
	})
	if !ok {
		return Assignment{}, false
	}
	return r.Assignments[i], true
}

// FreeMemoryMiB is the memory the named host can still give to a new or
// growing VM, as the memory check counts it: its capacity less its foreign
// domains and the VMs on it, never below zero; 0 for a host not in c.
func (c Cluster) FreeMemoryMiB(host string) int64 {
	i := slices.IndexFunc(c.Hosts, func(h Host) bool { return h.Name == host })
	if i < 0 {
		return 0
	}
	h := c.Hosts[i]
	free := h.MemoryCapacityMiB() - h.ForeignMemoryMiB
	for _, vm := range c.VMs {
		if vm.Current == host {
			free -= vm.MemoryMiB
		}
	}
	return max(free, 0)
}
