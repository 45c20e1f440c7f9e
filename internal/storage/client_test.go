package storage_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func newClient(t *testing.T) (*storage.Client, *apitest.Server) {
	t.Helper()
	srv := apitest.New(t)
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func TestTheClientDrivesARealTargetThroughEveryCall(t *testing.T) {
	t.Parallel()
	c, srv := newClient(t)
	ctx := context.Background()

	if err := c.Health(ctx); err != nil {
		t.Fatalf("Health: %v", err)
	}
	v, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{
		Name: "vm-disk", SizeMiB: 4,
		Initiators: []string{"iqn.2008-11.org.linux-kvm:vm"},
		CHAP:       &wire.CHAP{User: "vm", Secret: "0123456789ab"},
	})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	if v.IQN != "iqn.2026-11.io.drover:vm-disk" || v.LUN != api.LUN || v.CHAP == nil || v.CHAP.User != "vm" {
		t.Errorf("created volume = %+v, want IQN iqn.2026-11.io.drover:vm-disk, LUN %d, CHAP user vm", v, api.LUN)
	}
	if got, err := c.GetVolume(ctx, "vm-disk"); err != nil || got.SizeMiB != 4 {
		t.Errorf("GetVolume = %+v, %v; want 4 MiB", got, err)
	}
	if vols, err := c.ListVolumes(ctx); err != nil || len(vols) != 1 {
		t.Errorf("ListVolumes = %v, %v; want one volume", vols, err)
	}
	if v, err = c.GrowVolume(ctx, "vm-disk", 8); err != nil || v.SizeMiB != 8 {
		t.Errorf("GrowVolume = %+v, %v; want 8 MiB", v, err)
	}
	inits := []string{"iqn.2000-01.lab:alpha", "iqn.2000-01.lab:beta"}
	if v, err = c.UpdateVolume(ctx, "vm-disk", storage.UpdateVolumeRequest{Initiators: &inits, RemoveCHAP: true}); err != nil || v.CHAP != nil || len(v.Initiators) != 2 {
		t.Errorf("UpdateVolume = %+v, %v; want two initiators and no CHAP", v, err)
	}

	img := bytes.Repeat([]byte("disk image "), 500)
	if err := c.UploadVolume(ctx, "vm-disk", bytes.NewReader(img), "raw"); err != nil {
		t.Fatalf("UploadVolume: %v", err)
	}
	snap, err := c.CreateSnapshot(ctx, "vm-disk")
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if snaps, err := c.ListSnapshots(ctx, "vm-disk"); err != nil || len(snaps) != 1 || snaps[0].ID != snap.ID {
		t.Errorf("ListSnapshots = %v, %v; want [%s]", snaps, err, snap.ID)
	}
	if got, err := c.GetSnapshot(ctx, snap.ID); err != nil || got.Volume != "vm-disk" {
		t.Errorf("GetSnapshot = %+v, %v; want one of vm-disk", got, err)
	}
	rc, err := c.DownloadSnapshot(ctx, snap.ID)
	if err != nil {
		t.Fatalf("DownloadSnapshot: %v", err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(data) != 8<<20 || !bytes.Equal(data[:len(img)], img) {
		t.Errorf("downloaded %d bytes (err %v), want 8 MiB starting with the uploaded image", len(data), err)
	}
	restored, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "restored", Source: &wire.Source{Snapshot: snap.ID}})
	if err != nil || restored.SizeMiB != 8 {
		t.Errorf("restore from snapshot = %+v, %v; want 8 MiB", restored, err)
	}

	srv.Exporter.AddSession(wire.Session{Volume: "vm-disk", Initiator: "iqn.2000-01.lab:alpha", RemoteAddr: "127.0.0.2:1"})
	if ss, err := c.Sessions(ctx); err != nil || len(ss) != 1 || ss[0].Initiator != "iqn.2000-01.lab:alpha" {
		t.Errorf("Sessions = %v, %v; want alpha's session", ss, err)
	}
	if err := c.DeleteVolume(ctx, "vm-disk", false); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("DeleteVolume in use: %v, want ErrConflict", err)
	}
	if err := c.DeleteVolume(ctx, "vm-disk", true); err != nil {
		t.Errorf("DeleteVolume force: %v", err)
	}
	if err := c.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Errorf("DeleteSnapshot: %v", err)
	}
	if _, err := c.GetSnapshot(ctx, snap.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetSnapshot after delete: %v, want ErrNotFound", err)
	}
}

func TestAMissingVolumeIsATypedNotFoundError(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	_, err := c.GetVolume(context.Background(), "ghost")
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("GetVolume(ghost) = %v, want ErrNotFound", err)
	}
	var apiErr *storage.Error
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.Message, `"ghost" does not exist`) {
		t.Errorf("error = %#v, want a storage.Error carrying the target's message", err)
	}
}

func TestAWrongTokenIsReportedAsUnauthorized(t *testing.T) {
	t.Parallel()
	_, srv := newClient(t)
	c, err := storage.New(srv.URL, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListVolumes(context.Background()); !errors.Is(err, storage.ErrUnauthorized) {
		t.Errorf("ListVolumes with a wrong token = %v, want ErrUnauthorized", err)
	}
}

func TestNamesWithSlashesCannotEscapeTheirPath(t *testing.T) {
	t.Parallel()
	c, srv := newClient(t)
	if _, err := c.CreateVolume(context.Background(), wire.CreateVolumeRequest{Name: "keep", SizeMiB: 1}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../volumes", "keep/../keep", "..", "%2e%2e"} {
		if err := c.DeleteVolume(context.Background(), name, true); err == nil {
			t.Errorf("DeleteVolume(%q) succeeded, want a refusal", name)
		}
	}
	if _, err := srv.Store.Get("keep"); err != nil {
		t.Errorf("volume keep after path tricks: %v", err)
	}
}

func TestBadEndpointsAndEmptyTokensAreRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ endpoint, token string }{
		{"storage.lan:3261", "t"},
		{"ftp://storage.lan", "t"},
		{"http://", "t"},
		{"http://storage.lan:3261", ""},
	} {
		if _, err := storage.New(tc.endpoint, tc.token); err == nil {
			t.Errorf("New(%q, %q) succeeded, want an error", tc.endpoint, tc.token)
		}
	}
}

func TestTheContextDeadlineIsHonoured(t *testing.T) {
	t.Parallel()
	// A target that takes its time: it answers only when the request is
	// given up, or after a minute.
	arrived := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	t.Cleanup(slow.Close)
	c, err := storage.New(slow.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.GetVolume(ctx, "slow")
	took := time.Since(start)
	select {
	case <-arrived:
	default:
		t.Fatal("the request never reached the target: the deadline did not expire during it")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetVolume past its deadline = %v, want context.DeadlineExceeded", err)
	}
	if took > 5*time.Second {
		t.Errorf("GetVolume took %s with a 200ms deadline", took)
	}

	// A context already cancelled sends nothing.
	c2, _ := newClient(t)
	done, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := c2.Health(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Health with a cancelled context = %v, want context.Canceled", err)
	}
}
