package api

import "github.com/drover/terraform-provider-drover/target/api/wire"

// stateJSON is the state of a snapshot or set as the API shows it: a
// copy-before-write snapshot is "copying" until its background copy is
// done (see store's cbw.go), and only then can it be read or cloned.
func stateJSON(copying bool) string {
	if copying {
		return wire.StateCopying
	}
	return wire.StateReady
}
