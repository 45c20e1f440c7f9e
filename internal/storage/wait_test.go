package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// copyingTarget answers GET of set-1 and snapshot v.1 with "copying" for
// the first polls, then ready (or 404: the copy failed and was dropped).
func copyingTarget(t *testing.T, copyingPolls int32, dropped bool) (*storage.Client, *atomic.Int32) {
	t.Helper()
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := polls.Add(1)
		state, copied := wire.StateCopying, int64(n)<<20
		if n > copyingPolls {
			if dropped {
				w.WriteHeader(http.StatusNotFound)
				json.NewEncoder(w).Encode(map[string]string{"error": "snapshot set \"set-1\" does not exist"})
				return
			}
			state, copied = wire.StateReady, 8<<20
		}
		switch r.URL.Path {
		case "/v1/snapshot-sets/set-1":
			json.NewEncoder(w).Encode(wire.SnapshotSet{ID: "set-1", State: state, CopiedBytes: copied, TotalBytes: 8 << 20})
		case "/v1/snapshots/v.1":
			json.NewEncoder(w).Encode(wire.Snapshot{ID: "v.1", State: state, CopiedBytes: copied, TotalBytes: 8 << 20})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := storage.New(srv.URL, "token-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	return c, &polls
}

func TestWaitingForACopyPollsUntilItIsReady(t *testing.T) {
	t.Parallel()
	c, polls := copyingTarget(t, 3, false)
	set, err := c.WaitSnapshotSet(context.Background(), "set-1")
	if err != nil || set.State != wire.StateReady || polls.Load() != 4 {
		t.Fatalf("WaitSnapshotSet: %+v, %v after %d polls; want ready after 4", set, err, polls.Load())
	}
	c, _ = copyingTarget(t, 2, false)
	snap, err := c.WaitSnapshot(context.Background(), "v.1")
	if err != nil || snap.State != wire.StateReady {
		t.Fatalf("WaitSnapshot: %+v, %v", snap, err)
	}
}

func TestWaitingForACopyThatWasDroppedSaysSo(t *testing.T) {
	t.Parallel()
	c, _ := copyingTarget(t, 1, true)
	_, err := c.WaitSnapshotSet(context.Background(), "set-1")
	if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "dropped before its copy finished") {
		t.Fatalf("WaitSnapshotSet of a set dropped meanwhile: %v", err)
	}
}

func TestWaitingForACopyEndsAtTheDeadlineWithItsProgress(t *testing.T) {
	t.Parallel()
	c, _ := copyingTarget(t, 1000, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.WaitSnapshot(ctx, "v.1")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "of 8 MiB done") {
		t.Fatalf("WaitSnapshot past its deadline: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("WaitSnapshot returned %s after its deadline of 200ms", took)
	}
}
