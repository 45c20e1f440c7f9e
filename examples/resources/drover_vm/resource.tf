resource "drover_volume" "web1_root" {
  name     = "web1-root"
  size_mib = 10240
  source   = { file = "debian-12-genericcloud-amd64.qcow2" }
}

resource "drover_vm" "web1" {
  name           = "web1"
  vcpus          = 2
  memory_mib     = 2048
  max_memory_mib = 4096 # memory grows live up to this

  disks = [{ volume_id = drover_volume.web1_root.id }]

  network_interfaces = [{ bridge = "br0" }]

  cloud_init {
    meta_data = "instance-id: web1\nlocal-hostname: web1\n"
    user_data = <<-EOT
      #cloud-config
      ssh_authorized_keys:
        - ssh-ed25519 AAAA... admin@example
    EOT
  }

  # No two VMs of the group "web" run on the same host; web1 prefers alpha.
  placement {
    preferred_hosts = ["alpha"]
    spread_group    = "web"
  }

  # Changing vcpus or max_memory_mib of a running VM restarts it; without
  # this, such a plan fails instead.
  allow_restart = true

  timeouts {
    create = "10m"
    delete = "5m"
  }
}

output "web1_host" {
  value = drover_vm.web1.host
}
