package provider

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

var diskRecordRe = regexp.MustCompile(`DROVER seq=(\d+) sum=([0-9a-f]{32})`)

// highestRecord is the highest sequence number with a valid checksum that
// the lab guest wrote into a disk image, or 0.
func highestRecord(image []byte) int {
	highest := 0
	for _, m := range diskRecordRe.FindAllSubmatch(image, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		sum := md5.Sum([]byte("seq=" + string(m[1])))
		if hex.EncodeToString(sum[:]) == string(m[2]) && n > highest {
			highest = n
		}
	}
	return highest
}

// snapshotBytes downloads a snapshot whole.
func (l vmLab) snapshotBytes(id string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := l.target.DownloadSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// volumeBytes reads a volume through a snapshot of it, which it deletes.
func (l vmLab) volumeBytes(volume string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, err := l.target.CreateSnapshot(ctx, volume)
	if err != nil {
		return nil, err
	}
	defer func() { _ = l.target.DeleteSnapshot(context.Background(), snap.ID) }()
	// Without reflinks (the lab's ext4) the snapshot is copied first.
	if _, err := l.target.WaitSnapshot(ctx, snap.ID); err != nil {
		return nil, err
	}
	return l.snapshotBytes(snap.ID)
}

// backupConfig is a VM writing pair records across two disks, and what the
// step adds after it.
func (l vmLab) backupConfig(name, extra string) string {
	return l.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "a" {
  name     = "%[1]s-a"
  size_mib = 16
}

resource "drover_volume" "b" {
  name     = "%[1]s-b"
  size_mib = 16
}

resource "drover_vm" "src" {
  name       = %[1]q
  vcpus      = 1
  memory_mib = 128
  kernel     = %[2]q
  initrd     = %[3]q
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.a.id }, { volume_id = drover_volume.b.id }]
  placement {
    host = "alpha"
  }
}
`, name, l.info.GuestKernel, l.info.GuestInitrd) + extra
}

func TestAccBackupIsTheVMAsOfOneInstantAndRestoresBesideIt(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "bak")
	restored := name + "-r"
	export := filepath.Join(t.TempDir(), "export")
	backup := fmt.Sprintf(`
resource "drover_backup" "b" {
  vm_id       = drover_vm.src.id
  export_path = %q
}

data "drover_backups" "src" {
  vm_id      = drover_vm.src.id
  depends_on = [drover_backup.b]
}
`, export)
	restore := fmt.Sprintf(`
resource "drover_volume" "ra" {
  name   = "%[1]s-a"
  source = { snapshot_id = drover_backup.b.disks[0].snapshot_id }
}

resource "drover_volume" "rb" {
  name   = "%[1]s-b"
  source = { snapshot_id = drover_backup.b.disks[1].snapshot_id }
}

resource "drover_volume" "from_export" {
  name   = "%[1]s-x"
  source = { file = "%[2]s/%[3]s-a.raw" }
}

