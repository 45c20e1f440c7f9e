package wire

import "time"

// The labels drover-target puts on the snapshot set of every run of a
// backup schedule (besides the schedule's own labels): the same keys a
// backup made from Terraform carries, so that a scheduled run is listed
// and restored like any backup.
const (
	LabelVMID        = "drover.vm-id"       // the VM the schedule backs up
	LabelSchedule    = "drover.schedule"    // the schedule's id
	LabelConsistency = "drover.consistency" // "crash": a schedule holds writes, it cannot freeze filesystems
	LabelPauseMS     = "drover.pause-ms"    // how long writes were held for the cut
	// DomainAttachment is the name of the domain XML kept with a run.
	DomainAttachment = "domain.xml"
)

// Keep says which runs of a schedule pruning keeps, as Proxmox Backup
// Server prunes: the last N, then the newest of each of the last N days,
// ISO weeks and months. At least one count is above 0.
type Keep struct {
	Last    int `json:"last,omitempty"`
	Daily   int `json:"daily,omitempty"`
	Weekly  int `json:"weekly,omitempty"`
	Monthly int `json:"monthly,omitempty"`
}

// Restic is a restic repository on the storage box that every run of a
// schedule also goes to: each disk image and the domain XML, tagged with
// the VM and the set, pruned with the schedule's keep.
type Restic struct {
	Repository   string `json:"repository"`    // a path or a restic URL (sftp:, rest:, s3:, ...)
	PasswordFile string `json:"password_file"` // absolute path of a file holding the password
}

// ScheduleRun is what the latest run of a schedule came to.
type ScheduleRun struct {
	At     time.Time `json:"at"`
	Status string    `json:"status"` // "ok" or "failed"
	SetID  string    `json:"set_id,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// Schedule is a backup schedule as the API shows it. The domain XML it
// attaches to each run is not shown (GET a run's attachment instead).
type Schedule struct {
	ID        string            `json:"id"`
	VM        string            `json:"vm"`
	Volumes   []string          `json:"volumes"`
	Schedule  string            `json:"schedule"` // 5-field cron, in the storage box's time zone
	Keep      Keep              `json:"keep"`
	Restic    *Restic           `json:"restic,omitempty"`
	Labels    map[string]string `json:"labels"`
	CreatedAt time.Time         `json:"created_at"`
	NextRun   *time.Time        `json:"next_run,omitempty"` // absent: the expression never matches again
	LastRun   *ScheduleRun      `json:"last_run,omitempty"` // absent before the first run
}

// ScheduleRequest is the body of POST /v1/schedules and of PUT
// /v1/schedules/{id} (which replaces everything but the id and the
// created time; vm may not change). Volumes are cut together at one
// instant, in this order; labels (at most 32 minus the ones the target
// sets, keys of [a-z0-9./_-]) go on every run's snapshot set, with
// domain_xml (up to 1 MiB) as its attachment "domain.xml".
type ScheduleRequest struct {
	VM        string            `json:"vm"`
	Volumes   []string          `json:"volumes"`
	Schedule  string            `json:"schedule"`
	Keep      Keep              `json:"keep"`
	Restic    *Restic           `json:"restic,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	DomainXML string            `json:"domain_xml,omitempty"`
}

// ScheduleList is the answer of GET /v1/schedules, ordered by id.
type ScheduleList struct {
	Schedules []Schedule `json:"schedules"`
}

// ResticCheck is the answer of POST /v1/restic-checks (whose body is a
// Restic): the password file is readable and, if the repository exists,
// opens it.
type ResticCheck struct {
	Repository  string `json:"repository"`
	Initialized bool   `json:"initialized"` // false: the first schedule using it will create it
}
