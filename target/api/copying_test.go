package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

// newCopyingServer is the API on a store that cuts snapshots by
// copy-before-write, its background copy held to rate bytes a second so
// that a test sees it copying.
func newCopyingServer(t *testing.T, rate int64) *apitest.Server {
	t.Helper()
	return newCopyingServerHolding(t, rate, 0)
}

func newCopyingServerHolding(t *testing.T, rate int64, maxHold time.Duration) *apitest.Server {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{CopyBeforeWrite: true, NoReflink: true, CopyRate: rate})
	if err != nil {
		t.Fatal(err)
	}
	ex := apitest.NewExporter()
	a, err := api.New(api.Config{Store: st, Exporter: ex, Token: apitest.Token, MaxHold: maxHold})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &apitest.Server{Server: srv, API: a, Store: st, Exporter: ex}
}

// TestASetStillCopyingShowsItsProgressAndCannotBeReadYet: the set and its
// snapshots say "copying" with their progress; download, extents and clone
// answer 409 with a message that says to wait; the client's wait returns
// the set ready, and then everything works.
func TestASetStillCopyingShowsItsProgressAndCannotBeReadYet(t *testing.T) {
	t.Parallel()
	srv := newCopyingServer(t, 4<<20) // 4 MiB of data: about a second
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"vm","size_mib":4}`, http.StatusCreated, nil)
	v, err := srv.Store.Get("vm")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("disk"), 1<<20)
	if err := os.WriteFile(v.Path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	var set wire.SnapshotSet
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["vm"]}`, http.StatusCreated, &set)
	if set.State != wire.StateCopying || set.TotalBytes != 4<<20 || set.CopiedBytes >= set.TotalBytes || set.Method != store.MethodCopy {
		t.Fatalf("set after its cut: state %q, %d of %d bytes, method %s; want copying", set.State, set.CopiedBytes, set.TotalBytes, set.Method)
	}
	id := set.Snapshots[0].ID
	var snap wire.Snapshot
	doJSON(t, srv, "GET", "/v1/snapshots/"+id, "", http.StatusOK, &snap)
	if snap.State != wire.StateCopying || snap.TotalBytes != 4<<20 {
		t.Errorf("GET snapshot while copying: %+v", snap)
	}
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", http.StatusOK, &set)
	if set.State != wire.StateCopying {
		t.Errorf("GET set while copying: state %q", set.State)
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/snapshots/" + id + "/data", ""},
		{"GET", "/v1/snapshots/" + id + "/extents", ""},
		{"POST", "/v1/volumes", `{"name":"restored","source":{"snapshot":"` + id + `"}}`},
	} {
		rec := doJSON(t, srv, r.method, r.path, r.body, http.StatusConflict, nil)
		if !strings.Contains(rec.Body.String(), "still being copied") || !strings.Contains(rec.Body.String(), "wait") {
			t.Errorf("%s %s while copying: %s; want a message that says to wait", r.method, r.path, rec.Body)
		}
	}

	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready, err := c.WaitSnapshotSet(ctx, set.ID)
	if err != nil {
		t.Fatalf("WaitSnapshotSet: %v", err)
	}
	if ready.State != wire.StateReady || ready.CopiedBytes != ready.TotalBytes || ready.Snapshots[0].State != wire.StateReady {
		t.Fatalf("set after the wait: %+v", ready)
	}
	rec := do(t, srv, "GET", "/v1/snapshots/"+id+"/data", "", nil, apitest.Token)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), data) {
		t.Errorf("download after the copy: status %d, %d bytes, equal %v", rec.Code, rec.Body.Len(), bytes.Equal(rec.Body.Bytes(), data))
	}
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"restored","source":{"snapshot":"`+id+`"}}`, http.StatusCreated, nil)
}

// TestAWaitEndsWithTheCallersDeadlineAndSaysHowFarTheCopyCame, and a
// delete stops the copy.
func TestAWaitEndsWithTheCallersDeadlineAndSaysHowFarTheCopyCame(t *testing.T) {
	t.Parallel()
	srv := newCopyingServer(t, 1<<20) // 8 s of copying
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"vm","size_mib":8}`, http.StatusCreated, nil)
	v, _ := srv.Store.Get("vm")
	if err := os.WriteFile(v.Path, bytes.Repeat([]byte("x"), 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.CreateSnapshotSetReady(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"vm"}})
	if err == nil || !strings.Contains(err.Error(), "MiB done") || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("CreateSnapshotSetReady past its deadline: %v; want the progress and the deadline", err)
	}
	sets, err := c.ListSnapshotSets(context.Background(), nil)
	if err != nil || len(sets) != 1 || sets[0].State != wire.StateCopying {
		t.Fatalf("sets after the wait gave up: %+v, %v", sets, err)
	}
	doJSON(t, srv, "DELETE", "/v1/snapshot-sets/"+sets[0].ID, "", http.StatusNoContent, nil)
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+sets[0].ID, "", http.StatusNotFound, nil)
}

// TestACopyLongerThanTheHoldLimitIsFine: the hold covers only the cut, so a
// set whose copy takes ten times --max-hold is made and turns ready.
func TestACopyLongerThanTheHoldLimitIsFine(t *testing.T) {
	t.Parallel()
	srv := newCopyingServerHolding(t, 4<<20, 100*time.Millisecond) // 4 MiB of data: 1 s of copying
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"vm","size_mib":4}`, http.StatusCreated, nil)
	v, _ := srv.Store.Get("vm")
	if err := os.WriteFile(v.Path, bytes.Repeat([]byte("x"), 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var set wire.SnapshotSet
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["vm"]}`, http.StatusCreated, &set)
	if holds := srv.Exporter.Holds(); len(holds) != 1 || holds[0].Limit != 100*time.Millisecond || !holds[0].Released() {
		t.Fatalf("holds: %+v; want one of 100ms, released", holds)
	}
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	ready, err := c.WaitSnapshotSet(ctx, set.ID)
	if err != nil || ready.State != wire.StateReady {
		t.Fatalf("set whose copy outlasts the hold limit: %+v, %v", ready, err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("the copy took %s; the test needs one longer than the hold limit", took)
	}
}
