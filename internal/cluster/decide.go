package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// Move is where placement puts an existing VM in the plan of the whole
// cluster.
type Move struct {
	placement.Assignment
	Found bool // the VM is on a host that answered; else nothing was decided
}

// PlanMove plans the whole cluster with vm (its planned settings) in place
// of the VM of that name, and returns vm's assignment. Every VM may move, so
// that an evacuation or failback is decided as a whole, the same way at plan
// time and at apply time. The engine's error is returned as it is.
func (v View) PlanMove(vm hypervisor.VM, opts placement.Options) (Move, error) {
	if err := v.CheckDefinedOnce(); err != nil {
		return Move{}, err
	}
	c := v.PlacementCluster("")
	found := false
	for i := range c.VMs {
		// Any VM may move, but not one whose decision is under way.
		if _, booked := v.Booked[c.VMs[i].Name]; !booked {
			c.VMs[i].Fixed = false
		}
		if c.VMs[i].Name != vm.Name {
			continue
		}
		next := PlacementVM(vm)
		next.Current, next.Running = c.VMs[i].Current, c.VMs[i].Running
		c.VMs[i], found = next, true
	}
	if !found {
		return Move{}, nil
	}
	res, err := placement.Plan(c, opts)
	if err != nil {
		return Move{}, err
	}
	a, _ := res.Lookup(vm.Name)
	return Move{Assignment: a, Found: true}, nil
}

// DefinedTwiceError is a Drover VM defined on more than one host
// (invariant 1): nothing is done with it until a person says which copy is
// right.
type DefinedTwiceError struct {
	VM     string // as it was asked for: its UUID, or its name
	Domain string // the domain's name
	Hosts  []string
}

func (e *DefinedTwiceError) Error() string {
	return fmt.Sprintf("VM %s is defined on %s: a VM may be defined on one host only (domain %s). Drover "+
		"does not guess which one is right; undefine the wrong copy by hand (virsh undefine) and refresh",
		e.VM, strings.Join(e.Hosts, " and "), e.Domain)
}

// CheckDefinedOnce fails with a *DefinedTwiceError for a Drover VM defined
// on more than one host, unless its move is under way.
func (v View) CheckDefinedOnce() error {
	where := map[string][]string{} // domain UUID → hosts
	names := map[string]string{}
	var uuids []string
	for _, h := range v.Hosts {
		for _, d := range h.Facts.Domains {
			if _, ours := h.VMs[d.Name]; !ours {
				continue
			}
			if _, booked := v.Booked[d.Name]; booked {
				continue // a VM in flight is on both hosts until the switch-over
			}
			if where[d.UUID] == nil {
				uuids = append(uuids, d.UUID)
			}
			where[d.UUID] = append(where[d.UUID], h.Config.Name)
			names[d.UUID] = d.Name
		}
	}
	for _, id := range uuids {
		if hosts := where[id]; len(hosts) > 1 {
			return &DefinedTwiceError{VM: id, Domain: names[id], Hosts: hosts}
		}
	}
	return nil
}

// ChooseHost decides where a new VM goes: its pinned host when it has one,
// else where the placement engine ranks best (by strategy). It is the one
// place that makes this choice.
func (v View) ChooseHost(vm hypervisor.VM, opts placement.Options) (string, error) {
	if pin := vm.Placement.Host; pin != "" {
		h, ok := v.Host(pin)
		if !ok {
			return "", fmt.Errorf("placement.host %q is not a configured host; the hosts are %s", pin, v.hostNames())
		}
		if h.Err != nil {
			return "", fmt.Errorf("pinned host %s cannot be reached: %w", pin, h.Err)
		}
	}
	a, err := placement.Place(v.PlacementCluster(vm.Name), PlacementVM(vm), opts)
	if err != nil {
		return "", fmt.Errorf("%w%s", err, v.UnreachableNote())
	}
	return a.Host, nil
}

// PlanNew checks, at plan time, that some host can take the new VM: its
// memory fits a host (else a *TooLargeError) and placement finds it a host
// (else an error explained for a user).
func (c *Cluster) PlanNew(ctx context.Context, vm hypervisor.VM) error {
	view := c.Survey(ctx)
	if err := view.CheckMemoryFits(vm.MaxMemoryMiB); err != nil {
		return err
	}
	if _, err := view.ChooseHost(vm, c.placementOptions()); err != nil {
		return errors.New(ExplainPlacement(err, ""))
	}
	return nil
}

