package placement

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Plan assigns every VM of the cluster to a host, all at once, so that an
// evacuation or a failback is planned as a whole before anything moves.
//
// A VM that is already placed stays on its host while the host can still
// take it (sticky), unless it fails back: its host is not one of its preferred
// hosts and one of those can take it now. Otherwise it moves, and its
// assignment says why. New and displaced VMs go where the ranking puts them,
// the most constrained first. Fixed VMs keep their host as they are.
//
// A spread group with more VMs than there are hosts in service shares
// hosts, as evenly as possible, while hosts are out of service (unless
// opts.StrictSpread); Result.Shared lists such groups. Once enough hosts are
// back, its VMs that share a host move apart again.
//
// Plan fails with an *Unspreadable for a spread group that cannot be spread,
// or with one *Unplaceable per VM that no host can take (joined with
// errors.Join when there are several); errors.As finds either.
func Plan(c Cluster, opts Options) (Result, error) {
	s, err := newStack(c.Hosts, opts)
	if err != nil {
		return Result{}, err
	}
	if err := validateVMs(s, c.VMs); err != nil {
		return Result{}, err
	}
	if err := s.spreadGroups(groupsOf(c.VMs)); err != nil {
		return Result{}, err
	}
	res, err := s.planCluster(c.VMs, true)
	if err != nil {
		// A failback is a move we may skip: if one took the room that a VM
		// which must move needed, plan again with failbacks last.
		s.reset()
		res, err = s.planCluster(c.VMs, false)
	}
	if err != nil {
		return Result{}, err
	}
	res.Shared = s.shared(c.VMs, res)
	return res, nil
}

// Place decides where one VM goes in an existing cluster: every VM of c keeps
// its current host and counts against it as it is (a VM of c with vm's name
// is replaced by vm). vm is placed like a VM in Plan, sticky and failback
// included; its Fixed field is ignored.
func Place(c Cluster, vm VM, opts Options) (Assignment, error) {
	s, err := newStack(c.Hosts, opts)
	if err != nil {
		return Assignment{}, err
	}
	vm.Fixed = false
	if err := validateVM(s, vm); err != nil {
		return Assignment{}, err
	}
	var members []string
	s.track(&vm)
	for i := range c.VMs {
		other := &c.VMs[i]
		if other.Name == vm.Name {
			continue
		}
		if h := s.host(other.Current); h != nil {
			s.commit(h, other)
		}
		if vm.SpreadGroup != "" && other.SpreadGroup == vm.SpreadGroup {
			members = append(members, other.Name)
		}
	}
	if vm.SpreadGroup != "" {
		if err := s.spreadGroups(map[string][]string{vm.SpreadGroup: append(members, vm.Name)}); err != nil {
			return Assignment{}, err
		}
	}
	assignments, err := s.plan([]*VM{&vm}, true)
	if err != nil {
		return Assignment{}, err
	}
	return assignments[0], nil
}

// planCluster commits the fixed VMs where they are, then plans the others.
func (s *stack) planCluster(vms []VM, failbacksFirst bool) (Result, error) {
	var fixed []Assignment
	var movable []*VM
	for i := range vms {
		if vm := &vms[i]; !vm.Fixed {
			movable = append(movable, vm)
			s.track(vm)
		}
	}
	for i := range vms {
		vm := &vms[i]
		if !vm.Fixed {
			continue
		}
		if h := s.host(vm.Current); h != nil {
			s.commit(h, vm)
		}
		fixed = append(fixed, Assignment{VM: vm.Name, Host: vm.Current, From: vm.Current, Reason: Stays})
	}
	assignments, err := s.plan(movable, failbacksFirst)
	if err != nil {
		return Result{}, err
	}
	assignments = append(assignments, fixed...)
	slices.SortFunc(assignments, func(a, b Assignment) int { return strings.Compare(a.VM, b.VM) })
	return Result{Assignments: assignments}, nil
}

