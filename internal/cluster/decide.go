package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
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
	// SourceAnswers is a VM leaving a failed host that still answers.
	SourceAnswers bool
}

// PlanMove plans the whole cluster with vm (its planned settings) in place
// of the VM of that name, and returns vm's assignment. Every VM may move, so
// that an evacuation or failback is decided as a whole, the same way at plan
// time and at apply time; the VMs this plan has already planned (Planned)
// count as they will be. The engine's error is returned as it is.
func (v View) PlanMove(vm hypervisor.VM, opts placement.Options) (Move, error) {
	next := PlacementVM(vm)
	next.Current = unknownHost // an existing VM: decided only where a host has it
	m, _, err := v.planMove(next, opts)
	return m, err
}

// unknownHost is where an existing VM is before a host that answered says.
const unknownHost = "(unknown)"

// planMove is PlanMove of the engine's VM next, with the whole result. A
// next with Current set is a VM no host that answered has: one last seen
// on a failed host, from its state.
func (v View) planMove(next placement.VM, opts placement.Options) (Move, placement.Result, error) {
	if err := v.CheckDefinedOnce(); err != nil {
		return Move{}, placement.Result{}, err
	}
	c := v.PlacementCluster("")
	failed := map[string]bool{}
	for _, h := range c.Hosts {
		failed[h.Name] = h.Failed
	}
	planned := maps.Clone(v.Planned)
	if planned == nil {
		planned = map[string]placement.VM{}
	}
	planned[next.Name] = next
	found := withPlanned(&c, planned, v.Booked)
	for i := range c.VMs {
		// Any VM may move, but not one whose decision is under way, nor
		// one pinned to the failed host it is on: it stays down there.
		if vm := &c.VMs[i]; !inFlight(v.Booked, vm.Name) {
			vm.Fixed = failed[vm.Host] && vm.Host == vm.Current
		}
	}
	if !found[next.Name] {
		return Move{}, placement.Result{}, nil
	}
	res, err := placement.Plan(c, opts)
	if err != nil {
		return Move{}, placement.Result{}, err
	}
	a, _ := res.Lookup(next.Name)
	return Move{Assignment: a, Found: true}, res, nil
}

// inFlight tells whether the named VM's decision is under way.
func inFlight(booked map[string]Booking, name string) bool {
	_, ok := booked[name]
	return ok
}