// PlanChange decides, at plan time and with the whole cluster, whether the
// existing VM had moves when it becomes want. The errors are a
// *DefinedTwiceError, a *TooLargeError (only when its memory grows), or a
// placement error explained for a user, with the hosts that did not
// answer.
func (c *Cluster) PlanChange(ctx context.Context, want, had hypervisor.VM) (Move, error) {
	view := c.Survey(ctx)
	if err := view.CheckDefinedOnce(); err != nil {
		return Move{}, err
	}
	if want.MaxMemoryMiB > had.MaxMemoryMiB {
		if err := view.CheckMemoryFits(want.MaxMemoryMiB); err != nil {
			return Move{}, err
		}
	}
	m, err := view.PlanMove(want, c.placementOptions())
	if err != nil {
		return Move{}, errors.New(ExplainPlacement(err, want.Name) + view.UnreachableNote())
	}
	return m, nil
}

// Warning says why the VM moves and where it is expected to go. The
// destination is known at plan time only for a pin: an engine's choice is
// made again at apply time against the cluster as it is then.
func (m Move) Warning(spreadGroup string) string {
	a := m.Assignment
	how := "a cold move (it is stopped)"
	if a.Live {
		how = "a live migration (it keeps running; its disks are shared, nothing is copied)"
	}
	where := fmt.Sprintf("It is expected to go to %s; placement decides again when it applies, so its host is known after apply.", a.Host)
	if a.Reason == placement.PinChanged {
		where = fmt.Sprintf("It goes to %s.", a.Host)
	}
	return fmt.Sprintf("VM %s moves from %s, by %s, because %s. %s",
		a.VM, a.From, how, moveCause(a, spreadGroup), where)
}

// moveCause is the reason of a move as a user reads it.
func moveCause(a placement.Assignment, spreadGroup string) string {
	switch a.Reason {
	case placement.Maintenance:
		return fmt.Sprintf("its host %s is in maintenance", a.From)
	case placement.PinChanged:
		return fmt.Sprintf("placement.host now pins it to %s", a.Host)
	case placement.NoLongerFits:
		return fmt.Sprintf("it no longer fits on %s with its new size", a.From)
	case placement.Failback:
		return fmt.Sprintf("its preferred host %s can take it again", a.Host)
	case placement.SpreadGroup:
		return fmt.Sprintf("it shares %s with another VM of spread group %q", a.From, spreadGroup)
	case placement.HostRemoved:
		return fmt.Sprintf("its host %s is no longer in the provider block", a.From)
	}
	return string(a.Reason)
}

// ExplainPlacement explains an error of the placement engine about the
// whole cluster to a user planning the VM named vm ("" for any): a VM
// outside a spread group that cannot be spread gets a pointer to the group,
// not its details.
func ExplainPlacement(err error, vm string) string {
	var spread *placement.Unspreadable
	if errors.As(err, &spread) && vm != "" && !slices.Contains(spread.VMs, vm) {
		return fmt.Sprintf("the cluster cannot be planned while spread group %q cannot be spread (see the error "+
			"on its VMs)", spread.Group)
	}
	if errors.As(err, &spread) {
		hosts := fmt.Sprintf("%d hosts", len(spread.Hosts))
		if len(spread.Hosts) == 1 {
			hosts = "1 host"
		}
		return fmt.Sprintf("spread group %q has %d VMs (%s) but only %s out of maintenance (%s), and two VMs "+
			"of one spread group never share a host. Add a host, take one out of maintenance, or take a VM out "+
			"of the group", spread.Group, len(spread.VMs), strings.Join(spread.VMs, ", "), hosts,
			strings.Join(spread.Hosts, ", "))
	}
	return err.Error()
}

// decideMove re-checks, at apply time and against the cluster as it is now
// (decisions under way included), where the VM (with its planned settings
// want) belongs, and books it there. planned is the host the plan showed:
// known when the VM stays or is pinned, "" when placement chooses at apply
// time. dst is the host to move to, or a zero HostView when the VM stays;
// done ends the booking.
func (c *Cluster) decideMove(ctx context.Context, loc hypervisor.Location, want hypervisor.VM, planned string) (dst HostView, why placement.Reason, done func(), err error) {
	done, err = c.placer.Decide(func(booked map[string]Booking) (*Booking, error) {
		view := c.Survey(ctx)
		view.Booked = booked
		mp, err := view.PlanMove(want, c.placementOptions())
		if err != nil {
			return nil, fmt.Errorf("place VM %s: %s%s", want.Name, ExplainPlacement(err, want.Name), view.UnreachableNote())
		}
		stay := &Booking{VM: PlacementVM(want), Host: loc.Host}
		if !mp.Found || !mp.Moves() {
			return stay, nil
		}
		if planned != "" && planned != mp.Host {
			return nil, fmt.Errorf("VM %s was planned on %s, but the cluster changed since the plan: it now has to move "+
				"from %s to %s (%s). Nothing was moved; plan and apply again", want.Name, planned, loc.Host, mp.Host, mp.Reason)
		}
		dst, _ = view.Host(mp.Host)
		why = mp.Reason
		return &Booking{VM: PlacementVM(want), Host: mp.Host, From: loc.Host}, nil
	})
	return dst, why, done, err
}
