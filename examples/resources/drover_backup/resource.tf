# A backup of a whole VM: every disk cut at one instant, plus its definition.
resource "drover_backup" "web_nightly" {
  vm_id = drover_vm.web.id

  # Optional: also copy it off the storage box, to the machine running
  # Terraform (domain.xml, <volume>.raw sparse images, manifest.json).
  export_path = "/srv/backups/web-2026-11-25"
}
