package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// The labels a backup's snapshot set carries on the target: what the
// backup resource and the drover_backups data source read back.
const (
	LabelVMID        = "drover.vm-id"
	LabelVMName      = "drover.vm-name"
	LabelConsistency = "drover.consistency"
	LabelPauseMS     = "drover.pause-ms"
	LabelQuiesced    = "drover.quiesced"
	// DomainAttachment is the name of the domain XML kept with a backup.
	DomainAttachment = "domain.xml"
)

// releaseTimeout bounds resuming or thawing the guest after the cut, and
// removing a backup whose export failed, whatever is left of the
// operation's own time.
const releaseTimeout = time.Minute

// BackupSource finds the VM to back up and checks that every disk's volume
// is on the target, in the VM's disk order.
func (c *Cluster) BackupSource(ctx context.Context, vmID string) (hypervisor.Location, hypervisor.VM, error) {
	loc, found, _, err := c.Locate(ctx, vmID)
	switch {
	case err != nil:
		return loc, hypervisor.VM{}, err
	case !found:
		return loc, hypervisor.VM{}, fmt.Errorf("no VM with id %s on any configured host: "+
			"vm_id takes the id of a drover_vm (its domain UUID)", vmID)
	case !c.HasStorage():
		return loc, hypervisor.VM{}, ErrNoStorage
	}
	vm, _, err := c.hosts.Reader.ReadVM(ctx, loc.URI, vmID)
	if err != nil {
		return loc, vm, err
	}
	if len(vm.Disks) == 0 {
		return loc, vm, fmt.Errorf("VM %s has no disks: there is nothing to back up", vm.Name)
	}
	for i, d := range vm.Disks {
		if _, err := c.storage.Volumes.GetVolume(ctx, d.Volume); errors.Is(err, storage.ErrNotFound) {
			return loc, vm, fmt.Errorf("VM %s's disk %d is volume %q, which is gone from the storage target: "+
				"the VM cannot read that disk either. Remove the disk from the VM (or restore the volume) "+
				"and back it up again", vm.Name, i+1, d.Volume)
		} else if err != nil {
			return loc, vm, fmt.Errorf("look up volume %q of VM %s: %w", d.Volume, vm.Name, err)
		}
	}
	return loc, vm, nil
}

// Backup is a backup just cut.
type Backup struct {
	Set       wire.SnapshotSet
	DomainXML string
	// Unreleased is "" when the guest was released after the cut, else
	// what went wrong and what to do: the backup exists, the guest may
	// not run.
	Unreleased string
}

// Cut makes the backup of the VM: it stills its disks (agent freeze when
// quiesce and an agent answers, else a pause), snapshots them all at one
// instant with the domain XML attached, and releases the guest.
func (c *Cluster) Cut(ctx context.Context, vmID string, quiesce bool) (Backup, error) {
	var b Backup
	loc, vm, err := c.BackupSource(ctx, vmID)
	if err != nil {
		return b, err
	}
	if b.DomainXML, err = c.hosts.Quiescer.DomainXML(ctx, loc.URI, vm.UUID); err != nil {
		return b, err
	}
	q, thaw, err := c.hosts.Quiescer.Quiesce(ctx, loc.URI, vm.UUID, quiesce)
	if err != nil {
		return b, err
	}
	if q.AgentError != "" {
		c.log.Info(ctx, "no guest agent answered; pausing the VM instead", map[string]any{"vm": vm.Name, "agent": q.AgentError})
	}
	b.Set, err = c.storage.Sets.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{
		Volumes: Volumes(vm.Disks),
		Labels: map[string]string{
			LabelVMID: vm.UUID, LabelVMName: vm.Name, LabelConsistency: q.Consistency, LabelQuiesced: q.How,
		},
		Attachments: map[string]string{DomainAttachment: b.DomainXML},
	})
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer rcancel()
	held, rerr := thaw(rctx)
	if q.How != hypervisor.QuiescedStopped {
		c.log.Info(ctx, "VM stood still for its backup", map[string]any{"vm": vm.Name, "how": q.How,
			"pause_ms": held.Milliseconds(), "consistency": q.Consistency})
	}
	if err != nil {
		if rerr != nil {
			err = fmt.Errorf("%w; and the VM could not be released: %v (resume it with virsh resume or "+
				"virsh domfsthaw on host %s)", err, rerr, loc.Host)
		}
		return Backup{}, fmt.Errorf("snapshot the disks of VM %s: %w", vm.Name, err)
	}
	if rerr != nil {
		b.Unreleased = fmt.Sprintf("The backup %s was made, but VM %s on host %s could not be released after it: %v. "+
			"Resume it by hand (virsh resume %s, or virsh domfsthaw %s after a freeze).",
			b.Set.ID, vm.Name, loc.Host, rerr, vm.Name, vm.Name)
	}
	// The pause is known only now: the set keeps it as a label too, for the
	// data source and for an import.
	if b.Set.Labels == nil {
		b.Set.Labels = map[string]string{}
	}
	b.Set.Labels[LabelPauseMS] = strconv.FormatInt(held.Milliseconds(), 10)
	if _, lerr := c.storage.Sets.SetSnapshotSetLabels(ctx, b.Set.ID, b.Set.Labels); lerr != nil {
		c.log.Warn(ctx, "could not record the pause on the backup", map[string]any{"backup": b.Set.ID, "error": lerr.Error()})
	}
	// Cut by copy-before-write (no reflinks on the storage box), the set is
	// copied in the background while the guest runs on; a backup is usable
	// once it is done. One that cannot be finished is not left behind.
	if b.Set.State == wire.StateCopying {
		ready, werr := c.storage.Sets.WaitSnapshotSet(ctx, b.Set.ID)
		if werr != nil {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			defer dcancel()
			if derr := c.storage.Sets.DeleteSnapshotSet(dctx, b.Set.ID); derr != nil {
				werr = fmt.Errorf("%w; deleting the unfinished backup failed too: %v (delete snapshot set %s by hand)", werr, derr, b.Set.ID)
			}
			return Backup{}, fmt.Errorf("back up VM %s: %w", vm.Name, werr)
		}
		ready.Labels = b.Set.Labels
		b.Set = ready
	}
	return b, nil
}

// CheckExportPath fails unless dir is a folder that is empty or can be made.
func CheckExportPath(dir string) error {
	if dir == "" {
		return errors.New("export_path is empty: leave it out, or name a folder")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("export_path %q: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("export_path %q is not empty (it has %s): an export never overwrites files. "+
			"Name a new folder", dir, entries[0].Name())
	}
	return nil
}
