package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestASchedulesChangesKeepItsIdCreationAndLastRunAcrossReopening(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestStore(t, dir, Options{})
	mustCreate(t, s, "web", 1)
	made, err := s.CreateSchedule(Schedule{VM: "vm-web", Volumes: []string{"web"}, Cron: "0 3 * * *", Keep: wire.Keep{Daily: 7},
		Restic: &wire.Restic{Repository: "/srv/restic", PasswordFile: "/etc/pw"}, Labels: map[string]string{"drover.vm-name": "web"}, DomainXML: "<domain/>"})
	if err != nil {
		t.Fatal(err)
	}
	if made.ID != "sched-1" || made.CreatedAt.IsZero() || made.LastRun != nil {
		t.Fatalf("CreateSchedule = %+v, want sched-1 with a creation time and no run", made)
	}
	run := wire.ScheduleRun{At: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC), Status: "ok", SetID: "set-4"}
	if err := s.RecordScheduleRun(made.ID, run); err != nil {
		t.Fatal(err)
	}
	replaced, err := s.ReplaceSchedule(made.ID, Schedule{VM: "vm-web", Volumes: []string{"web"}, Cron: "*/5 * * * *", Keep: wire.Keep{Last: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if !replaced.CreatedAt.Equal(made.CreatedAt) || replaced.LastRun == nil || *replaced.LastRun != run || replaced.Restic != nil || replaced.DomainXML != "" {
		t.Errorf("ReplaceSchedule = %+v, want the new settings with the creation time and last run kept", replaced)
	}
	if _, err := s.ReplaceSchedule(made.ID, Schedule{VM: "vm-db", Volumes: []string{"web"}, Cron: "* * * * *", Keep: wire.Keep{Last: 1}}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "does not change") {
		t.Errorf("ReplaceSchedule with another VM: %v, want ErrInvalid saying the VM does not change", err)
	}
	s.Close()

	s = openTestStore(t, dir, Options{})
	got, err := s.GetSchedule(made.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cron != "*/5 * * * *" || got.Keep != (wire.Keep{Last: 3}) || got.LastRun == nil || *got.LastRun != run || !got.CreatedAt.Equal(made.CreatedAt) {
		t.Errorf("after reopening: %+v", got)
	}
	if err := s.DeleteSchedule(made.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordScheduleRun(made.ID, run); !errors.Is(err, ErrNotFound) {
		t.Errorf("RecordScheduleRun of a deleted schedule: %v, want ErrNotFound", err)
	}
	second, err := s.CreateSchedule(Schedule{VM: "vm-web", Volumes: []string{"web"}, Cron: "* * * * *", Keep: wire.Keep{Last: 1}})
	if err != nil || second.ID != "sched-2" {
		t.Errorf("a schedule after a deleted one: %+v, %v; want sched-2 (ids are never reused)", second, err)
	}
}
