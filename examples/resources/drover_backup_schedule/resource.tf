# Backups that the storage box makes by itself, every night at 02:30 (its
# time zone), keeping the last 3 and one a day for a week.
resource "drover_backup_schedule" "app" {
  vm_id    = drover_vm.app.id
  schedule = "30 2 * * *"

  keep {
    last  = 3
    daily = 7
  }

  # Optional: each run also goes to this restic repository on the storage
  # box, deduplicated and encrypted, pruned with the same keep.
  restic {
    repository    = "/srv/restic/app"
    password_file = "/etc/drover/restic-password"
  }
}