// withPlanned puts the planned VMs into c: a VM of c of that name takes
// the planned settings and keeps where it is; a planned VM with a Current
// host that c has (a failed host's VM) is added there, not running; one
// with no Current is added as new. It tells which planned VMs are in c
// after. Booked VMs keep their booking.
func withPlanned(c *placement.Cluster, planned map[string]placement.VM, booked map[string]Booking) map[string]bool {
	found := map[string]bool{}
	at := map[string]int{}
	for i, vm := range c.VMs {
		at[vm.Name] = i
	}
	hosts := map[string]bool{}
	for _, h := range c.Hosts {
		hosts[h.Name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(planned)) {
		p := planned[name]
		if i, ok := at[name]; ok {
			if cur := c.VMs[i]; !inFlight(booked, name) {
				p.Current, p.Running, p.Fixed = cur.Current, cur.Running, cur.Fixed
				c.VMs[i] = p
			}
			found[name] = true
			continue
		}
		if p.Current != "" && !hosts[p.Current] {
			continue // on a host that did not answer: nothing can be decided
		}
		// New, or last seen on a failed host that did not answer: it
		// starts cold.
		p.Running, p.Fixed = false, false
		c.VMs = append(c.VMs, p)
		found[name] = true
	}
	return found
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
	stale := v.Stale()
	for _, h := range v.Hosts {
		for _, d := range h.Facts.Domains {
			if _, ours := h.VMs[d.Name]; !ours || stale[h.Config.Name][d.UUID] {
				continue // stale copies on a fenced host are not the VM
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
// else where the placement engine ranks best (by strategy). The other VMs
// this plan creates (Planned) are placed beside it, so that it does not
// take the room they were planned into; when they no longer all fit, it
// is placed by itself. It is the one place that makes this choice.
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
	next := PlacementVM(vm)
	if len(v.Planned) > 0 {
		c := v.PlacementCluster(vm.Name)
		planned := maps.Clone(v.Planned)
		delete(planned, vm.Name)
		withPlanned(&c, planned, v.Booked)
		for i := range c.VMs {
			c.VMs[i].Fixed = c.VMs[i].Current != "" // a create moves no other VM
		}
		c.VMs = append(c.VMs, next)
		if res, err := placement.Plan(c, opts); err == nil {
			a, _ := res.Lookup(vm.Name)
			return a.Host, nil
		}
	}
	a, err := placement.Place(v.PlacementCluster(vm.Name), next, opts)
	if err != nil {
		return "", fmt.Errorf("%w%s", err, v.UnreachableNote())
	}
	return a.Host, nil
}

// Warning is a plan warning: its summary names what it is about, so that
// Terraform, which folds warnings of one summary into one, shows each.
type Warning struct {
	Summary, Detail string
}

// Planned is the plan-time answer for one VM: where it goes (for an
// existing VM, Found tells whether it was decided), and the warnings of the
// plan, each one said once per plan (see Placer.Once).
type Planned struct {
	Move
	Warnings []Warning
	// Stale are the hosts, back in service, whose stale copies of the VM
	// the apply removes before it lifts their fence.
	Stale []string
}

// PlanFullError is a VM that does not fit beside the other VMs this plan
// creates or changes (invariant 6): the plan fails before anything is made.
type PlanFullError struct {
	VM      string
	Fit     int   // the other VMs of this plan that fit, counted first
	Refused int   // the VMs of this plan refused so far, this one included
	Err     error // the engine's error, explained
}

func (e *PlanFullError) Error() string {
	return fmt.Sprintf("this plan creates or changes more VMs than the hosts in service can hold: %d of them fit "+
		"(counted first), VM %s does not fit beside them, and %d %s of this plan %s not fit so far. What is short: %s. "+
		"Nothing was created; add a host, take one out of maintenance, or plan fewer or smaller VMs",
		e.Fit, e.VM, e.Refused, plural(e.Refused, "VM"), doesDo(e.Refused), e.Err)
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

func doesDo(n int) string {
	if n == 1 {
		return "does"
	}
	return "do"
}

// PlanNew checks, at plan time, that the new VM fits beside every other VM
// this plan creates or changes: its memory fits a host (else a
// *TooLargeError) and placement finds the whole plan a place (else a
// *PlanFullError, or an error explained for a user). The VM then counts in
// the plans of the VMs after it.
func (c *Cluster) PlanNew(ctx context.Context, vm hypervisor.VM) (Planned, error) {
	return c.plan(ctx, func(view View) (Planned, error) {
		if err := view.CheckMemoryFits(vm.MaxMemoryMiB); err != nil {
			return Planned{}, err
		}
		if pin := vm.Placement.Host; pin != "" {
			if h, ok := view.Host(pin); ok && h.Err != nil {
				return Planned{}, fmt.Errorf("pinned host %s cannot be reached: %w", pin, h.Err)
			}
		}
		next := PlacementVM(vm)
		_, res, err := view.planMove(next, c.placementOptions())
		if err != nil {
			return Planned{}, c.planFull(view, vm.Name, err)
		}
		return Planned{Move: Move{Found: true}, Warnings: c.sharedWarnings(view, res, vm.Placement.SpreadGroup)}, nil
	}, PlacementVM(vm), true)
}

// PlanChange decides, at plan time and with the whole cluster (the other
// VMs of this plan included), whether the existing VM had moves when it
// becomes want. lastHost is where its state last saw it: a VM that no
// host has is planned there when that host is declared failed. The errors
// are a *DefinedTwiceError, a *TooLargeError (only when its memory grows),
// a *PlanFullError, or a placement error explained for a user, with the
// hosts that did not answer.
func (c *Cluster) PlanChange(ctx context.Context, want, had hypervisor.VM, lastHost string) (Planned, error) {
	next := PlacementVM(want)
	// Used only when no host that answered has it: a failed host's VM
	// restarts elsewhere, a silent host's is not decided.
	next.Current = cmp.Or(lastHost, unknownHost)
	return c.plan(ctx, func(view View) (Planned, error) {
		if err := view.CheckDefinedOnce(); err != nil {
			return Planned{}, err
		}
		if want.MaxMemoryMiB > had.MaxMemoryMiB {
			if err := view.CheckMemoryFits(want.MaxMemoryMiB); err != nil {
				return Planned{}, err
			}
		}
		m, res, err := view.planMove(next, c.placementOptions())
		if err != nil {
			return Planned{}, c.planFull(view, want.Name, err)
		}
		if h, ok := view.Host(m.From); ok && m.Reason == placement.HostFailed {
			m.SourceAnswers = h.Err == nil
		}
		p := Planned{Move: m, Warnings: c.sharedWarnings(view, res, want.Placement.SpreadGroup),
			Stale: view.StaleCopies(had.UUID)}
		if pin, ok := c.cfg.Host(want.Placement.Host); ok && pin.Failed {
			p.Warnings = append(p.Warnings, Warning{Summary: fmt.Sprintf("VM %s stays down", want.Name),
				Detail: fmt.Sprintf("VM %s is pinned to %s, which is declared failed: it stays down until %s is back "+
					"and failed = false, or until its pin changes.", want.Name, pin.Name, pin.Name)})
		}
		return p, nil
	}, next, !sameDemand(PlacementVM(want), PlacementVM(had)))
}

// sameDemand tells whether two versions of a VM ask the same of placement.
func sameDemand(a, b placement.VM) bool {
	return a.MemoryMiB == b.MemoryMiB && a.VCPUs == b.VCPUs && a.Host == b.Host && a.SpreadGroup == b.SpreadGroup &&
		a.DomainType == b.DomainType && slices.Equal(a.PreferredHosts, b.PreferredHosts)
}

// plan runs decide under the decision lock with the cluster as it is and
// the VMs this plan has planned so far; what fits is added to them, and
// counts as one this plan creates or changes when changed is set (or when
// it restarts from a failed host).
func (c *Cluster) plan(ctx context.Context, decide func(View) (Planned, error), vm placement.VM, changed bool) (Planned, error) {
	var out Planned
	_, err := c.placer.Decide(func(booked map[string]Booking) (*Booking, error) {
		view := c.Survey(ctx)
		view.Booked = booked
		view.Planned = c.placer.plannedLocked()
		var err error
		if out, err = decide(view); err != nil {
			c.placer.refuseLocked(vm.Name)
			return nil, err
		}
		if out.Found {
			c.placer.planLocked(vm, changed || out.Reason == placement.HostFailed)
		}
		return nil, nil
	})
	return out, err
}

// planFull explains a plan-time placement error: a VM that does not fit
// beside the others of this plan is a *PlanFullError.
func (c *Cluster) planFull(view View, vm string, err error) error {
	var unplaceable *placement.Unplaceable
	explained := ExplainPlacement(err, vm) + view.UnreachableNote()
	others := c.placer.changedLocked(vm)
	if errors.As(err, &unplaceable) && others > 0 {
		return &PlanFullError{VM: vm, Fit: others, Refused: c.placer.refusedLocked(vm), Err: errors.New(explained)}
	}
	return errors.New(explained)
}

// sharedWarnings are the warnings of the spread groups that share hosts in
// res, for the group of the VM being planned; each is said once.
func (c *Cluster) sharedWarnings(view View, res placement.Result, group string) []Warning {
	var out []Warning
	for _, sh := range res.Shared {
		if sh.Group != group {
			continue
		}
		w := ShareWarning(sh, view)
		if c.placer.Once(w) {
			out = append(out, Warning{Summary: fmt.Sprintf("Spread group %q shares hosts", sh.Group), Detail: w})
		}
	}
	return out
}

// ShareWarning says which VMs of a spread group share which hosts, and why.
func ShareWarning(sh placement.Shared, view View) string {
	var why []string
	for _, name := range sh.OutOfService {
		h, _ := view.Host(name)
		switch {
		case h.Config.Failed:
			why = append(why, name+" is declared failed")
		default:
			why = append(why, name+" is in maintenance")
		}
	}
	var runs []string
	for _, h := range sh.Hosts {
		runs = append(runs, h.Host+" runs "+strings.Join(h.VMs, ", "))
	}
	if len(runs) == 0 {
		runs = []string{"no host runs two of them yet"}
	}
	return fmt.Sprintf("Spread group %q shares hosts while %s: %s (at most %d of its VMs a host, on %s). It spreads "+
		"again by itself in the first apply after enough hosts are back in service. Set placement.strict_spread = true "+
		"in the provider block to refuse this instead.", sh.Group, strings.Join(why, " and "), strings.Join(runs, "; "),
		sh.Each, strings.Join(sh.InService, ", "))
}

// Warning says why the VM moves and where it is expected to go. The
// destination is known at plan time only for a pin: an engine's choice is
// made again at apply time against the cluster as it is then.
func (m Move) Warning(spreadGroup string) string {
	a := m.Assignment
	how := "a cold move (it is stopped)"
	switch {
	case a.Reason == placement.HostFailed:
		how = "a cold restart from its shared disks, after " + a.From + " is fenced at the storage box (what the " +
			"guest had not written to its disks is lost)"
	case a.Live:
		how = "a live migration (it keeps running; its disks are shared, nothing is copied)"
	}
	where := fmt.Sprintf("It is expected to go to %s; placement decides again when it applies, so its host is known after apply.", a.Host)
	if a.Reason == placement.PinChanged {
		where = fmt.Sprintf("It goes to %s.", a.Host)
	}
	w := fmt.Sprintf("VM %s moves from %s, by %s, because %s. %s",
		a.VM, a.From, how, moveCause(a, spreadGroup), where)
	if m.SourceAnswers {
		w += fmt.Sprintf(" %s still answers: its copy there is destroyed, never trusted; if the host is healthy, "+
			"maintenance = true instead of failed = true would move its VMs live.", a.From)
	}
	return w
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
	case placement.HostFailed:
		return fmt.Sprintf("its host %s is declared failed", a.From)
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
		switch {
		case spread.Strict:
			return fmt.Sprintf("spread group %q has %d VMs (%s) but only %s in service (%s; out of service: %s), "+
				"and placement.strict_spread = true never lets two VMs of one spread group share a host. Bring a "+
				"host back into service, add one, take a VM out of the group, or set strict_spread = false to let "+
				"the group share hosts while hosts are out of service", spread.Group, len(spread.VMs),
				strings.Join(spread.VMs, ", "), hosts, strings.Join(spread.Hosts, ", "), strings.Join(spread.OutOfService, ", "))
		case len(spread.Hosts) == 0:
			return fmt.Sprintf("spread group %q has %d VMs (%s) and no host is in service", spread.Group,
				len(spread.VMs), strings.Join(spread.VMs, ", "))
		}
		return fmt.Sprintf("spread group %q has %d VMs (%s) but the cluster has only %s (%s), all in service: two "+
			"VMs of one spread group share a host only while hosts are out of service. Add a host or take a VM out "+
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
		view.Planned = c.placer.plannedLocked()
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
