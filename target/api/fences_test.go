package api_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

const (
	alpha = "iqn.2008-11.org.linux-kvm:alpha"
	beta  = "iqn.2008-11.org.linux-kvm:beta"
)

func TestAFenceIsKeptEnforcedListedAndLifted(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1,"initiators":["`+alpha+`","`+beta+`"]}`, http.StatusCreated, nil)
	srv.Exporter.AddSession(wire.Session{Volume: "web", Initiator: alpha, RemoteAddr: "127.0.0.2:4000"})
	srv.Exporter.AddSession(wire.Session{Volume: "web", Initiator: alpha, RemoteAddr: "127.0.0.2:4001"})
	srv.Exporter.AddSession(wire.Session{Volume: "web", Initiator: beta, RemoteAddr: "127.0.0.3:4000"})

	var f wire.Fence
	rec := doJSON(t, srv, "PUT", "/v1/fences/"+alpha, `{"reason":"host alpha declared failed"}`, http.StatusCreated, &f)
	if f.Initiator != alpha || f.Reason != "host alpha declared failed" || f.CreatedAt.IsZero() {
		t.Errorf("PUT answer: got %+v, want the fence of %s", f, alpha)
	}
	if loc := rec.Header().Get("Location"); loc != "/v1/fences/"+alpha {
		t.Errorf("Location: got %q, want /v1/fences/%s", loc, alpha)
	}
	if got := srv.Exporter.Fenced(); !slices.Equal(got, []string{alpha}) {
		t.Errorf("fenced in the engine: got %v, want [%s]", got, alpha)
	}
	var ss wire.SessionList
	doJSON(t, srv, "GET", "/v1/sessions", "", http.StatusOK, &ss)
	if len(ss.Sessions) != 1 || ss.Sessions[0].Initiator != beta {
		t.Errorf("sessions after the fence: got %+v, want beta's only", ss.Sessions)
	}

	// Idempotent: the same fence, its first time kept, its reason new.
	var again wire.Fence
	doJSON(t, srv, "PUT", "/v1/fences/"+alpha, `{"reason":"still failed"}`, http.StatusOK, &again)
	if !again.CreatedAt.Equal(f.CreatedAt) || again.Reason != "still failed" {
		t.Errorf("PUT again: got %+v, want created_at %s and the new reason", again, f.CreatedAt)
	}
	doJSON(t, srv, "PUT", "/v1/fences/eui.0123456789ABCDEF", `{"reason":"old box"}`, http.StatusCreated, nil)
	var list wire.FenceList
	doJSON(t, srv, "GET", "/v1/fences", "", http.StatusOK, &list)
	if len(list.Fences) != 2 || list.Fences[0].Initiator != "eui.0123456789ABCDEF" || list.Fences[1] != again {
		t.Errorf("GET /v1/fences: got %+v, want the eui fence, then %+v", list.Fences, again)
	}

	doJSON(t, srv, "DELETE", "/v1/fences/"+alpha, "", http.StatusNoContent, nil)
	if got := srv.Exporter.Fenced(); !slices.Equal(got, []string{"eui.0123456789ABCDEF"}) {
		t.Errorf("fenced in the engine after DELETE: got %v, want the eui one only", got)
	}
	if _, err := srv.Store.GetFence(alpha); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the store after DELETE: got %v, want no fence of %s", err, alpha)
	}
	doJSON(t, srv, "DELETE", "/v1/fences/"+alpha, "", http.StatusNotFound, nil)
}

func TestAnEmptyFenceListIsAList(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	if body := doJSON(t, srv, "GET", "/v1/fences", "", http.StatusOK, nil).Body.String(); !strings.Contains(body, `"fences": []`) {
		t.Errorf("GET /v1/fences = %s, want an empty list", body)
	}
}

// TestAFenceWhoseSessionsDoNotEndInTimeIsAnsweredWith503: the fence stays
// (in the store and in the engine), and the answer says to retry.
func TestAFenceWhoseSessionsDoNotEndInTimeIsAnsweredWith503(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	srv.Exporter.FailFences(fmt.Errorf("fence %s: 1 of its 1 sessions have not ended yet: %w", alpha, context.DeadlineExceeded))
	rec := do(t, srv, "PUT", "/v1/fences/"+alpha, jsonCT, strings.NewReader(`{"reason":"down"}`), apitest.Token)
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status: got %d, want 503", rec.Code)
	}
	if msg := errorMessage(t, rec); !strings.Contains(msg, "retry the PUT") {
		t.Errorf("error: got %q, want it to say to retry", msg)
	}
	if _, err := srv.Store.GetFence(alpha); err != nil {
		t.Errorf("the store after a fence that did not finish: got %v, want the fence kept", err)
	}
	srv.Exporter.FailFences(nil)
	doJSON(t, srv, "PUT", "/v1/fences/"+alpha, `{"reason":"down"}`, http.StatusOK, nil)
}

// TestAnEngineThatCannotFenceRefusesFences: 501, and nothing is kept.
func TestAnEngineThatCannotFenceRefusesFences(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := api.New(api.Config{Store: st, Exporter: struct{ api.Exporter }{apitest.NewExporter()}, Token: apitest.Token})
	if err != nil {
		t.Fatal(err)
	}
	srv := &apitest.Server{API: a, Store: st}
	for _, m := range []string{"PUT", "DELETE"} {
		rec := do(t, srv, m, "/v1/fences/"+alpha, jsonCT, strings.NewReader(`{"reason":"down"}`), apitest.Token)
		if rec.Code != http.StatusNotImplemented {
			t.Errorf("%s: status %d, want 501", m, rec.Code)
		}
	}
	if fences, _ := st.Fences(); len(fences) != 0 {
		t.Errorf("fences kept: got %+v, want none", fences)
	}
}
