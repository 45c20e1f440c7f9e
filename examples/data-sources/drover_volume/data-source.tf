# A volume made outside Terraform, e.g. with `drover-target volume create`.
data "drover_volume" "golden" {
  name = "debian-12-golden"
}

# Each new VM's boot disk starts as a copy of it.
resource "drover_volume" "web_boot" {
  name   = "web-1-boot"
  source = { volume_id = data.drover_volume.golden.id }
}
