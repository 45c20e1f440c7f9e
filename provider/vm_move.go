package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// movePlan is where placement puts an existing VM in the plan of the whole
// cluster: every Drover VM on the hosts that answered, the VM itself with the
// values it is about to get.
type movePlan struct {
	placement.Assignment
	Found bool // the VM is on a host that answered; else nothing was decided
}

// planPlacement plans the whole cluster with vm (its planned settings) in
// place of the VM of that name, and returns vm's assignment. Every VM may
// move, so that an evacuation or failback is decided as a whole, the same way
// at plan time and at apply time. The engine's error is returned as it is.
func planPlacement(view clusterView, vm hypervisor.VM, opts placement.Options) (movePlan, error) {
	if err := view.checkDefinedOnce(); err != nil {
		return movePlan{}, err
	}
	c := view.placementCluster("")
	found := false
	for i := range c.VMs {
		// Any VM may move, but not one whose decision is under way.
		if _, booked := view.Booked[c.VMs[i].Name]; !booked {
			c.VMs[i].Fixed = false
		}
		if c.VMs[i].Name != vm.Name {
			continue
		}
		next := placementVM(vm)
		next.Current, next.Running = c.VMs[i].Current, c.VMs[i].Running
		c.VMs[i], found = next, true
	}
	if !found {
		return movePlan{}, nil
	}
	res, err := placement.Plan(c, opts)
	if err != nil {
		return movePlan{}, err
	}
	a, _ := res.Lookup(vm.Name)
	return movePlan{Assignment: a, Found: true}, nil
}