// plan assigns the movable VMs in passes: VMs that can stay claim their
// hosts first; then VMs off their preferred hosts fail back; then new and
// displaced VMs are placed; last, failback runs again for every VM, so that
// planning again after the moves moves nothing. With failbacksFirst false
// only the last failback runs.
func (s *stack) plan(movable []*VM, failbacksFirst bool) ([]Assignment, error) {
	p := &planned{stack: s}
	var toPlace []*VM
	why := make(map[*VM]Reason) // why a VM that was placed before has to move

	existing := slices.DeleteFunc(slices.Clone(movable), func(vm *VM) bool {
		if vm.Current == "" {
			toPlace = append(toPlace, vm)
			return true
		}
		return false
	})
	slices.SortFunc(existing, stayOrder)
	for _, vm := range existing {
		h := s.host(vm.Current)
		if reason, ok := s.leave(h, vm); !ok {
			toPlace = append(toPlace, vm)
			why[vm] = reason
			continue
		}
		p.add(vm, h, Stays)
	}

	if failbacksFirst {
		p.failBack()
	}

	slices.SortFunc(toPlace, placeOrder)
	var errs []error
	for _, vm := range toPlace {
		if h := s.host(vm.Current); h != nil && s.feasible(h, vm) {
			// A failback freed the room it lacked in the first pass.
			p.add(vm, h, Stays)
			continue
		}
		h, err := s.selectHost(vm)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reason, ok := why[vm]
		if !ok {
			reason = New
		}
		p.add(vm, h, reason)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	if len(errs) > 1 {
		return nil, errors.Join(errs...)
	}

	p.failBack()
	return p.assignments, nil
}

// planned is the plan being made: an assignment per VM placed so far.
type planned struct {
	*stack
	assignments []Assignment
	vms         []*VM // vms[i] is the VM of assignments[i]
}

func (p *planned) add(vm *VM, h *hostState, why Reason) {
	p.commit(h, vm)
	p.assignments = append(p.assignments, Assignment{
		VM: vm.Name, Host: h.Name, From: vm.Current, Reason: why,
		Live: live(vm, h.Name),
	})
	p.vms = append(p.vms, vm)
}

// live tells whether moving vm to host is a live migration.
func live(vm *VM, host string) bool {
	return vm.Running && vm.Current != "" && vm.Current != host
}

// failBack moves every VM that is off its preferred hosts to the first of
// them that can take it, in placement order, round after round until none
// moves: a move may free room for a VM looked at before it. A VM that reached
// a preferred host is skipped from then on, so the rounds end.
func (p *planned) failBack() {
	var off []int // assignments off their preferred hosts
	for i, vm := range p.vms {
		if len(vm.PreferredHosts) > 0 && !slices.Contains(vm.PreferredHosts, p.assignments[i].Host) {
			off = append(off, i)
		}
	}
	slices.SortFunc(off, func(i, j int) int { return placeOrder(p.vms[i], p.vms[j]) })
	for moved := true; moved; {
		moved = false
		for _, i := range off {
			vm, a := p.vms[i], &p.assignments[i]
			if slices.Contains(vm.PreferredHosts, a.Host) {
				continue
			}
			h := p.failbackHost(vm)
			if h == nil {
				continue
			}
			p.host(a.Host).release(vm)
			p.commit(h, vm)
			a.Host, a.Live = h.Name, live(vm, h.Name)
			switch {
			case h.Name == vm.Current: // a displaced VM found its way back
				a.Reason = Stays
			case a.Reason == Stays:
				a.Reason = Failback
			}
			moved = true
		}
	}
}

// stayOrder decides which VMs keep a host that cannot keep them all: pinned
// VMs first, as they have nowhere else to go, then the smallest, so that as
// many VMs as possible stay where they are; then by name.
func stayOrder(a, b *VM) int {
	return cmp.Or(
		trueFirst(a.Host != "", b.Host != ""),
		cmp.Compare(a.MemoryMiB, b.MemoryMiB),
		cmp.Compare(a.VCPUs, b.VCPUs),
		strings.Compare(a.Name, b.Name),
	)
}

// placeOrder places the most constrained VMs first: pinned, then members of
// spread groups, then the largest (big items first pack best); then by name.
func placeOrder(a, b *VM) int {
	return cmp.Or(
		trueFirst(a.Host != "", b.Host != ""),
		trueFirst(a.SpreadGroup != "", b.SpreadGroup != ""),
		cmp.Compare(b.MemoryMiB, a.MemoryMiB),
		cmp.Compare(b.VCPUs, a.VCPUs),
		strings.Compare(a.Name, b.Name),
	)
}

func trueFirst(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return -1
	}
	return 1
}

