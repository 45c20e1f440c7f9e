package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/schedule"
)

// TestAccBackupScheduleRunsByItselfKeepsTwoAndRestoresFromRestic: a lab
// VM writing pair records across two disks gets a manual drover_backup
// and a schedule every minute keeping 2, with restic. After three runs
// (about three minutes: the lab's drover-target runs them, no Terraform),
// two runs and the manual backup are kept, restic holds the two runs'
// disks and domain XML, and the disks dumped from restic become volumes
// (source.file) of a new VM that boots and resumes after the newest run's
// pair. Destroying the schedule keeps its backups.
func TestAccBackupScheduleRunsByItselfKeepsTwoAndRestoresFromRestic(t *testing.T) {
	if os.Getenv(resource.EnvTfAcc) != "" {
		if _, err := exec.LookPath("restic"); err != nil {
			t.Fatal("TF_ACC is set but restic is not installed: apt-get install restic (or make deps)")
		}
	}
	l := newVMLab(t)
	name := accName(t, "sched")
	restored := name + "-r"
	dir := t.TempDir()
	repo, pw := filepath.Join(dir, "restic"), filepath.Join(dir, "restic.pw")
	if err := os.WriteFile(pw, []byte("drover-acc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	restic := schedule.Restic{Repository: repo, PasswordFile: pw, CacheDir: filepath.Join(dir, "cache")}
	scheduled := fmt.Sprintf(`
resource "drover_backup" "manual" {
  vm_id = drover_vm.src.id
}

resource "drover_backup_schedule" "s" {
  vm_id    = drover_vm.src.id
  schedule = "* * * * *"
  keep {
    last = 2
  }
  restic {
    repository    = %q
    password_file = %q
  }
}
`, repo, pw)
	// The restore step also moves the schedule to once a year: no run
	// comes while drover_backups (read after that change) counts them.
	yearly := strings.Replace(scheduled, `"* * * * *"`, `"0 0 1 1 *"`, 1)
	restore := fmt.Sprintf(`
data "drover_backups" "src" {
  vm_id      = drover_vm.src.id
  depends_on = [drover_backup_schedule.s]
}

resource "drover_volume" "ra" {
  name   = "%[1]s-a"
  source = { file = "%[2]s/a.raw" }
}

resource "drover_volume" "rb" {
  name   = "%[1]s-b"
  source = { file = "%[2]s/b.raw" }
}

resource "drover_vm" "restored" {
  name       = %[1]q
  vcpus      = 1
  memory_mib = 128
  kernel     = %[3]q
  initrd     = %[4]q
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.ra.id }, { volume_id = drover_volume.rb.id }]
  placement {
    host = "beta"
  }
}
`, restored, dir, l.info.GuestKernel, l.info.GuestInitrd)

	var scheduleID string
	var runs []wire.ScheduleRun // the ok runs seen, oldest first
	var cut int                 // the pair in the newest run
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy: resource.ComposeAggregateTestCheckFunc(
			l.checkVMGone([]string{name, restored}, []string{name + "-a", name + "-b", restored + "-a", restored + "-b"}),
			func(*terraform.State) error { return l.checkScheduleGoneRunsKept(scheduleID) },
		),
		Steps: []resource.TestStep{
			{
				Config: l.backupConfig(name, scheduled),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_backup_schedule.s", "volumes.#", "2"),
					resource.TestCheckResourceAttr("drover_backup_schedule.s", "volumes.0", name+"-a"),
					resource.TestCheckResourceAttrSet("drover_backup_schedule.s", "next_run"),
					func(s *terraform.State) error {
						scheduleID = s.RootModule().Resources["drover_backup_schedule.s"].Primary.ID
						var err error
						if runs, err = l.waitRuns(scheduleID, 3, 4*time.Minute); err != nil {
							return err
						}
						return l.checkRunsKept(s, scheduleID, runs, restic, &cut)
					},
				),
			},
			{
				ResourceName:            "drover_backup_schedule.s",
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"next_run", "last_run"},
			},
			{
				PreConfig: func() {
					newest := runs[len(runs)-1].SetID
					for _, d := range []string{"a", "b"} {
						if err := resticDumpTo(restic, newest, "/"+name+"-"+d+".raw", filepath.Join(dir, d+".raw")); err != nil {
							t.Fatal(err)
						}
					}
				},
				Config: l.backupConfig(name, yearly+restore),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_backup_schedule.s", "schedule", "0 0 1 1 *"),
					l.checkVMOn("beta", restored, []string{restored + "-a", restored + "-b"}, false, true),
					resource.TestCheckResourceAttr("data.drover_backups.src", "backups.#", "3"),
					func(s *terraform.State) error {
						attrs := s.RootModule().Resources["data.drover_backups.src"].Primary.Attributes
						var fromSchedule, manual int
						for i := 0; i < 3; i++ {
							switch attrs[fmt.Sprintf("backups.%d.schedule_id", i)] {
							case scheduleID:
								fromSchedule++
								if c := attrs[fmt.Sprintf("backups.%d.consistency", i)]; c != "crash" {
									return fmt.Errorf("a scheduled run's consistency is %q, want crash", c)
								}
							case "":
								manual++
							}
						}
						if fromSchedule != 2 || manual != 1 {
							return fmt.Errorf("drover_backups lists %d runs of %s and %d manual backups, want 2 and 1", fromSchedule, scheduleID, manual)
						}
						zero := 0
						m, err := l.waitConsole("beta", restored, &zero, resumingRe, 90*time.Second)
						if err != nil {
							return err
						}
						if m[1] != strconv.Itoa(cut) {
							return fmt.Errorf("the VM restored from restic resumed after seq=%s, want %d (the newest run's)", m[1], cut)
						}
						t.Logf("restored from restic on beta: resumed after seq=%s", m[1])
						return nil
					},
				),
			},
		},
	})
}

