package iscsi

import "github.com/drover/terraform-provider-drover/target/store"

// WriteGuards gives each exported volume the guard that every change to
// its data passes before it is made: a snapshot of the volume being copied
// in the background gets the old contents of a region first. *store.Store
// is one.
type WriteGuards interface {
	WriteGuard(volume string) store.WriteGuard
}

var _ WriteGuards = (*store.Store)(nil)
