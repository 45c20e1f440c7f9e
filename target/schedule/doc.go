// Package schedule is the arithmetic of drover-target's backup schedules:
// 5-field cron expressions and when they next run, and which runs a keep
// policy (last, daily, weekly, monthly, as Proxmox Backup Server prunes)
// keeps. It has no clock and no store of its own: the daemon's scheduler
// asks it.
package schedule
