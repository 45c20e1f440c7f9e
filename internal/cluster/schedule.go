package cluster

import (
	"context"
	"fmt"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/schedule"
)

// LabelSchedule is the label of a snapshot set that a backup schedule's
// run made: the schedule's id. drover-target sets it with LabelVMID,
// LabelConsistency ("crash") and LabelPauseMS, under the same keys as a
// backup made from Terraform (wire's constants are the target's side).
const LabelSchedule = wire.LabelSchedule

// ScheduledVM is what a backup schedule on the storage box needs of a VM:
// its name, its disks' volumes in its order, and its definition, which
// drover-target attaches to every run.
type ScheduledVM struct {
	Name      string
	Volumes   []string
	DomainXML string
}

// ScheduleSource finds the VM a backup schedule is for, checks that every
// disk's volume is on the target (as for a backup) and reads its domain
// XML. The schedule itself needs no host: the target cuts the volumes by
// holding their writes.
func (c *Cluster) ScheduleSource(ctx context.Context, vmID string) (ScheduledVM, error) {
	loc, vm, err := c.BackupSource(ctx, vmID)
	if err != nil {
		return ScheduledVM{}, err
	}
	xml, err := c.hosts.Quiescer.DomainXML(ctx, loc.URI, vm.UUID)
	if err != nil {
		return ScheduledVM{}, fmt.Errorf("read the definition of VM %s: %w", vm.Name, err)
	}
	return ScheduledVM{Name: vm.Name, Volumes: Volumes(vm.Disks), DomainXML: xml}, nil
}

// ScheduleRequest is the schedule the target is asked to keep for a VM:
// its runs are labelled with the VM's id and name, like a backup.
func ScheduleRequest(vmID string, vm ScheduledVM, cron string, keep wire.Keep, restic *wire.Restic) wire.ScheduleRequest {
	return wire.ScheduleRequest{
		VM: vmID, Volumes: vm.Volumes, Schedule: cron, Keep: keep, Restic: restic,
		Labels: map[string]string{LabelVMName: vm.Name}, DomainXML: vm.DomainXML,
	}
}

// CheckSchedule checks a backup schedule's cron expression and keep the
// way drover-target will, so that a mistake is known at plan time; the
// errors name the field.
func CheckSchedule(cron string, keep wire.Keep) (cronErr, keepErr error) {
	if _, err := schedule.ParseCron(cron); err != nil {
		cronErr = err
	}
	if err := (schedule.Keep{Last: keep.Last, Daily: keep.Daily, Weekly: keep.Weekly, Monthly: keep.Monthly}).Validate(); err != nil {
		keepErr = err
	}
	return cronErr, keepErr
}
