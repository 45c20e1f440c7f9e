# A volume is imported by its name on the storage target.
terraform import drover_volume.data db-data
