# Drover cluster scenario: a mail VM, two web VMs and two database VMs on two
# hosts, with the walk-through of README.md. In the local lab:
#
#   terraform apply -var-file=../../.lab/lab.tfvars                          # all hosts in service
#   terraform apply -var-file=../../.lab/lab.tfvars -var alpha_maintenance=true  # alpha's VMs move to beta, live
#   terraform apply -var-file=../../.lab/lab.tfvars                          # and back
#   terraform apply -var-file=../../.lab/lab.tfvars -var alpha_failed=true   # alpha died: fenced, its VMs restart on beta

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

variable "alpha_maintenance" {
  description = "Take alpha out of service: its VMs move to beta, live."
  type        = bool
  default     = false
}

variable "alpha_failed" {
  description = "Declare alpha dead or cut off: it is fenced at the storage box and its VMs restart on beta, cold."
  type        = bool
  default     = false
}

provider "drover" {
  host {
    name        = "alpha"
    uri         = var.alpha_uri
    domain_type = "qemu"
    maintenance = var.alpha_maintenance
    failed      = var.alpha_failed
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

locals {
  # Where each VM may run. Spread groups keep the two web VMs, and the two
  # database VMs, on different hosts while both hosts are in service (they
  # share the host left while one is out, with a warning); preferred_hosts
  # is where a VM returns after maintenance.
  vms = {
    mail    = { preferred_hosts = ["alpha"], spread_group = null }
    "web-1" = { preferred_hosts = ["alpha"], spread_group = "web" }
    "web-2" = { preferred_hosts = ["beta"], spread_group = "web" }
    "db-1"  = { preferred_hosts = ["alpha"], spread_group = "db" }
    "db-2"  = { preferred_hosts = ["beta"], spread_group = "db" }
  }
}

resource "drover_volume" "disk" {
  for_each = local.vms
  name     = "${each.key}-disk"
  size_mib = 64
}

resource "drover_vm" "vm" {
  for_each   = local.vms
  name       = each.key
  vcpus      = 1
  memory_mib = 128
  kernel     = var.guest_kernel
  initrd     = var.guest_initrd
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.disk[each.key].id }]
  placement {
    preferred_hosts = each.value.preferred_hosts
    spread_group    = each.value.spread_group
  }
}

output "hosts" {
  description = "Where each VM runs."
  value       = { for name, vm in drover_vm.vm : name => vm.host }
}