// spreadGroups decides, for every spread group of vms, how many of its VMs
// one host may take: one while the group has no more VMs than there are
// hosts in service. A larger group shares hosts while hosts are out of
// service (and spread is not strict): each host in service takes up to
// ceil(VMs / hosts in service) of them, which spreads them as evenly as
// the hosts allow. It fails for the first group, by name, that can be
// neither spread nor shared.
func (s *stack) spreadGroups(groups map[string][]string) error {
	inService, out := s.service()
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		n, k := len(groups[g]), len(inService)
		if n <= k {
			continue
		}
		if k == 0 || len(out) == 0 || s.strict {
			return &Unspreadable{Group: g, VMs: slices.Sorted(slices.Values(groups[g])), Hosts: inService,
				OutOfService: out, Strict: s.strict && k > 0 && len(out) > 0}
		}
		s.each[g] = (n + k - 1) / k
	}
	return nil
}

// groupsOf returns the members of every spread group of vms.
func groupsOf(vms []VM) map[string][]string {
	groups := make(map[string][]string)
	for _, vm := range vms {
		if vm.SpreadGroup != "" {
			groups[vm.SpreadGroup] = append(groups[vm.SpreadGroup], vm.Name)
		}
	}
	return groups
}

// service returns the hosts in service and those out of it, by name.
func (s *stack) service() (in, out []string) {
	for i := range s.hosts {
		if h := &s.hosts[i]; h.InService() {
			in = append(in, h.Name)
		} else {
			out = append(out, h.Name)
		}
	}
	slices.Sort(in)
	slices.Sort(out)
	return in, out
}

// shared lists the spread groups that share hosts in res, by name.
func (s *stack) shared(vms []VM, res Result) []Shared {
	if len(s.each) == 0 {
		return nil
	}
	group := make(map[string]string, len(vms))
	for _, vm := range vms {
		group[vm.Name] = vm.SpreadGroup
	}
	inService, out := s.service()
	var shared []Shared
	for _, g := range slices.Sorted(maps.Keys(s.each)) {
		on := make(map[string][]string)
		for _, a := range res.Assignments { // sorted by VM name
			if group[a.VM] == g {
				on[a.Host] = append(on[a.Host], a.VM)
			}
		}
		sh := Shared{Group: g, Each: s.each[g], OutOfService: out, InService: inService}
		for _, h := range slices.Sorted(maps.Keys(on)) {
			if len(on[h]) > 1 {
				sh.Hosts = append(sh.Hosts, HostShare{Host: h, VMs: on[h]})
			}
		}
		shared = append(shared, sh)
	}
	return shared
}

func validateVMs(s *stack, vms []VM) error {
	seen := make(map[string]bool, len(vms))
	for _, vm := range vms {
		if seen[vm.Name] {
			return fmt.Errorf("vm %q: listed twice", vm.Name)
		}
		seen[vm.Name] = true
		if err := validateVM(s, vm); err != nil {
			return err
		}
	}
	return nil
}

func validateVM(s *stack, vm VM) error {
	switch {
	case vm.Name == "":
		return errors.New("vm without a name")
	case vm.MemoryMiB < 0 || vm.VCPUs < 0:
		return fmt.Errorf("vm %q: negative demand", vm.Name)
	case vm.Host != "" && s.host(vm.Host) == nil:
		return fmt.Errorf("vm %q: pinned to unknown host %q", vm.Name, vm.Host)
	case vm.Fixed && vm.Current == "":
		return fmt.Errorf("vm %q: fixed but on no host", vm.Name)
	}
	return nil
}

func validateHost(h Host) error {
	switch {
	case h.Name == "":
		return errors.New("host without a name")
	case h.MemoryMiB < 0 || h.ReservedMemoryMiB < 0 || h.ForeignMemoryMiB < 0:
		return fmt.Errorf("host %q: negative memory", h.Name)
	case h.CPUs < 0 || h.ForeignVCPUs < 0:
		return fmt.Errorf("host %q: negative CPU count", h.Name)
	case h.MemoryOvercommit != 0 && h.MemoryOvercommit < 1:
		return fmt.Errorf("host %q: memory overcommit %g is below 1", h.Name, h.MemoryOvercommit)
	case h.CPUOvercommit != 0 && h.CPUOvercommit < 1:
		return fmt.Errorf("host %q: cpu overcommit %g is below 1", h.Name, h.CPUOvercommit)
	}
	return nil
}
