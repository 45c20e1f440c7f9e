// Package api is drover-target's management API: JSON over HTTP at the fixed
// paths of the design (/v1/volumes, /v1/snapshots, /v1/snapshot-sets,
// /v1/sessions, ...), behind a bearer token. It translates requests into
// calls on the volume store and the iSCSI exporter and never changes
// anything when it answers 4xx.
package api