// waitRuns waits until the schedule has run n times (ok) since the wait
// began and returns those runs, oldest first; a failed run is an error.
func (l vmLab) waitRuns(id string, n int, within time.Duration) ([]wire.ScheduleRun, error) {
	var runs []wire.ScheduleRun
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		s, err := l.target.GetSchedule(context.Background(), id)
		if err != nil {
			return nil, err
		}
		r := s.LastRun
		if r == nil || len(runs) > 0 && !r.At.After(runs[len(runs)-1].At) {
			continue
		}
		if r.Status != "ok" {
			return nil, fmt.Errorf("run of %s at %s failed: %s", id, r.At, r.Error)
		}
		if runs = append(runs, *r); len(runs) == n {
			return runs, nil
		}
	}
	return nil, fmt.Errorf("schedule %s ran %d times in %s, want %d", id, len(runs), within, n)
}

// checkRunsKept checks that the last two runs and the manual backup are
// kept, that the newest run cut both disks at one instant (the pairs
// agree), and that restic holds both disks and the domain XML of the two
// runs kept, and nothing of the first.
func (l vmLab) checkRunsKept(s *terraform.State, id string, runs []wire.ScheduleRun, restic schedule.Restic, cut *int) error {
	ctx := context.Background()
	sets, err := l.target.ListSnapshotSets(ctx, map[string]string{cluster.LabelSchedule: id})
	if err != nil {
		return err
	}
	var ids []string
	for _, set := range sets {
		ids = append(ids, set.ID)
	}
	want := []string{runs[2].SetID, runs[1].SetID}
	if !slices.Equal(ids, want) {
		return fmt.Errorf("schedule %s keeps %v, want the last two runs %v", id, ids, want)
	}
	if _, err := l.target.GetSnapshotSet(ctx, s.RootModule().Resources["drover_backup.manual"].Primary.ID); err != nil {
		return fmt.Errorf("the manual backup: %w", err)
	}
	newest := sets[0]
	if newest.Labels[cluster.LabelConsistency] != "crash" || newest.Labels[cluster.LabelVMID] == "" || len(newest.Snapshots) != 2 {
		return fmt.Errorf("the newest run %s: labels %v, %d snapshots", newest.ID, newest.Labels, len(newest.Snapshots))
	}
	a, err := l.snapshotBytes(newest.Snapshots[0].ID)
	if err != nil {
		return err
	}
	b, err := l.snapshotBytes(newest.Snapshots[1].ID)
	if err != nil {
		return err
	}
	ra, rb := highestRecord(a), highestRecord(b)
	if ra == 0 || (rb != ra && rb != ra+1) {
		return fmt.Errorf("the newest run's disks disagree: vda at seq %d, vdb at %d", ra, rb)
	}
	*cut = ra
	xml, err := l.target.SnapshotSetAttachment(ctx, newest.ID, cluster.DomainAttachment)
	if err != nil || !bytes.Contains(xml, []byte("<domain")) {
		return fmt.Errorf("the newest run's domain.xml: %q, %v", xml, err)
	}
	snaps, err := restic.Snapshots(ctx, []string{"schedule=" + id})
	if err != nil {
		return err
	}
	bySet := map[string]int{}
	for _, rs := range snaps {
		for _, tag := range rs.Tags {
			if set, ok := strings.CutPrefix(tag, "set="); ok {
				bySet[set]++
			}
		}
	}
	if len(snaps) != 6 || bySet[runs[2].SetID] != 3 || bySet[runs[1].SetID] != 3 {
		return fmt.Errorf("restic holds %d snapshots of %s by set %v, want 3 of each kept run (%v)", len(snaps), id, bySet, want)
	}
	img := resticDumpBytes(restic, runs[2].SetID, "/"+newest.Snapshots[0].Volume+".raw")
	if !bytes.Equal(img, a) {
		return errors.New("restic's image of the newest run's first disk differs from its snapshot")
	}
	return nil
}

// checkScheduleGoneRunsKept checks that the schedule is gone from the
// target while the runs it made are still there, then deletes them (the
// test's own clean-up).
func (l vmLab) checkScheduleGoneRunsKept(id string) error {
	ctx := context.Background()
	if _, err := l.target.GetSchedule(ctx, id); err == nil {
		return fmt.Errorf("schedule %s is still on the target after destroy", id)
	}
	sets, err := l.target.ListSnapshotSets(ctx, map[string]string{cluster.LabelSchedule: id})
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range sets {
		errs = append(errs, l.target.DeleteSnapshotSet(ctx, s.ID))
	}
	if len(sets) != 2 {
		errs = append(errs, fmt.Errorf("destroying schedule %s left %d of its runs, want its 2 kept", id, len(sets)))
	}
	return errors.Join(errs...)
}

// resticDumpTo writes the file path of set's restic snapshots to dst.
func resticDumpTo(r schedule.Restic, setID, path, dst string) error {
	b := resticDumpBytes(r, setID, path)
	if b == nil {
		return fmt.Errorf("restic dump of %s from %s gave nothing", path, setID)
	}
	return os.WriteFile(dst, b, 0o600)
}

func resticDumpBytes(r schedule.Restic, setID, path string) []byte {
	cmd := exec.Command("restic", "dump", "--tag", "set="+setID, "--path", path, "latest", path)
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+r.Repository, "RESTIC_PASSWORD_FILE="+r.PasswordFile, "RESTIC_CACHE_DIR="+r.CacheDir)
	out, err := cmd.Output()
	if err != nil {
		return nil
	}
	return out
}
