# An empty 10 GiB data disk. Raising size_mib later grows it in place,
# and a running VM that uses it sees the new size at once.
resource "drover_volume" "data" {
  name     = "db-data"
  size_mib = 10240
}

# A boot disk uploaded from a qcow2 (or raw) image on the machine running
# Terraform; its size defaults to the image's virtual size.
resource "drover_volume" "boot" {
  name   = "db-boot"
  source = { file = "${path.module}/debian-12-genericcloud-amd64.qcow2" }

  timeouts {
    create = "1h"
  }
}

# A clone of another volume, larger than its source.
resource "drover_volume" "staging" {
  name     = "db-data-staging"
  size_mib = 20480
  source   = { volume_id = drover_volume.data.id }
}

# A restore of a backup's first disk into a new volume.
resource "drover_volume" "restored" {
  name   = "db-boot-restored"
  source = { snapshot_id = drover_backup.nightly.disks[0].snapshot_id }
}
