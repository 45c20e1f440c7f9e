data "drover_hosts" "all" {}

# Free memory per reachable host, in MiB.
output "free_memory_mib" {
  value = {
    for name, host in data.drover_hosts.all.hosts : name => host.free_memory_mib
    if host.reachable
  }
}
