provider "drover" {
  host {
    name = "alpha"
    uri  = "qemu+ssh://root@alpha/system"
  }
  host {
    name                = "beta"
    uri                 = "qemu+ssh://root@beta/system"
    maintenance         = true       # its VMs move to alpha on the next apply
    migration_address   = "10.0.0.2" # where alpha sends beta a VM's memory
    reserved_memory_mib = 1024
    memory_overcommit   = 1.25
    cpu_overcommit      = 4
    domain_type         = "kvm"
  }

  storage {
    endpoint = "https://storage.lan:3261"   # drover-target management API
    token    = var.storage_token            # or the environment variable DROVER_STORAGE_TOKEN
    portal   = "storage.lan:3260"           # iSCSI portal as the hosts reach it
    ca_file  = "/etc/drover/storage-ca.pem" # the CA that signed drover-target's certificate
  }

  placement {
    strategy            = "spread" # or "pack": fill hosts before using empty ones
    migrations_per_host = 2        # moves a host takes part in at once
    strict_spread       = false    # true: never let a spread group share a host
  }
}

variable "storage_token" {
  type      = string
  sensitive = true
}
