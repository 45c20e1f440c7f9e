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
	return waitCopied(ctx, "snapshot set", id, c.GetSnapshotSet, func(s wire.SnapshotSet) (string, int64, int64) {
		return s.State, s.CopiedBytes, s.TotalBytes
	})
}

// WaitSnapshot waits until a snapshot is copied and returns it, ready; see
// WaitSnapshotSet.
func (c *Client) WaitSnapshot(ctx context.Context, id string) (wire.Snapshot, error) {
	return waitCopied(ctx, "snapshot", id, c.GetSnapshot, func(s wire.Snapshot) (string, int64, int64) {
		return s.State, s.CopiedBytes, s.TotalBytes
	})
}

// waitCopied polls get(id) until what it returns is no longer copying.
func waitCopied[T any](ctx context.Context, what, id string, get func(context.Context, string) (T, error),
	progress func(T) (state string, copied, total int64)) (T, error) {
	var last T
	err := poll(ctx, func() (bool, error) {
		s, err := get(ctx, id)
		if err != nil {
			return false, err
		}
		last = s
		state, _, _ := progress(s)
		return state != wire.StateCopying, nil
	})
	var zero T
	state, copied, total := progress(last)
	switch {
	case errors.Is(err, ErrNotFound):
		return zero, fmt.Errorf("%s %s was dropped before its copy finished (its copy failed or the target restarted; see its log): %w", what, id, err)
	case err != nil && state == wire.StateCopying:
		return zero, fmt.Errorf("wait for %s %s to be copied (%d of %d MiB done): %w", what, id, copied>>20, total>>20, err)
	case err != nil:
		return zero, fmt.Errorf("wait for %s %s: %w", what, id, err)
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
