package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// On a filesystem without reflinks the target cuts a snapshot by
// copy-before-write: the cut is instant and the snapshot is "copying"
// until a background copy has filled it; only then can it be downloaded
// or cloned. These helpers wait for that, polling with a backoff within
// the caller's context (a Terraform timeout flows into it).

// Poll intervals of the waits: from the first to the longest.
const (
	firstPoll = 50 * time.Millisecond
	maxPoll   = 2 * time.Second
)

// CreateSnapshotSetReady cuts a snapshot set and waits until it is ready
// to use (WaitSnapshotSet). A caller that keeps the guest still for the
// cut (a pause, a filesystem freeze) must not use it: release the guest
// after CreateSnapshotSet, then call WaitSnapshotSet.
func (c *Client) CreateSnapshotSetReady(ctx context.Context, req wire.CreateSnapshotSetRequest) (wire.SnapshotSet, error) {
	s, err := c.CreateSnapshotSet(ctx, req)
	if err != nil || s.State != wire.StateCopying {
		return s, err
	}
	return c.WaitSnapshotSet(ctx, s.ID)
}

// WaitSnapshotSet waits until every snapshot of a set is copied and
// returns the set, ready. A set whose copy failed is dropped by the target:
// that is an error that errors.Is(err, ErrNotFound), saying so. When ctx
// ends first, the error says how far the copy had come; the set goes on
// copying (delete it to stop it).
func (c *Client) WaitSnapshotSet(ctx context.Context, id string) (wire.SnapshotSet, error) {
	var last wire.SnapshotSet
	err := poll(ctx, func() (bool, error) {
		s, err := c.GetSnapshotSet(ctx, id)
		if err != nil {
			return false, err
		}
		last = s
		return s.State != wire.StateCopying, nil
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return wire.SnapshotSet{}, fmt.Errorf("snapshot set %s was dropped before its copy finished (its copy failed or the target restarted; see its log): %w", id, err)
	case err != nil && last.State == wire.StateCopying:
		return wire.SnapshotSet{}, fmt.Errorf("wait for snapshot set %s to be copied (%d of %d MiB done): %w", id, last.CopiedBytes>>20, last.TotalBytes>>20, err)
	case err != nil:
		return wire.SnapshotSet{}, fmt.Errorf("wait for snapshot set %s: %w", id, err)
	}
	return last, nil
}

// WaitSnapshot waits until a snapshot is copied and returns it, ready; see
// WaitSnapshotSet.
func (c *Client) WaitSnapshot(ctx context.Context, id string) (wire.Snapshot, error) {
	var last wire.Snapshot
	err := poll(ctx, func() (bool, error) {
		s, err := c.GetSnapshot(ctx, id)
		if err != nil {
			return false, err
		}
		last = s
		return s.State != wire.StateCopying, nil
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return wire.Snapshot{}, fmt.Errorf("snapshot %s was dropped before its copy finished (its copy failed or the target restarted; see its log): %w", id, err)
	case err != nil && last.State == wire.StateCopying:
		return wire.Snapshot{}, fmt.Errorf("wait for snapshot %s to be copied (%d of %d MiB done): %w", id, last.CopiedBytes>>20, last.TotalBytes>>20, err)
	case err != nil:
		return wire.Snapshot{}, fmt.Errorf("wait for snapshot %s: %w", id, err)
	}
	return last, nil
}

// poll calls done until it reports true or fails, sleeping between calls
// from firstPoll, half as long again each time, up to maxPoll.
func poll(ctx context.Context, done func() (bool, error)) error {
	wait := firstPoll
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*3/2, maxPoll)
	}
}
