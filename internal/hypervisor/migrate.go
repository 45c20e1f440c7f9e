package hypervisor

import (
	"context"
	"fmt"

	"libvirt.org/go/libvirt"
)

// Migrate moves the running domain named by name or UUID from the host at
// URI from to the host at URI to, live: the guest keeps running while its
// memory is copied, its definition moves with it and is removed from the
// source. Disks are not copied; they must be shared by both hosts.
//
// The migration is managed by this process through its connections to both
// hosts (not peer-to-peer), so it works for any two URIs this process can
// reach, even when the hosts cannot reach each other's libvirt (peer-to-peer
// would need the source host to reach the destination's URI itself).
//
// When ctx ends first, Migrate asks libvirt to abort the migration and
// returns an error. An aborted migration leaves the domain running on the
// source, but one in its last step may still complete: look before acting on
// the error.
func (p *Pool) Migrate(ctx context.Context, vm, from, to string) error {
	if from == to {
		return fmt.Errorf("migrate %s: source and destination are both %s", vm, from)
	}
	err := p.do(ctx, from, func(src *libvirt.Connect) error {
		dom, err := lookup(src, vm)
		if err != nil {
			return fmt.Errorf("on the source: %s", errorMessage(err))
		}
		defer dom.Free()
		if active, err := dom.IsActive(); err != nil {
			return fmt.Errorf("on the source: %s", errorMessage(err))
		} else if !active {
			return fmt.Errorf("it is not running on the source")
		}
		return p.do(ctx, to, func(dst *libvirt.Connect) error {
			return migrate(ctx, dom, dst)
		})
	})
	if err != nil {
		return fmt.Errorf("migrate %s from %s to %s: %w", vm, from, to, err)
	}
	return nil
}

// migrate runs the blocking migration call and aborts the migration job when
// ctx ends first, then waits for the call to give up.
func migrate(ctx context.Context, dom *libvirt.Domain, dst *libvirt.Connect) error {
	const flags = libvirt.MIGRATE_LIVE | libvirt.MIGRATE_PERSIST_DEST | libvirt.MIGRATE_UNDEFINE_SOURCE
	done := make(chan error, 1)
	go func() {
		moved, err := dom.Migrate3(dst, &libvirt.DomainMigrateParameters{}, flags)
		if moved != nil {
			_ = moved.Free()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s", errorMessage(err))
		}
		return nil
	case <-ctx.Done():
		_ = dom.AbortJob()
		if err := <-done; err == nil {
			return nil // it finished before the abort reached it
		}
		return fmt.Errorf("aborted: %w", context.Cause(ctx))
	}
}
