package provider

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/drover/terraform-provider-drover/internal/lab"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// volumeAcc is what an acceptance test of drover_volume needs: the lab and
// a client of its target, to ask it for the truth.
type volumeAcc struct {
	info   lab.Info
	client *storage.Client
	root   string // the repository, whose .lab holds the target's files
}

func newVolumeAcc(t *testing.T) volumeAcc {
	t.Helper()
	info := accLab(t)
	client, err := storage.New(info.StorageEndpoint, info.StorageToken)
	if err != nil {
		t.Fatal(err)
	}
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return volumeAcc{info: info, client: client, root: root}
}

// providerBlock is the provider configured for the lab.
func (a volumeAcc) providerBlock() string {
	return fmt.Sprintf(`
provider "drover" {%s%s
  storage {
    endpoint = %q
    token    = %q
    portal   = %q
  }
}
`, labHostBlock("alpha", a.info.AlphaURI), labHostBlock("beta", a.info.BetaURI),
		a.info.StorageEndpoint, a.info.StorageToken, a.info.StoragePortal)
}

// uniqueName is a volume name no other test run uses.
func uniqueName(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "acc-" + what + "-" + hex.EncodeToString(b)
}

// checkDestroyed proves that no drover_volume of the state is left on the
// target.
func (a volumeAcc) checkDestroyed(s *terraform.State) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, rs := range s.RootModule().Resources {
		if rs.Type != "drover_volume" {
			continue
		}
		_, err := a.client.GetVolume(ctx, rs.Primary.ID)
		switch {
		case err == nil:
			return fmt.Errorf("volume %s is still on the target", rs.Primary.ID)
		case !errors.Is(err, storage.ErrNotFound):
			return fmt.Errorf("ask the target about volume %s: %w", rs.Primary.ID, err)
		}
	}
	return nil
}

// checkOnTarget compares the state of resource with the target's volume:
// same name, size, IQN and LUN, every lab host allowed, and CHAP.
func (a volumeAcc) checkOnTarget(resourceName string, sizeMiB int64) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[resourceName]
		if !ok {
			return fmt.Errorf("%s is not in the state", resourceName)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		v, err := a.client.GetVolume(ctx, rs.Primary.ID)
		if err != nil {
			return fmt.Errorf("ask the target about %s: %w", rs.Primary.ID, err)
		}
		attrs := rs.Primary.Attributes
		if v.SizeMiB != sizeMiB || attrs["size_mib"] != strconv.FormatInt(sizeMiB, 10) {
			return fmt.Errorf("%s: target size %d MiB, state %s; want %d", v.Name, v.SizeMiB, attrs["size_mib"], sizeMiB)
		}
		if attrs["iqn"] != v.IQN || v.IQN == "" || attrs["lun"] != strconv.FormatUint(v.LUN, 10) {
			return fmt.Errorf("%s: state iqn %q lun %s, target %q %d", v.Name, attrs["iqn"], attrs["lun"], v.IQN, v.LUN)
		}
		want := []string{"iqn.2026-11.io.drover.host:alpha", "iqn.2026-11.io.drover.host:beta"}
		got := slices.Sorted(slices.Values(v.Initiators))
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s: initiators on the target %q, want %q", v.Name, got, want)
		}
		if v.CHAP == nil || v.CHAP.User != "drover" {
			return fmt.Errorf("%s: CHAP on the target %+v, want user drover", v.Name, v.CHAP)
		}
		if attrs["initiators.#"] != "2" || attrs["initiators.0"] != want[0] || attrs["initiators.1"] != want[1] || attrs["chap_user"] != "drover" {
			return fmt.Errorf("%s: state initiators %s [%s %s], chap_user %q; want %q and drover", v.Name,
				attrs["initiators.#"], attrs["initiators.0"], attrs["initiators.1"], attrs["chap_user"], want)
		}
		return nil
	}
}

