package provider

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// TestBackupsListScheduledRunsLikeAnyBackupNewestFirst reads drover_backups
// with the real terraform CLI from an in-process drover-target holding a
// manual backup of a VM and two runs of its schedule (made through the
// API as the daemon's runs label them), and one of another VM.
func TestBackupsListScheduledRunsLikeAnyBackupNewestFirst(t *testing.T) {
	target := apitest.New(t)
	c, err := storage.New(target.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "web", SizeMiB: 1}); err != nil {
		t.Fatal(err)
	}
	const vm = "6695eb01-f6a4-8304-79aa-97f8502e193f"
	var ids []string
	for _, labels := range []map[string]string{
		{"drover.vm-id": vm, "drover.vm-name": "web", "drover.consistency": "filesystem", "drover.pause-ms": "12"},
		{"drover.vm-id": vm, "drover.vm-name": "web", "drover.consistency": "crash", "drover.pause-ms": "1", "drover.schedule": "sched-4"},
		{"drover.vm-id": "other", "drover.schedule": "sched-5"},
		{"drover.vm-id": vm, "drover.vm-name": "web", "drover.consistency": "crash", "drover.pause-ms": "2", "drover.schedule": "sched-4"},
	} {
		s, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"web"}, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		time.Sleep(5 * time.Millisecond) // distinct created_at
	}
	config := fmt.Sprintf(`
provider "drover" {
  host {
    name = "alpha"
    uri  = "test:///default"
  }
  storage {
    endpoint = %q
    token    = %q
    portal   = "127.0.0.1:3260"
  }
}

data "drover_backups" "web" {
  vm_id = %q
}
`, target.URL, apitest.Token, vm)
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		Steps: []resource.TestStep{{
			Config: config,
			Check: resource.ComposeAggregateTestCheckFunc(
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.#", "3"),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.0.id", ids[3]),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.0.schedule_id", "sched-4"),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.0.consistency", "crash"),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.0.pause_ms", "2"),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.1.id", ids[1]),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.1.schedule_id", "sched-4"),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.2.id", ids[0]),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.2.schedule_id", ""),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.2.consistency", "filesystem"),
				resource.TestCheckResourceAttr("data.drover_backups.web", "backups.2.disks.0.volume_id", "web"),
			),
		}},
	})
}
