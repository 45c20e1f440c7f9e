package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/drover/terraform-provider-drover/internal/placement"
)

// Placer is the cluster-wide keeper of placement decisions, shared by every
// operation of one configured provider.
//
// A decision (survey the hosts, plan, choose) is made under one lock, so that
// two VMs of one apply never both count on the same room or the same host of
// a spread group. The decision is then booked and the lock released: the work
// (defining, migrating, growing) runs in parallel with other VMs' decisions
// and work, and every decision made meanwhile sees the bookings as if they
// were done (see View.PlacementCluster). A VM in flight counts on both
// its source and its destination until its booking ends, so that a failed
// migration, which leaves the VM where it was, never overcommits the source.
//
// Moves are bounded per host: a host takes part in at most perHost moves at
// once, as source or destination.
type Placer struct {
	mu     sync.Mutex
	booked map[string]Booking // by VM name; guarded by mu
	// planned are the VMs this process has planned (created or changed)
	// and that fit, as they will be, by name; refused are those that did
	// not fit. Terraform serves one plan per provider process, so these are
	// one plan's (invariant 6). Guarded by mu.
	planned map[string]placement.VM
	changed map[string]bool // the planned VMs that are new or changed
	refused map[string]bool

	onceMu sync.Mutex
	said   map[string]bool // warnings said in this process; guarded by onceMu

	perHost int
	slotsMu sync.Mutex
	slots   map[string]chan struct{} // by host name, perHost capacity; guarded by slotsMu
}

// Booking is a decision being carried out: VM will be on Host; until the
// booking ends it still weighs on From too (a move's source, or "").
type Booking struct {
	VM   placement.VM
	Host string
	From string
}

func NewPlacer(perHost int) *Placer {
	return &Placer{booked: map[string]Booking{}, planned: map[string]placement.VM{}, changed: map[string]bool{}, refused: map[string]bool{},
		said: map[string]bool{}, perHost: max(perHost, 1), slots: map[string]chan struct{}{}}
}

// Decide runs fn under the decision lock with the bookings of the decisions
// under way; fn surveys and decides and returns what it books (nil for
// nothing). The returned done ends the booking; the caller calls it once the
// decision is carried out or has failed.
func (p *Placer) Decide(fn func(booked map[string]Booking) (*Booking, error)) (done func(), err error) {
	if p == nil { // not configured: nothing to share decisions with
		_, err := fn(nil)
		return func() {}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := fn(maps.Clone(p.booked))
	if err != nil || b == nil {
		return func() {}, err
	}
	name := b.VM.Name
	p.booked[name] = *b
	return sync.OnceFunc(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.booked, name)
	}), nil
}

// plannedLocked are the VMs planned so far; the caller runs under Decide.
func (p *Placer) plannedLocked() map[string]placement.VM {
	if p == nil {
		return nil
	}
	return maps.Clone(p.planned)
}

// planLocked counts vm in the plans after it, as one this plan creates or
// changes when changed; the caller runs under Decide.
func (p *Placer) planLocked(vm placement.VM, changed bool) {
	if p == nil {
		return
	}
	p.planned[vm.Name] = vm
	p.changed[vm.Name] = changed
	delete(p.refused, vm.Name)
}

// changedLocked counts the planned VMs, other than the named one, that
// this plan creates or changes; the caller runs under Decide.
func (p *Placer) changedLocked(name string) int {
	if p == nil {
		return 0
	}
	n := 0
	for vm, changed := range p.changed {
		if changed && vm != name {
			n++
		}
	}
	return n
}

// refuseLocked records that the named VM did not fit; the caller runs
// under Decide.
func (p *Placer) refuseLocked(name string) {
	if p == nil {
		return
	}
	delete(p.planned, name)
	delete(p.changed, name)
	p.refused[name] = true
}

// refusedLocked counts the VMs refused so far, the named one included;
// the caller runs under Decide.
func (p *Placer) refusedLocked(name string) int {
	if p == nil {
		return 1
	}
	n := len(p.refused)
	if !p.refused[name] {
		n++
	}
	return n
}

// Once tells whether the warning w is said for the first time by this
// process, so that a plan says each warning once, not once per VM.
func (p *Placer) Once(w string) bool {
	if p == nil {
		return true
	}
	p.onceMu.Lock()
	defer p.onceMu.Unlock()
	if p.said[w] {
		return false
	}
	p.said[w] = true
	return true
}

// MoveSlots waits until each of the hosts has a free move slot, takes one on
// each, and returns their release. Slots are taken in host name order, so
// that two moves in opposite directions cannot each hold what the other
// waits for. ctx bounds the wait.
func (p *Placer) MoveSlots(ctx context.Context, hosts ...string) (release func(), err error) {
	if p == nil {
		return func() {}, nil
	}
	hosts = slices.Clone(hosts)
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	var taken []chan struct{}
	release = func() {
		for _, s := range taken {
			<-s
		}
	}
	for _, h := range hosts {
		s := p.hostSlots(h)
		select {
		case s <- struct{}{}:
			taken = append(taken, s)
		case <-ctx.Done():
			release()
			return func() {}, fmt.Errorf("waiting for a free move slot on host %s (at most %d moves at once per host): %w",
				h, p.perHost, context.Cause(ctx))
		}
	}
	return sync.OnceFunc(release), nil
}

func (p *Placer) hostSlots(host string) chan struct{} {
	p.slotsMu.Lock()
	defer p.slotsMu.Unlock()
	s, ok := p.slots[host]
	if !ok {
		s = make(chan struct{}, p.perHost)
		p.slots[host] = s
	}
	return s
}
