package placement

import (
	"fmt"
	"slices"
	"strings"
)

// stack wires the pipeline over one cluster's hosts: it keeps what the plan
// has committed on each host, filters hosts with the checks, ranks the
// feasible ones and selects the best.
type stack struct {
	hosts   []hostState // in the caller's order; ties break by name, not position
	index   map[string]int
	checks  []check
	rankers []weighted
	// groups are the spread groups of the VMs being placed. Hosts track
	// only their members: no check asks about any other group, and
	// tracking every group of a large cluster would cost Place its speed.
	groups map[string]bool
	// each is, per spread group that shares hosts, how many of its VMs one
	// host may take (see spreadGroups); 1 for every other group.
	each   map[string]int
	strict bool
}

// newStack returns the pipeline over hosts, or an error for an invalid host.
func newStack(hosts []Host, opts Options) (*stack, error) {
	s := &stack{
		hosts:   make([]hostState, len(hosts)),
		index:   make(map[string]int, len(hosts)),
		rankers: rankers(opts.Strategy),
		groups:  make(map[string]bool),
		each:    make(map[string]int),
		strict:  opts.StrictSpread,
	}
	s.checks = checks(s.each)
	for i := range hosts {
		h := &hosts[i]
		if err := validateHost(*h); err != nil {
			return nil, err
		}
		if _, dup := s.index[h.Name]; dup {
			return nil, fmt.Errorf("host %q: listed twice", h.Name)
		}
		s.hosts[i] = newHostState(h)
		s.index[h.Name] = i
	}
	return s, nil
}

// reset forgets every commitment, to plan again from the start.
func (s *stack) reset() {
	for i := range s.hosts {
		s.hosts[i] = newHostState(s.hosts[i].Host)
	}
}

// track adds vm's spread group to those the hosts keep track of. It must be
// called before the VMs of the group are committed.
func (s *stack) track(vm *VM) {
	if vm.SpreadGroup != "" {
		s.groups[vm.SpreadGroup] = true
	}
}

// commit books vm on h.
func (s *stack) commit(h *hostState, vm *VM) {
	h.commit(vm, vm.SpreadGroup != "" && s.groups[vm.SpreadGroup])
}

// host returns the named host, or nil when the cluster has none by that name.
func (s *stack) host(name string) *hostState {
	if i, ok := s.index[name]; ok {
		return &s.hosts[i]
	}
	return nil
}

// failing returns the first check, in order, that refuses vm on h; nil when
// h can take vm.
func (s *stack) failing(h *hostState, vm *VM) check {
	for _, c := range s.checks {
		if !c.feasible(h, vm) {
			return c
		}
	}
	return nil
}

func (s *stack) feasible(h *hostState, vm *VM) bool { return s.failing(h, vm) == nil }

// rejection says why h cannot take vm; h must be infeasible for vm.
func (s *stack) rejection(h *hostState, vm *VM) Rejection {
	c := s.failing(h, vm)
	return Rejection{Host: h.Name, Check: c.name(), Reason: c.why(h, vm)}
}

// leave returns why vm cannot stay on h (nil when h left the cluster), or ok
// when it can.
func (s *stack) leave(h *hostState, vm *VM) (why Reason, ok bool) {
	if h == nil {
		return HostRemoved, false
	}
	if c := s.failing(h, vm); c != nil {
		return c.leave(h), false
	}
	return "", true
}

func (s *stack) score(h *hostState, vm *VM) int64 {
	var sum int64
	for _, r := range s.rankers {
		sum += r.weight * r.score(h, vm)
	}
	return sum
}

// selectHost returns the best-ranked feasible host for vm, the first by name
// among equals, or an *Unplaceable with every host's rejection.
func (s *stack) selectHost(vm *VM) (*hostState, error) {
	var best *hostState
	var bestScore int64
	for i := range s.hosts {
		h := &s.hosts[i]
		if !s.feasible(h, vm) {
			continue
		}
		score := s.score(h, vm)
		if best == nil || score > bestScore || score == bestScore && h.Name < best.Name {
			best, bestScore = h, score
		}
	}
	if best != nil {
		return best, nil
	}
	// Only a failure needs the reasons; gather them in a second pass.
	err := &Unplaceable{VM: vm.Name, Rejections: make([]Rejection, 0, len(s.hosts))}
	for i := range s.hosts {
		err.Rejections = append(err.Rejections, s.rejection(&s.hosts[i], vm))
	}
	slices.SortFunc(err.Rejections, func(a, b Rejection) int { return strings.Compare(a.Host, b.Host) })
	return nil, err
}

// failbackHost returns the first of vm's preferred hosts that can take it,
// or nil. It is only asked for a VM whose current host is not preferred.
func (s *stack) failbackHost(vm *VM) *hostState {
	for _, name := range vm.PreferredHosts {
		if h := s.host(name); h != nil && s.feasible(h, vm) {
			return h
		}
	}
	return nil
}
