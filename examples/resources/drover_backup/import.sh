# A backup is imported by its id (its snapshot set on the storage target;
# `drover-target snapshot-set ls` lists them).
terraform import drover_backup.web_nightly set-12