// checkContent compares the volume's backing file on the target with want
// followed by zeros up to the volume's size.
func (a volumeAcc) checkContent(name string, want []byte, sizeMiB int64) resource.TestCheckFunc {
	return func(*terraform.State) error {
		got, err := os.ReadFile(filepath.Join(a.root, ".lab", "target", "data", "volumes", name+".raw"))
		if err != nil {
			return fmt.Errorf("read the backing file of %s: %w", name, err)
		}
		if int64(len(got)) != sizeMiB*storage.MiB {
			return fmt.Errorf("%s: backing file is %d bytes, want %d MiB", name, len(got), sizeMiB)
		}
		if !bytes.Equal(got[:len(want)], want) {
			return fmt.Errorf("%s: content differs from the source in the first %d bytes", name, len(want))
		}
		if i := bytes.IndexFunc(got[len(want):], func(r rune) bool { return r != 0 }); i >= 0 {
			return fmt.Errorf("%s: byte %d past the source's content is not zero", name, len(want)+i)
		}
		return nil
	}
}

// pattern is n bytes no two MiB of which are alike.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/storage.MiB + 1)
	}
	return b
}

// sourceVolume makes a volume holding content through the storage client,
// deleted when the test ends.
func (a volumeAcc) sourceVolume(t *testing.T, name string, sizeMiB int64, content []byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := a.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: name, SizeMiB: sizeMiB}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.client.DeleteVolume(context.Background(), name, true); err != nil && !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("delete source volume %s: %v", name, err)
		}
	})
	if err := a.client.UploadVolume(ctx, name, bytes.NewReader(content), storage.FormatRaw); err != nil {
		t.Fatal(err)
	}
}

func TestAccVolumeEmptyIsCreatedGrownRefusedToShrinkAndImported(t *testing.T) {
	acc := newVolumeAcc(t)
	name := uniqueName(t, "vol")
	// Timeouts are not imported, so the import step leaves them out.
	config := func(sizeMiB int, withTimeouts bool) string {
		timeouts := ""
		if withTimeouts {
			timeouts = `
  timeouts {
    create = "5m"
    update = "5m"
  }`
		}
		return acc.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "data" {
  name     = %q
  size_mib = %d%s
}

data "drover_volume" "data" {
  name = drover_volume.data.name
}
`, name, sizeMiB, timeouts)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             acc.checkDestroyed,
		Steps: []resource.TestStep{
			{
				Config: config(8, true),
				Check: resource.ComposeAggregateTestCheckFunc(
					acc.checkOnTarget("drover_volume.data", 8),
					acc.checkContent(name, nil, 8),
					resource.TestCheckResourceAttr("drover_volume.data", "id", name),
					resource.TestCheckResourceAttr("drover_volume.data", "lun", "0"),
					resource.TestCheckResourceAttr("drover_volume.data", "iqn", "iqn.2026-11.io.drover:"+name),
					resource.TestCheckResourceAttrPair("data.drover_volume.data", "id", "drover_volume.data", "id"),
					resource.TestCheckResourceAttrPair("data.drover_volume.data", "iqn", "drover_volume.data", "iqn"),
					resource.TestCheckResourceAttrPair("data.drover_volume.data", "lun", "drover_volume.data", "lun"),
					resource.TestCheckResourceAttr("data.drover_volume.data", "size_mib", "8"),
				),
			},
			{
				Config: config(16, true),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("drover_volume.data", plancheck.ResourceActionUpdate),
				}},
				Check: acc.checkOnTarget("drover_volume.data", 16),
			},
			{
				Config:      config(8, true),
				ExpectError: regexp.MustCompile(`(?s)Volume cannot shrink.*size_mib is 8 MiB.*create a new volume`),
			},
			{
				ResourceName:            "drover_volume.data",
				ImportState:             true,
				ImportStateId:           name,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
			{
				// Imported with an import block, the configuration plans
				// no change.
				Config:          config(16, false),
				ResourceName:    "drover_volume.data",
				ImportState:     true,
				ImportStateKind: resource.ImportBlockWithID,
				ImportStateId:   name,
			},
		},
	})
}

func TestAccVolumeIsClonedFromAVolume(t *testing.T) {
	acc := newVolumeAcc(t)
	src, same, bigger := uniqueName(t, "src"), uniqueName(t, "clone"), uniqueName(t, "clone")
	content := pattern(3*storage.MiB + 4096)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             acc.checkDestroyed,
		Steps: []resource.TestStep{{
			PreConfig: func() { acc.sourceVolume(t, src, 4, content) },
			Config: acc.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "same" {
  name   = %q
  source = { volume_id = %q }
}

resource "drover_volume" "bigger" {
  name     = %q
  size_mib = 12
  source   = { volume_id = %q }
}
`, same, src, bigger, src),
			Check: resource.ComposeAggregateTestCheckFunc(
				acc.checkOnTarget("drover_volume.same", 4),
				acc.checkContent(same, content, 4),
				acc.checkOnTarget("drover_volume.bigger", 12),
				acc.checkContent(bigger, content, 12),
			),
		}},
	})
}

