# Whole-VM backup and restore on the local lab (make lab first); README.md
# walks through it.

terraform {
  required_providers {
    drover = {
      source = "drover/drover"
    }
  }
}

variable "alpha_uri" { type = string }
variable "beta_uri" { type = string }
variable "storage_endpoint" { type = string }
variable "storage_portal" { type = string }
variable "guest_kernel" { type = string }
variable "guest_initrd" { type = string }
variable "storage_token" {
  type      = string
  sensitive = true
}
variable "restore" {
  type    = bool
  default = false
}
variable "export_path" {
  type    = string
  default = null
}

provider "drover" {
  host {
    name        = "alpha"
    uri         = var.alpha_uri
    domain_type = "qemu"
  }
  host {
    name        = "beta"
    uri         = var.beta_uri
    domain_type = "qemu"
  }
  storage {
    endpoint = var.storage_endpoint
    token    = var.storage_token
    portal   = var.storage_portal
  }
}

# The VM to protect: a boot disk and a data disk. The lab guest writes the
# same record to both disks every second ("pair seq=N" on its console).
resource "drover_volume" "app_root" {
  name     = "app-root"
  size_mib = 64
}

resource "drover_volume" "app_data" {
  name     = "app-data"
  size_mib = 64
}

resource "drover_vm" "app" {
  name       = "app"
  vcpus      = 1
  memory_mib = 128
  kernel     = var.guest_kernel
  initrd     = var.guest_initrd
  cmdline    = "console=ttyS0 no_timer_check"
  disks = [
    { volume_id = drover_volume.app_root.id },
    { volume_id = drover_volume.app_data.id },
  ]
  placement {
    host = "alpha"
  }
}

# Both disks cut at one instant, the definition kept with them. Setting
# export_path (a new, empty folder) takes a new backup and copies it there.
resource "drover_backup" "app" {
  vm_id       = drover_vm.app.id
  export_path = var.export_path
}

# Restore: a volume per disk from the backup's snapshots, and a new VM on
# them, beside the original (new name, new UUID, new MACs).
resource "drover_volume" "restored" {
  count  = var.restore ? length(drover_backup.app.disks) : 0
  name   = "app-restored-${count.index}"
  source = { snapshot_id = drover_backup.app.disks[count.index].snapshot_id }
}

resource "drover_vm" "restored" {
  count      = var.restore ? 1 : 0
  name       = "app-restored"
  vcpus      = 1
  memory_mib = 128
  kernel     = var.guest_kernel
  initrd     = var.guest_initrd
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [for v in drover_volume.restored : { volume_id = v.id }]
  placement {
    host = "beta"
  }
}

data "drover_backups" "app" {
  vm_id      = drover_vm.app.id
  depends_on = [drover_backup.app]
}

output "backup" {
  value = {
    id          = drover_backup.app.id
    consistency = drover_backup.app.consistency
    pause_ms    = drover_backup.app.pause_ms
    disks       = drover_backup.app.disks
  }
}

output "backups_of_app" {
  value = [for b in data.drover_backups.app.backups : "${b.id} ${b.created_at} ${b.consistency}"]
}
