// Package store keeps drover-target's volumes and snapshots: sparse raw files
// under the data directory, described by records in a bbolt database
// (DIR/meta.db). Every change is ordered so that a crash at any point leaves
// either the old or the new state; Open finishes the job by rolling back
// half-done work and removing files that no record claims.
package store
