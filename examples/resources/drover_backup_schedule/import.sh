# A schedule is imported by its id (`drover-target schedule ls` lists them).
terraform import drover_backup_schedule.app sched-3
