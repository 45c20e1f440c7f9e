# Drover quickstart: the local lab's two hosts (make demo applies this with
# -var-file=.lab/lab.tfvars, which `make lab` writes).

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

# Read after the VMs are in place, so that the summary shows them.
data "drover_hosts" "lab" {
  depends_on = [drover_vm.web1, drover_vm.web2]
}

# Two empty volumes on the storage box: the VMs' disks. The lab guest writes a
# record to its disk every second, so you can watch the disk being used.
resource "drover_volume" "web1" {
  name     = "web1-disk"
  size_mib = 64
}

resource "drover_volume" "web2" {
  name     = "web2-disk"
  size_mib = 64
}

# Two tiny VMs booting the lab's kernel and busybox initramfs, one per host.
# cloud_init becomes a seed volume (NoCloud) that the guest reads at boot.
resource "drover_vm" "web1" {
  name       = "web1"
  vcpus      = 1
  memory_mib = 128
  kernel     = var.guest_kernel
  initrd     = var.guest_initrd
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.web1.id }]
  # "lab" is the lab hosts' isolated network: no traffic leaves the machine.
  network_interfaces = [{ network = "lab" }]
  cloud_init {
    meta_data = "instance-id: web1\nlocal-hostname: web1\n"
  }
  placement {
    host         = "alpha"
    spread_group = "web"
  }
}

resource "drover_vm" "web2" {
  name       = "web2"
  vcpus      = 1
  memory_mib = 128
  kernel     = var.guest_kernel
  initrd     = var.guest_initrd
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.web2.id }]
  # "lab" is the lab hosts' isolated network: no traffic leaves the machine.
  network_interfaces = [{ network = "lab" }]
  cloud_init {
    meta_data = "instance-id: web2\nlocal-hostname: web2\n"
  }
  # No two VMs of the group "web" ever share a host. Without the pin the
  # placement engine would choose; the pin keeps the demo's layout fixed.
  placement {
    host         = "beta"
    spread_group = "web"
  }
}

locals {
  host_uris = { alpha = var.alpha_uri, beta = var.beta_uri }
  vms       = [drover_vm.web1, drover_vm.web2]
}

output "hosts" {
  description = "Each lab host: whether it answers, its CPUs and memory, and the VMs on it."
  value = {
    for name, h in data.drover_hosts.lab.hosts : name => {
      uri             = h.uri
      reachable       = h.reachable
      cpus            = h.cpus
      memory_mib      = h.memory_mib
      free_memory_mib = h.free_memory_mib
      vms             = h.vms
    }
  }
}

output "vms" {
  description = "Each VM: the host it runs on and how to read its serial console, printed at the end of make demo."
  value = join("\n", [
    for vm in local.vms : format("%-6s on %-6s %s\n       console: virsh -c %s console %s\n       log:     .lab/hosts/%s/log/qemu/%s-console.log (on the host: /var/log/libvirt/qemu/%s-console.log)",
    vm.name, vm.host, vm.running ? "running" : "stopped", local.host_uris[vm.host], vm.name, vm.host, vm.name, vm.name)
  ])
}

output "summary" {
  description = "One line per host, printed at the end of make demo."
  value = join("\n", [
    for name, h in data.drover_hosts.lab.hosts : format("%-6s %-28s %-4s %d CPUs, %d MiB, %d MiB free, VMs: %s",
      name, h.uri, h.reachable ? "up" : "DOWN", h.cpus, h.memory_mib, h.free_memory_mib,
    length(h.vms) > 0 ? join(", ", h.vms) : "none")
  ])
}
