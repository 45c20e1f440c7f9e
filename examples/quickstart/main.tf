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
  hosts = {
    alpha = { uri = var.alpha_uri, domain_type = "qemu" }
    beta  = { uri = var.beta_uri, domain_type = "qemu" }
  }
  storage = {
    endpoint = var.storage_endpoint
    token    = var.storage_token
    portal   = var.storage_portal
  }
}

data "drover_hosts" "lab" {}

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

output "summary" {
  description = "One line per host, printed at the end of make demo."
  value = join("\n", [
    for name, h in data.drover_hosts.lab.hosts : format("%-6s %-28s %-4s %d CPUs, %d MiB, %d MiB free, VMs: %s",
      name, h.uri, h.reachable ? "up" : "DOWN", h.cpus, h.memory_mib, h.free_memory_mib,
    length(h.vms) > 0 ? join(", ", h.vms) : "none")
  ])
}
