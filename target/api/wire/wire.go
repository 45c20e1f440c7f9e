package wire

import (
	"encoding/json"
	"time"
)

// Volume is a volume as the API shows it. Secrets never leave the daemon:
// of CHAP only the user names are shown.
type Volume struct {
	Name       string      `json:"name"`
	SizeMiB    int64       `json:"size_mib"`
	IQN        string      `json:"iqn"`
	LUN        uint64      `json:"lun"`
	Initiators []string    `json:"initiators"`
	CHAP       *PublicCHAP `json:"chap,omitempty"`
	Source     *Source     `json:"source,omitempty"`
	CreatedAt  time.Time   `json:"created_at"`
}

// PublicCHAP is the visible half of a volume's CHAP settings.
type PublicCHAP struct {
	User       string `json:"user"`
	MutualUser string `json:"mutual_user,omitempty"`
}

// CHAP is the credentials an initiator must log in with, as clients send
// them; the mutual ones are optional.
type CHAP struct {
	User         string `json:"user"`
	Secret       string `json:"secret"`
	MutualUser   string `json:"mutual_user,omitempty"`
	MutualSecret string `json:"mutual_secret,omitempty"`
}

// Source names what a new volume is cloned from: one of the two.
type Source struct {
	Volume   string `json:"volume,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
}

// Snapshot is a point-in-time copy of a volume.
type Snapshot struct {
	ID        string    `json:"id"`
	Volume    string    `json:"volume"`
	SizeMiB   int64     `json:"size_mib"`
	Method    string    `json:"method"`
	CreatedAt time.Time `json:"created_at"`
	Set       string    `json:"set,omitempty"` // the snapshot set it belongs to, if any
	// State is "ready", or "copying" while a copy-before-write copy fills
	// it (on a filesystem without reflinks): it cannot be downloaded or
	// cloned until ready. CopiedBytes of TotalBytes are in (equal when ready).
	State       string `json:"state"`
	CopiedBytes int64  `json:"copied_bytes"`
	TotalBytes  int64  `json:"total_bytes"`
}

// Snapshot and snapshot set states.
const (
	StateReady   = "ready"
	StateCopying = "copying"
)

// SnapshotSet is snapshots of several volumes cut at one instant (writes
// to all of them held meanwhile), with labels and attachments: a backup of
// a VM. Its snapshots are deleted with it, not on their own.
type SnapshotSet struct {
	ID          string            `json:"id"`
	CreatedAt   time.Time         `json:"created_at"`
	Labels      map[string]string `json:"labels"`
	Attachments []string          `json:"attachments"` // names; the content is at .../attachments/{name}
	Snapshots   []Snapshot        `json:"snapshots"`   // in the order of the request's volumes
	Method      string            `json:"method"`      // "copy" if any snapshot was copied, else "reflink"
	HoldMS      int64             `json:"hold_ms"`     // how long writes to the volumes were held
	// State is "copying" while any of its snapshots is, else "ready";
	// CopiedBytes of TotalBytes are in, over all its snapshots.
	State       string `json:"state"`
	CopiedBytes int64  `json:"copied_bytes"`
	TotalBytes  int64  `json:"total_bytes"`
}

// Extent is a byte range of a snapshot that holds data.
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// Extents is the answer of GET /v1/snapshots/{id}/extents: where a
// snapshot's data is; the rest reads as zeros.
type Extents struct {
	SizeBytes int64    `json:"size_bytes"`
	Extents   []Extent `json:"extents"` // sorted, not overlapping
}

// Session is an initiator logged in to a volume.
type Session struct {
	Volume     string    `json:"volume"`
	TargetIQN  string    `json:"target_iqn"`
	Initiator  string    `json:"initiator"`
	RemoteAddr string    `json:"remote_addr"`
	Since      time.Time `json:"since"`
}

// CreateVolumeRequest is the body of POST /v1/volumes. SizeMiB may be 0
// with a Source: the clone then has its source's size. Zero fields are left
// out; the daemon reads an absent field as its zero value.
type CreateVolumeRequest struct {
	Name       string   `json:"name"`
	SizeMiB    int64    `json:"size_mib,omitempty"`
	Initiators []string `json:"initiators,omitempty"`
	CHAP       *CHAP    `json:"chap,omitempty"`
	Source     *Source  `json:"source,omitempty"`
}

// UpdateVolumeRequest is the body of PATCH /v1/volumes/{name}: absent
// fields stay as they are. "chap" has three states, which a *CHAP cannot
// hold, so it is raw here: absent keeps CHAP, null removes it, an object
// (a CHAP) replaces it. The fields are in the order the client has always
// sent them.
type UpdateVolumeRequest struct {
	CHAP       json.RawMessage `json:"chap,omitempty"`
	Initiators *[]string       `json:"initiators,omitempty"`
	SizeMiB    *int64          `json:"size_mib,omitempty"`
}

// CreateSnapshotSetRequest is the body of POST /v1/snapshot-sets: 1-64
// distinct volumes, at most 32 labels (keys of [a-z0-9./_-], values up to
// 256 bytes) and attachments (names like "domain.xml", 1 MiB together).
// Empty labels and attachments are left out.
type CreateSnapshotSetRequest struct {
	Volumes     []string          `json:"volumes"`
	Labels      map[string]string `json:"labels,omitempty"`
	Attachments map[string]string `json:"attachments,omitempty"`
}

// UpdateSnapshotSetRequest is the body of PATCH /v1/snapshot-sets/{id}.
// Labels is required and replaces all of the set's labels; {} removes them.
type UpdateSnapshotSetRequest struct {
	Labels map[string]string `json:"labels"`
}

// VolumeList is the answer of GET /v1/volumes, ordered by name.
type VolumeList struct {
	Volumes []Volume `json:"volumes"`
}

// SnapshotList is the answer of GET /v1/volumes/{name}/snapshots, oldest
// first.
type SnapshotList struct {
	Snapshots []Snapshot `json:"snapshots"`
}

// SnapshotSetList is the answer of GET /v1/snapshot-sets, newest first.
type SnapshotSetList struct {
	SnapshotSets []SnapshotSet `json:"snapshot_sets"`
}

// SessionList is the answer of GET /v1/sessions.
type SessionList struct {
	Sessions []Session `json:"sessions"`
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status string `json:"status"`
}

// ErrorBody is the body of every error answer (4xx and 5xx); Error is
// written for the person who sent the request.
type ErrorBody struct {
	Error string `json:"error"`
}
