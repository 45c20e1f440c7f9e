package storage_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestTheClientFencesAndUnfencesAnInitiator(t *testing.T) {
	t.Parallel()
	const alpha, beta = "iqn.2008-11.org.linux-kvm:alpha", "iqn.2008-11.org.linux-kvm:beta"
	srv := apitest.New(t)
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "web", SizeMiB: 1, Initiators: []string{alpha, beta}}); err != nil {
		t.Fatal(err)
	}
	srv.Exporter.AddSession(wire.Session{Volume: "web", Initiator: alpha, RemoteAddr: "127.0.0.2:5000"})
	srv.Exporter.AddSession(wire.Session{Volume: "web", Initiator: beta, RemoteAddr: "127.0.0.3:5000"})

	f, err := c.Fence(ctx, alpha, "host alpha declared failed")
	if err != nil || f.Initiator != alpha || f.Reason != "host alpha declared failed" || f.CreatedAt.IsZero() {
		t.Fatalf("Fence: got %+v, %v; want the fence of %s", f, err, alpha)
	}
	sessions, err := c.Sessions(ctx)
	if err != nil || len(sessions) != 1 || sessions[0].Initiator != beta {
		t.Errorf("sessions after Fence: got %+v, %v; want beta's only", sessions, err)
	}
	again, err := c.Fence(ctx, alpha, "still failed")
	if err != nil || !again.CreatedAt.Equal(f.CreatedAt) || again.Reason != "still failed" {
		t.Errorf("Fence again: got %+v, %v; want the first created_at and the new reason", again, err)
	}
	fences, err := c.Fences(ctx)
	if err != nil || len(fences) != 1 || fences[0] != again {
		t.Errorf("Fences: got %+v, %v; want [%+v]", fences, err, again)
	}

	if err := c.Unfence(ctx, alpha); err != nil {
		t.Fatalf("Unfence: %v", err)
	}
	if got := srv.Exporter.Fenced(); len(got) != 0 {
		t.Errorf("fenced in the engine after Unfence: %v, want none", got)
	}
	if err := c.Unfence(ctx, alpha); err != nil {
		t.Errorf("Unfence of an initiator that is not fenced: got %v, want nil", err)
	}
	if fences, err := c.Fences(ctx); err != nil || len(fences) != 0 {
		t.Errorf("Fences after Unfence: got %+v, %v; want none", fences, err)
	}

	_, err = c.Fence(ctx, "alpha", "x")
	var apiErr *storage.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, `"alpha"`) {
		t.Errorf("Fence of a host name: got %v, want a 400 naming it", err)
	}
	if err := c.Unfence(ctx, "Alpha"); err == nil {
		t.Error("Unfence of a bad name: got nil, want the 400")
	}
	if got := srv.Exporter.Fenced(); len(got) != 0 {
		t.Errorf("fenced after the refusals: %v, want none", got)
	}
}
