// Package schedule is drover-target's backup schedules: 5-field cron
// expressions and when they next run, which runs a keep policy (last,
// daily, weekly, monthly, as Proxmox Backup Server prunes) keeps, and the
// Scheduler that runs each schedule when it is due, one run at a time per
// VM, through a Runner the daemon provides (the cut, the list of a
// schedule's runs, their deletion, the record of the last run); and the
// restic repositories that runs also go to, driven with the restic command.
package schedule