func TestAccVolumeIsRestoredFromASnapshot(t *testing.T) {
	acc := newVolumeAcc(t)
	src, restored := uniqueName(t, "src"), uniqueName(t, "restore")
	content := pattern(2 * storage.MiB)
	var snapshot wire.Snapshot
	// The snapshot is taken in PreConfig; the configuration reads its id
	// from this file when planning.
	idFile := filepath.Join(t.TempDir(), "snapshot_id")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             acc.checkDestroyed,
		Steps: []resource.TestStep{{
			PreConfig: func() {
				acc.sourceVolume(t, src, 2, content)
				var err error
				if snapshot, err = acc.client.CreateSnapshot(context.Background(), src); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(idFile, []byte(snapshot.ID), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := acc.client.DeleteSnapshot(context.Background(), snapshot.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
						t.Errorf("delete snapshot %s: %v", snapshot.ID, err)
					}
				})
				// The source changes after the snapshot: the restore must
				// have the content of the snapshot, not the volume's.
				if err := acc.client.UploadVolume(context.Background(), src, bytes.NewReader(pattern(100)), storage.FormatRaw); err != nil {
					t.Fatal(err)
				}
			},
			Config: acc.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "restored" {
  name   = %q
  source = { snapshot_id = trimspace(file(%q)) }
}
`, restored, idFile),
			Check: resource.ComposeAggregateTestCheckFunc(
				acc.checkOnTarget("drover_volume.restored", 2),
				acc.checkContent(restored, content, 2),
				func(s *terraform.State) error {
					return resource.TestCheckResourceAttr("drover_volume.restored", "source.snapshot_id", snapshot.ID)(s)
				},
			),
		}},
	})
}

func TestAccVolumeIsUploadedFromARawAndAQcow2File(t *testing.T) {
	acc := newVolumeAcc(t)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatalf("qemu-img is needed to make the qcow2 image (package qemu-utils): %v", err)
	}
	dir := t.TempDir()
	content := pattern(3*storage.MiB + 1000) // not whole MiB: the volume rounds up
	raw, qcow2 := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(raw, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	fromRaw, fromQcow2 := uniqueName(t, "raw"), uniqueName(t, "qcow2")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             acc.checkDestroyed,
		Steps: []resource.TestStep{{
			Config: acc.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "raw" {
  name   = %q
  source = { file = %q }
}

resource "drover_volume" "qcow2" {
  name     = %q
  size_mib = 6
  source   = { file = %q }
}
`, fromRaw, raw, fromQcow2, qcow2),
			ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
				// The size of an upload is known when planning.
				plancheck.ExpectKnownValue("drover_volume.raw", tfjsonpath.New("size_mib"), knownvalue.Int64Exact(4)),
			}},
			Check: resource.ComposeAggregateTestCheckFunc(
				acc.checkOnTarget("drover_volume.raw", 4),
				acc.checkContent(fromRaw, content, 4),
				acc.checkOnTarget("drover_volume.qcow2", 6),
				acc.checkContent(fromQcow2, content, 6),
			),
		}},
	})
}

func TestAccVolumeFromAMissingVolumeIsRefused(t *testing.T) {
	acc := newVolumeAcc(t)
	missing := uniqueName(t, "missing")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             acc.checkDestroyed,
		Steps: []resource.TestStep{{
			Config: acc.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "clone" {
  name   = %q
  source = { volume_id = %q }
}
`, uniqueName(t, "clone"), missing),
			ExpectError: regexp.MustCompile(`source volume "` + missing + `" does not exist`),
		}},
	})
}