// checkDefinedOnce fails for a Drover VM defined on more than one host
// (invariant 1): nothing can be planned until a person says which copy is
// right.
func (c clusterView) checkDefinedOnce() error {
	where := map[string][]string{} // domain UUID → hosts
	names := map[string]string{}
	var uuids []string
	for _, h := range c.Hosts {
		for _, d := range h.Facts.Domains {
			if _, ours := h.VMs[d.Name]; !ours {
				continue
			}
			if _, booked := c.Booked[d.Name]; booked {
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
			return fmt.Errorf("VM %s is defined on %s: a VM may be defined on one host only (domain %s). Drover "+
				"does not guess which one is right; undefine the wrong copy by hand (virsh undefine) and refresh",
				id, joinNames(hosts), names[id])
		}
	}
	return nil
}

// moveWarning says why the VM moves and where it is expected to go. to is
// known at plan time only for a pin: an engine's choice is made again at
// apply time against the cluster as it is then.
func moveWarning(a placement.Assignment, spreadGroup string) string {
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

// placementError explains an error of the placement engine to a user.
func placementError(err error) string {
	return placementErrorFor(err, "")
}

// placementErrorFor explains an error of the placement engine about the
// whole cluster to a user planning the VM named vm: a VM outside the spread
// group that cannot be spread gets a pointer to the group, not its details.
func placementErrorFor(err error, vm string) string {
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

// moveProgressEvery is how often a running move is logged.
const moveProgressEvery = 5 * time.Second

// move moves the VM cur from loc to the host dst: it makes sure dst has the
// VM's networks, Drover's CHAP secret and access to every volume of the VM,
// waits for a move slot on both hosts, then migrates it live when it runs,
// else moves its definition. A failed migration leaves the VM where it was,
// and the error says where it is now. It returns where the VM is after.
func (r *vmResource) move(ctx context.Context, loc hypervisor.Location, cur hypervisor.VM, dst hostView, why placement.Reason) (hypervisor.Location, error) {
	fail := func(err error) (hypervisor.Location, error) {
		return loc, fmt.Errorf("move VM %s from %s to %s (%s): %w", cur.Name, loc.Host, dst.Config.Name, why, err)
	}
	if dst.Err != nil {
		return fail(fmt.Errorf("the destination cannot be reached: %w", dst.Err))
	}
	if err := r.hosts.CheckNetworks(ctx, dst.Config.URI, cur.NICs); err != nil {
		return fail(err)
	}
	initiator := hostInitiator(dst.Config.Name)
	if err := r.letIn(ctx, cur, dst.Config.URI, initiator); err != nil {
		return fail(err)
	}
	fields := map[string]any{"vm": cur.Name, "from": loc.Host, "to": dst.Config.Name, "reason": string(why)}
	tflog.Debug(ctx, "waiting for a move slot", fields)
	release, err := r.placer.moveSlots(ctx, loc.Host, dst.Config.Name)
	if err != nil {
		return fail(err)
	}
	defer release()
	tflog.Info(ctx, "moving VM", fields)
	start := time.Now()
	opts := hypervisor.MigrateOptions{Initiator: initiator, ProgressEvery: moveProgressEvery,
		Progress: func(p hypervisor.MigrationProgress) {
			tflog.Info(ctx, "still moving VM", progressFields(cur.Name, dst.Config.Name, p))
		}}
	live, err := r.hosts.Move(ctx, cur.UUID, loc.URI, dst.Config.URI, opts)
	if err != nil {
		return fail(fmt.Errorf("%w. %s", err, r.whereAfterFailedMove(ctx, cur, loc)))
	}
	tflog.Info(ctx, "moved VM", map[string]any{"vm": cur.Name, "from": loc.Host, "to": dst.Config.Name,
		"live": live, "duration": time.Since(start).Round(time.Millisecond).String()})
	now, found, _, err := r.locate(ctx, cur.UUID)
	switch {
	case err != nil:
		return loc, fmt.Errorf("after moving VM %s to %s: %w", cur.Name, dst.Config.Name, err)
	case !found || now.Host != dst.Config.Name:
		return loc, fmt.Errorf("after moving VM %s to %s: it is not there (found: %v, on %q)", cur.Name, dst.Config.Name, found, now.Host)
	}
	return now, nil
}

// progressFields are the log fields of a move's progress.
func progressFields(vm, to string, p hypervisor.MigrationProgress) map[string]any {
	f := map[string]any{"vm": vm, "to": to, "elapsed": p.Elapsed.Round(time.Second).String()}
	if p.Total > 0 {
		f["sent_mib"] = p.Processed >> 20
		f["remaining_mib"] = p.Remaining >> 20
		f["percent"] = min(100, p.Processed*100/p.Total)
	}
	return f
}

// whereAfterFailedMove says where the VM is after a failed move, as its
// source tells: the destination may be the host that failed.
func (r *vmResource) whereAfterFailedMove(ctx context.Context, vm hypervisor.VM, loc hypervisor.Location) string {
	d, found, err := r.hosts.Domain(ctx, loc.URI, vm.UUID)
	switch {
	case err != nil:
		return fmt.Sprintf("Its source %s could not be asked where it is now (%v); refresh before acting", loc.Host, err)
	case !found:
		return fmt.Sprintf("It is no longer defined on its source %s; refresh to find it", loc.Host)
	case d.State.Active():
		return fmt.Sprintf("It is still running on %s; nothing was moved. Apply again once the cause is fixed", loc.Host)
	}
	return fmt.Sprintf("It is still on %s (%s); nothing was moved. Apply again once the cause is fixed", loc.Host, d.State)
}

// letIn gives the host at uri, whose initiator is initiator, what it needs
// to open the VM's volumes: Drover's CHAP secret, and its IQN on every
// volume's allow-list.
func (r *vmResource) letIn(ctx context.Context, vm hypervisor.VM, uri, initiator string) error {
	var vols []string
	for _, d := range vm.Disks {
		vols = append(vols, d.Volume)
	}
	if vm.CloudInit != nil && vm.CloudInit.Volume != "" {
		vols = append(vols, vm.CloudInit.Volume)
	}
	if len(vols) == 0 {
		return nil
	}
	if r.storage == nil {
		return errNoStorage
	}
	if err := r.hosts.EnsureCHAPSecret(ctx, uri, r.access.CHAPSecret); err != nil {
		return err
	}
	for _, v := range vols {
		if _, err := r.ensureAccess(ctx, v, initiator); err != nil {
			return err
		}
	}
	return nil
}

// decideMove re-checks, at apply time and against the cluster as it is now
// (decisions under way included), where the VM (with its planned settings
// want) belongs, and books it there. planned is the host the plan showed:
// known when the VM stays or is pinned, "" when placement chooses at apply
// time. dst is the host to move to, or a zero hostView when the VM stays;
// done ends the booking.
func (r *vmResource) decideMove(ctx context.Context, loc hypervisor.Location, want hypervisor.VM, planned string) (dst hostView, why placement.Reason, done func(), err error) {
	done, err = r.placer.decide(func(booked map[string]booking) (*booking, error) {
		view := surveyHosts(ctx, r.cfg, r.hosts)
		view.Booked = booked
		mp, err := planPlacement(view, want, r.placementOptions())
		if err != nil {
			return nil, fmt.Errorf("place VM %s: %s%s", want.Name, placementErrorFor(err, want.Name), view.unreachableNote())
		}
		stay := &booking{VM: placementVM(want), Host: loc.Host}
		if !mp.Found || !mp.Moves() {
			return stay, nil
		}
		if planned != "" && planned != mp.Host {
			return nil, fmt.Errorf("VM %s was planned on %s, but the cluster changed since the plan: it now has to move "+
				"from %s to %s (%s). Nothing was moved; plan and apply again", want.Name, planned, loc.Host, mp.Host, mp.Reason)
		}
		dst, _ = view.host(mp.Host)
		why = mp.Reason
		return &booking{VM: placementVM(want), Host: mp.Host, From: loc.Host}, nil
	})
	return dst, why, done, err
}

// placementOptions are the options of every placement decision.
func (r *vmResource) placementOptions() placement.Options {
	return placement.Options{Strategy: r.cfg.Placement.Strategy}
}
