# The backups of a VM, newest first; they outlive the VM.
data "drover_backups" "web" {
  vm_id = drover_vm.web.id
}

output "latest_web_backup" {
  value = length(data.drover_backups.web.backups) > 0 ? data.drover_backups.web.backups[0].id : null
}
