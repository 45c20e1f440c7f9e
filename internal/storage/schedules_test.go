package storage_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestTheClientDrivesBackupSchedules(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := context.Background()
	for _, name := range []string{"web-boot", "web-data"} {
		if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: name, SizeMiB: 1}); err != nil {
			t.Fatal(err)
		}
	}
	req := wire.ScheduleRequest{VM: "vm-web", Volumes: []string{"web-boot", "web-data"}, Schedule: "0 3 * * *",
		Keep: wire.Keep{Last: 2, Weekly: 4}, Labels: map[string]string{"drover.vm-name": "web"}, DomainXML: "<domain/>"}
	made, err := c.CreateSchedule(ctx, req)
	if err != nil {
		t.Fatalf("CreateSchedule: %v", err)
	}
	if made.ID == "" || made.VM != "vm-web" || made.Keep != req.Keep || made.NextRun == nil || made.NextRun.Local().Hour() != 3 {
		t.Errorf("CreateSchedule = %+v, want the schedule with an id and a next run at 03:00", made)
	}
	list, err := c.ListSchedules(ctx)
	if err != nil || len(list) != 1 || list[0].ID != made.ID {
		t.Errorf("ListSchedules = %+v, %v; want [%s]", list, err, made.ID)
	}
	req.Schedule, req.Keep = "*/10 * * * *", wire.Keep{Monthly: 3}
	if got, err := c.ReplaceSchedule(ctx, made.ID, req); err != nil || got.Schedule != "*/10 * * * *" || got.Keep != req.Keep {
		t.Errorf("ReplaceSchedule = %+v, %v; want the new cron and keep", got, err)
	}
	if got, err := c.GetSchedule(ctx, made.ID); err != nil || got.Keep != req.Keep {
		t.Errorf("GetSchedule = %+v, %v", got, err)
	}
	bad := req
	bad.Schedule = "61 * * * *"
	if _, err := c.ReplaceSchedule(ctx, made.ID, bad); err == nil || !strings.Contains(err.Error(), "minute field") {
		t.Errorf("ReplaceSchedule with minute 61: %v, want an error naming the minute field", err)
	}
	bad = req
	bad.Restic = &wire.Restic{Repository: t.TempDir(), PasswordFile: "/nonexistent/h14-password"}
	if _, err := c.CreateSchedule(ctx, bad); err == nil || !strings.Contains(err.Error(), "restic.password_file") {
		t.Errorf("CreateSchedule with an unreadable password file: %v, want an error naming restic.password_file", err)
	}
	if _, err := c.CheckRestic(ctx, *bad.Restic); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("CheckRestic with an unreadable password file: %v, want it said", err)
	}
	if err := c.DeleteSchedule(ctx, made.ID); err != nil {
		t.Fatalf("DeleteSchedule: %v", err)
	}
	if _, err := c.GetSchedule(ctx, made.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetSchedule after delete: %v, want ErrNotFound", err)
	}
}
