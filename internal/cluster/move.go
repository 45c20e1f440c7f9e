package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// moveProgressEvery is how often a running move is logged.
const moveProgressEvery = 5 * time.Second

// move moves the VM cur from loc to the host dst: it makes sure dst has the
// VM's networks, Drover's CHAP secret and access to every volume of the VM,
// waits for a move slot on both hosts, then migrates it live when it runs,
// else moves its definition. A failed migration leaves the VM where it was,
// and the error says where it is now. It returns where the VM is after.
func (c *Cluster) move(ctx context.Context, loc hypervisor.Location, cur hypervisor.VM, dst HostView, why placement.Reason) (hypervisor.Location, error) {
	fail := func(err error) (hypervisor.Location, error) {
		return loc, fmt.Errorf("move VM %s from %s to %s (%s): %w", cur.Name, loc.Host, dst.Config.Name, why, err)
	}
	if dst.Err != nil {
		return fail(fmt.Errorf("the destination cannot be reached: %w", dst.Err))
	}
	if err := c.hosts.Prep.CheckNetworks(ctx, dst.Config.URI, cur.NICs); err != nil {
		return fail(err)
	}
	if err := c.readmit(ctx, dst.Config.Name); err != nil {
		return fail(err)
	}
	initiator := hypervisor.HostInitiator(dst.Config.Name)
	if err := c.letIn(ctx, cur, dst.Config.URI, initiator); err != nil {
		return fail(err)
	}
	fields := map[string]any{"vm": cur.Name, "from": loc.Host, "to": dst.Config.Name, "reason": string(why)}
	c.log.Debug(ctx, "waiting for a move slot", fields)
	release, err := c.placer.MoveSlots(ctx, loc.Host, dst.Config.Name)
	if err != nil {
		return fail(err)
	}
	defer release()
	c.log.Info(ctx, "moving VM", fields)
	start := time.Now()
	opts := hypervisor.MigrateOptions{Initiator: initiator, Address: dst.Config.MigrationAddress,
		ProgressEvery: moveProgressEvery,
		Progress: func(p hypervisor.MigrationProgress) {
			c.log.Info(ctx, "still moving VM", progressFields(cur.Name, dst.Config.Name, p))
		}}
	live, err := c.hosts.Migrator.Move(ctx, cur.UUID, loc.URI, dst.Config.URI, opts)
	if err != nil {
		return fail(fmt.Errorf("%w. %s", err, c.whereAfterFailedMove(ctx, cur, loc)))
	}
	c.log.Info(ctx, "moved VM", map[string]any{"vm": cur.Name, "from": loc.Host, "to": dst.Config.Name,
		"live": live, "duration": time.Since(start).Round(time.Millisecond).String()})
	now, found, _, err := c.Locate(ctx, cur.UUID)
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
func (c *Cluster) whereAfterFailedMove(ctx context.Context, vm hypervisor.VM, loc hypervisor.Location) string {
	d, found, err := c.hosts.Migrator.Domain(ctx, loc.URI, vm.UUID)
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
func (c *Cluster) letIn(ctx context.Context, vm hypervisor.VM, uri, initiator string) error {
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
	if !c.HasStorage() {
		return ErrNoStorage
	}
	if err := c.hosts.Prep.EnsureCHAPSecret(ctx, uri, c.access.CHAPSecret); err != nil {
		return err
	}
	for _, v := range vols {
		if _, err := c.ensureAccess(ctx, v, initiator); err != nil {
			return err
		}
	}
	return nil
}