resource "drover_vm" "restored" {
  name       = %[1]q
  vcpus      = 1
  memory_mib = 128
  kernel     = %[4]q
  initrd     = %[5]q
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.ra.id }, { volume_id = drover_volume.rb.id }]
  placement {
    host = "beta"
  }
}
`, restored, export, name, l.info.GuestKernel, l.info.GuestInitrd)

	var before, cut int // the last pair before the backup; the pair in the backup
	var snapA []byte
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy: resource.ComposeAggregateTestCheckFunc(
			l.checkVMGone([]string{name, restored}, []string{name + "-a", name + "-b", restored + "-a", restored + "-b", restored + "-x"}),
			l.checkNoBackups(name),
		),
		Steps: []resource.TestStep{
			{
				Config: l.backupConfig(name, ""),
				Check: func(*terraform.State) error {
					// A few pairs first, so that "before" means something.
					for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
						n, err := l.lastPair("alpha", name)
						if err != nil {
							return err
						}
						if before = n; n >= 3 {
							return nil
						}
					}
					return fmt.Errorf("the guest wrote only %d pairs in 90 s", before)
				},
			},
			{
				// The guest is paused (it has no agent) while both disks are
				// cut: the two disks agree, at a pair written between the
				// last one seen before the apply and the first after it.
				PreConfig: func() {
					if n, err := l.lastPair("alpha", name); err == nil {
						before = n
					}
				},
				Config: l.backupConfig(name, backup),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_backup.b", "consistency", "crash"),
					resource.TestCheckResourceAttr("drover_backup.b", "vm_name", name),
					resource.TestCheckResourceAttr("drover_backup.b", "disks.#", "2"),
					resource.TestCheckResourceAttr("drover_backup.b", "disks.0.volume_id", name+"-a"),
					resource.TestCheckResourceAttr("drover_backup.b", "disks.1.volume_id", name+"-b"),
					resource.TestCheckResourceAttrSet("drover_backup.b", "pause_ms"),
					resource.TestCheckResourceAttr("data.drover_backups.src", "backups.#", "1"),
					resource.TestCheckResourceAttrPair("data.drover_backups.src", "backups.0.id", "drover_backup.b", "id"),
					resource.TestCheckResourceAttrPair("data.drover_backups.src", "backups.0.pause_ms", "drover_backup.b", "pause_ms"),
					resource.TestCheckResourceAttrPair("data.drover_backups.src", "backups.0.disks.1.snapshot_id", "drover_backup.b", "disks.1.snapshot_id"),
					func(s *terraform.State) error {
						after, err := l.lastPair("alpha", name)
						if err != nil {
							return err
						}
						attrs := s.RootModule().Resources["drover_backup.b"].Primary.Attributes
						if attrs["pause_ms"] == "0" {
							return errors.New("pause_ms is 0 for a running VM paused for its backup")
						}
						if snapA, err = l.snapshotBytes(attrs["disks.0.snapshot_id"]); err != nil {
							return err
						}
						snapB, err := l.snapshotBytes(attrs["disks.1.snapshot_id"])
						if err != nil {
							return err
						}
						a, b := highestRecord(snapA), highestRecord(snapB)
						t.Logf("pairs: %d before the apply, vdb %d and vda %d in the backup, %d after; paused %s ms",
							before, b, a, after, attrs["pause_ms"])
						// The guest writes vdb, then vda: one instant has vda
						// at the pair and vdb at it or one ahead.
						if b != a && b != a+1 {
							return fmt.Errorf("the disks disagree: vda at seq %d, vdb at %d", a, b)
						}
						if a < before || a > after {
							return fmt.Errorf("the backup holds seq %d, want one from %d to %d", a, before, after)
						}
						cut = a
						return l.checkExport(export, name, attrs, snapA, snapB)
					},
				),
			},
			{
				// Import by id gives the same backup.
				Config:                  l.backupConfig(name, backup),
				ResourceName:            "drover_backup.b",
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"export_path", "timeouts"},
			},
			{
				// Restored beside the original: new name, new UUID; it
				// resumes after exactly the backed-up pair, while the
				// original has written more since.
				Config: l.backupConfig(name, backup+restore),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMOn("beta", restored, []string{restored + "-a", restored + "-b"}, false, true),
					l.checkVMOn("alpha", name, []string{name + "-a", name + "-b"}, false, true),
					func(s *terraform.State) error {
						src := s.RootModule().Resources["drover_vm.src"].Primary.Attributes["id"]
						dst := s.RootModule().Resources["drover_vm.restored"].Primary.Attributes["id"]
						if src == dst {
							return fmt.Errorf("the restored VM has the original's UUID %s", src)
						}
						zero := 0
						m, err := l.waitConsole("beta", restored, &zero, resumingRe, 90*time.Second)
						if err != nil {
							return err
						}
						if got := m[1]; got != strconv.Itoa(cut) {
							return fmt.Errorf("the restored VM resumed after seq=%s, want %d (the backup's)", got, cut)
						}
						now, err := l.lastPair("alpha", name)
						if err != nil {
							return err
						}
						if now <= cut {
							return fmt.Errorf("the original is at seq %d, not past the backup's %d", now, cut)
						}
						// A volume made from the exported image is the
						// snapshot, byte for byte.
						got, err := l.volumeBytes(restored + "-x")
						if err != nil {
							return err
						}
						if !bytes.Equal(got, snapA) {
							return errors.New("the volume made from the exported image differs from the snapshot")
						}
						return nil
					},
				),
			},
		},
	})
}

// checkNoBackups checks that the storage box keeps no backup of the VM
// named vm.
func (l vmLab) checkNoBackups(vm string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		sets, err := l.target.ListSnapshotSets(context.Background(), map[string]string{cluster.LabelVMName: vm})
		if err != nil {
			return err
		}
		if len(sets) > 0 {
			return fmt.Errorf("VM %s still has %d backups on the target, want none", vm, len(sets))
		}
		return nil
	}
}

// checkExport proves that the export has the domain XML and both disks,
// that every checksum in the manifest matches its file, and that the disk
// images are the snapshots byte for byte.
func (l vmLab) checkExport(dir, vm string, attrs map[string]string, snaps ...[]byte) error {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return err
	}
	var m cluster.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("manifest.json: %w", err)
	}
	if m.VMName != vm || m.Backup != attrs["id"] || len(m.Files) != 3 {
		return fmt.Errorf("manifest %+v: want VM %s, backup %s, three files", m, vm, attrs["id"])
	}
	for _, f := range m.Files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.SizeBytes {
			return fmt.Errorf("%s: sha256 %x, %d bytes; the manifest says %s, %d", f.Name, sum, len(data), f.SHA256, f.SizeBytes)
		}
	}
	xml, err := os.ReadFile(filepath.Join(dir, "domain.xml"))
	if err != nil || !bytes.Contains(xml, []byte("<name>"+vm+"</name>")) {
		return fmt.Errorf("domain.xml does not define %s (%v)", vm, err)
	}
	for i, snap := range snaps {
		img, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s-%c.raw", vm, 'a'+i)))
		if err != nil {
			return err
		}
		if !bytes.Equal(img, snap) {
			return fmt.Errorf("exported disk %d differs from its snapshot", i)
		}
	}
	return nil
}

func TestAccBackupOfAStoppedVMAndOfAVMWhoseVolumeIsGone(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "bks")
	doomed := name + "-doomed"
	ctx := context.Background()
	stopped := l.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "a" {
  name     = "%[1]s-a"
  size_mib = 8
}

resource "drover_vm" "stopped" {
  name       = %[1]q
  vcpus      = 1
  memory_mib = 64
  kernel     = %[2]q
  initrd     = %[3]q
  running    = false
  disks      = [{ volume_id = drover_volume.a.id }]
  placement {
    host = "alpha"
  }
}
`, name, l.info.GuestKernel, l.info.GuestInitrd)
	backup := `
resource "drover_backup" "stopped" {
  vm_id = drover_vm.stopped.id
}
`
	// broken backs up a VM made outside Terraform whose disk's volume is
	// then deleted on the target (Terraform would refuse to plan a
	// drover_vm with a missing volume; a VM outside it can lose one).
	brokenID := fmt.Sprintf("%08x-0000-4000-8000-%012x", time.Now().Unix()&0xffffffff, time.Now().UnixNano()&0xffffffffffff)
	broken := fmt.Sprintf(`
resource "drover_backup" "broken" {
  vm_id = %q
}
`, brokenID)
	var volumeBefore []byte
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		PreCheck: func() {
			// A volume outside Terraform, deleted under the VM later.
			if _, err := l.target.CreateVolume(ctx, wire.CreateVolumeRequest{Name: doomed, SizeMiB: 8}); err != nil {
				t.Fatal(err)
			}
		},
		CheckDestroy: l.checkVMGone([]string{name}, []string{name + "-a"}),
		Steps: []resource.TestStep{
			{
				Config: stopped + backup,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_backup.stopped", "pause_ms", "0"),
					resource.TestCheckResourceAttr("drover_backup.stopped", "consistency", "filesystem"),
					resource.TestCheckResourceAttr("drover_backup.stopped", "disks.#", "1"),
					func(*terraform.State) error {
						snaps, err := l.target.ListSnapshots(ctx, name+"-a")
						if err != nil || len(snaps) != 1 {
							return fmt.Errorf("snapshots of %s-a: %d, %v; want the backup's one", name, len(snaps), err)
						}
						volumeBefore, err = l.volumeBytes(name + "-a")
						return err
					},
				),
			},
			{
				// Destroying the backup removes its snapshot and nothing else.
				Config: stopped,
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkNoSnapshots(name+"-a"),
					l.checkVMOn("alpha", name, []string{name + "-a"}, false, false),
					func(*terraform.State) error {
						after, err := l.volumeBytes(name + "-a")
						if err != nil {
							return err
						}
						if !bytes.Equal(after, volumeBefore) {
							return errors.New("the volume changed when its backup was destroyed")
						}
						return nil
					},
				),
			},
			{
				// The VM's volume is gone from the target: the backup
				// fails at plan time, naming it.
				PreConfig: func() {
					vol, err := l.target.GetVolume(ctx, doomed)
					if err != nil {
						t.Fatal(err)
					}
					vm := hypervisor.VM{UUID: brokenID, Name: name + "-2", Type: "qemu", MemoryMiB: 64, MaxMemoryMiB: 64, VCPUs: 1, MaxVCPUs: 1,
						Boot:    hypervisor.Boot{Kernel: l.info.GuestKernel, Initrd: l.info.GuestInitrd},
						Storage: hypervisor.Storage{Portal: l.info.StoragePortal, Initiator: hypervisor.HostInitiator("alpha")},
						Disks:   []hypervisor.Disk{{Volume: doomed, IQN: vol.IQN, LUN: vol.LUN}}}
					if _, err := l.libvirt.DefineVM(ctx, l.info.AlphaURI, vm); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = l.libvirt.Remove(context.Background(), l.info.AlphaURI, vm.Name) })
					if err := l.target.DeleteVolume(ctx, doomed, true); err != nil {
						t.Fatal(err)
					}
				},
				Config:      stopped + broken,
				ExpectError: words("Unable to back up VM", fmt.Sprintf("is volume %q, which is gone from the storage target", doomed)),
			},
		},
	})
}
