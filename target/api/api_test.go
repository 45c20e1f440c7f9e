package api_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

func TestAVolumeGoesThroughItsWholeLifeOverTheAPI(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)

	var v wire.Volume
	rec := doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web-1","size_mib":8,"initiators":["iqn.2008-11.org.linux-kvm:vm1"],"chap":{"user":"vm","secret":"super-secret-1","mutual_user":"tgt","mutual_secret":"super-secret-2"}}`, http.StatusCreated, &v)
	if strings.Contains(rec.Body.String(), "super-secret") {
		t.Errorf("create response reveals a CHAP secret: %s", rec.Body)
	}
	if got, want := rec.Header().Get("Location"), "/v1/volumes/web-1"; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	want := wire.Volume{Name: "web-1", SizeMiB: 8, IQN: "iqn.2026-11.io.drover:web-1", LUN: 0,
		Initiators: []string{"iqn.2008-11.org.linux-kvm:vm1"}, CHAP: &wire.PublicCHAP{User: "vm", MutualUser: "tgt"}}
	if v.Name != want.Name || v.SizeMiB != want.SizeMiB || v.IQN != want.IQN || v.LUN != want.LUN ||
		strings.Join(v.Initiators, ",") != strings.Join(want.Initiators, ",") || v.CHAP == nil || *v.CHAP != *want.CHAP {
		t.Errorf("created volume = %+v, want %+v", v, want)
	}
	if time.Since(v.CreatedAt) > time.Minute {
		t.Errorf("created_at = %v, want about now", v.CreatedAt)
	}
	ex, ok := srv.Exporter.Export("web-1")
	if !ok || ex.IQN != want.IQN || ex.CHAP == nil || ex.CHAP.Secret != "super-secret-1" || ex.LUN != api.LUN {
		t.Fatalf("export = %+v (exported %v), want IQN %s with the CHAP secret", ex, ok, want.IQN)
	}

	var list struct{ Volumes []wire.Volume }
	doJSON(t, srv, "GET", "/v1/volumes", "", http.StatusOK, &list)
	if len(list.Volumes) != 1 || list.Volumes[0].Name != "web-1" {
		t.Errorf("list = %+v, want [web-1]", list.Volumes)
	}

	var patched wire.Volume
	doJSON(t, srv, "PATCH", "/v1/volumes/web-1", `{"size_mib":16,"chap":null}`, http.StatusOK, &patched)
	if patched.SizeMiB != 16 || patched.CHAP != nil {
		t.Errorf("after PATCH: size %d chap %+v, want 16 and no CHAP", patched.SizeMiB, patched.CHAP)
	}
	if ex, _ := srv.Exporter.Export("web-1"); ex.CHAP != nil {
		t.Errorf("export CHAP after removing it = %+v, want nil", ex.CHAP)
	}

	img := bytes.Repeat([]byte("drover"), 1000)
	rec = do(t, srv, "PUT", "/v1/volumes/web-1/data", "application/octet-stream", bytes.NewReader(img), apitest.Token)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("PUT data: status %d, want 204; %s", rec.Code, rec.Body)
	}
	if _, ok := srv.Exporter.Export("web-1"); !ok {
		t.Errorf("volume is not exported after the upload")
	}

	var snap wire.Snapshot
	doJSON(t, srv, "POST", "/v1/volumes/web-1/snapshots", "", http.StatusCreated, &snap)
	if snap.Volume != "web-1" || snap.SizeMiB != 16 || snap.Method == "" {
		t.Errorf("snapshot = %+v, want one of web-1, 16 MiB, with a method", snap)
	}
	var snaps struct{ Snapshots []wire.Snapshot }
	doJSON(t, srv, "GET", "/v1/volumes/web-1/snapshots", "", http.StatusOK, &snaps)
	if len(snaps.Snapshots) != 1 || snaps.Snapshots[0].ID != snap.ID {
		t.Errorf("snapshots = %+v, want [%s]", snaps.Snapshots, snap.ID)
	}
	doJSON(t, srv, "GET", "/v1/snapshots/"+snap.ID, "", http.StatusOK, &snap)

	rec = do(t, srv, "GET", "/v1/snapshots/"+snap.ID+"/data", "", nil, apitest.Token)
	data, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusOK || int64(len(data)) != 16*store.MiB || !bytes.Equal(data[:len(img)], img) {
		t.Errorf("snapshot data: status %d, %d bytes; want 200 and the uploaded image in %d bytes", rec.Code, len(data), 16*store.MiB)
	}

	var clone wire.Volume
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web-2","source":{"snapshot":"`+snap.ID+`"}}`, http.StatusCreated, &clone)
	if clone.SizeMiB != 16 || clone.Source == nil || clone.Source.Snapshot != snap.ID {
		t.Errorf("clone = %+v, want 16 MiB from %s", clone, snap.ID)
	}

	doJSON(t, srv, "DELETE", "/v1/volumes/web-1", "", http.StatusNoContent, nil)
	doJSON(t, srv, "GET", "/v1/volumes/web-1", "", http.StatusNotFound, nil)
	if _, ok := srv.Exporter.Export("web-1"); ok {
		t.Errorf("web-1 is still exported after delete")
	}
	doJSON(t, srv, "DELETE", "/v1/snapshots/"+snap.ID, "", http.StatusNoContent, nil)
}

func TestDeletingAVolumeInUseNeedsForce(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"db","size_mib":1,"initiators":["iqn.2000-01.lab:alpha"]}`, http.StatusCreated, nil)
	srv.Exporter.AddSession(wire.Session{Volume: "db", Initiator: "iqn.2000-01.lab:alpha", RemoteAddr: "127.0.0.2:5000"})

	rec := doJSON(t, srv, "DELETE", "/v1/volumes/db", "", http.StatusConflict, nil)
	if msg := errorMessage(t, rec); !strings.Contains(msg, "iqn.2000-01.lab:alpha") || !strings.Contains(msg, "force=true") {
		t.Errorf("error = %q, want it to name the initiator and ?force=true", msg)
	}
	doJSON(t, srv, "DELETE", "/v1/volumes/db?force=true", "", http.StatusNoContent, nil)
	if n := len(srv.Exporter.Sessions()); n != 0 {
		t.Errorf("sessions after forced delete = %d, want 0", n)
	}
}

func TestSessionsAreListed(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	since := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	srv.Exporter.AddSession(wire.Session{Volume: "a", TargetIQN: "iqn.x:a", Initiator: "iqn.y:h", RemoteAddr: "127.0.0.1:1", Since: since})
	var got struct{ Sessions []wire.Session }
	doJSON(t, srv, "GET", "/v1/sessions", "", http.StatusOK, &got)
	want := wire.Session{Volume: "a", TargetIQN: "iqn.x:a", Initiator: "iqn.y:h", RemoteAddr: "127.0.0.1:1", Since: since}
	if len(got.Sessions) != 1 || got.Sessions[0] != want {
		t.Errorf("sessions = %+v, want [%+v]", got.Sessions, want)
	}
}

func TestHealthNeedsNoTokenButEverythingElseDoes(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"keep","size_mib":1}`, http.StatusCreated, nil)
	var snap wire.Snapshot
	doJSON(t, srv, "POST", "/v1/volumes/keep/snapshots", "", http.StatusCreated, &snap)
	var set wire.SnapshotSet
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["keep"],"labels":{"vm":"keep"},"attachments":{"domain.xml":"<domain/>"}}`, http.StatusCreated, &set)
	doJSON(t, srv, "POST", "/v1/schedules", `{"vm":"keep","volumes":["keep"],"schedule":"0 3 * * *","keep":{"daily":7}}`, http.StatusCreated, nil)
	before := snapshotState(t, srv)

	if rec := do(t, srv, "GET", "/v1/health", "", nil, ""); rec.Code != http.StatusOK {
		t.Errorf("GET /v1/health without token: status %d, want 200", rec.Code)
	}
	requests := []struct{ method, path, body string }{
		{"GET", "/v1/volumes", ""},
		{"POST", "/v1/volumes", `{"name":"evil","size_mib":1}`},
		{"GET", "/v1/volumes/keep", ""},
		{"PATCH", "/v1/volumes/keep", `{"size_mib":2}`},
		{"DELETE", "/v1/volumes/keep", ""},
		{"DELETE", "/v1/volumes/keep?force=true", ""},
		{"PUT", "/v1/volumes/keep/data", "overwrite"},
		{"POST", "/v1/volumes/keep/snapshots", ""},
		{"GET", "/v1/volumes/keep/snapshots", ""},
		{"GET", "/v1/snapshots/" + snap.ID, ""},
		{"DELETE", "/v1/snapshots/" + snap.ID, ""},
		{"GET", "/v1/snapshots/" + snap.ID + "/data", ""},
		{"GET", "/v1/snapshots/" + snap.ID + "/extents", ""},
		{"GET", "/v1/snapshot-sets", ""},
		{"GET", "/v1/snapshot-sets?label=vm=keep", ""},
		{"POST", "/v1/snapshot-sets", `{"volumes":["keep"]}`},
		{"GET", "/v1/snapshot-sets/" + set.ID, ""},
		{"PATCH", "/v1/snapshot-sets/" + set.ID, `{"labels":{"vm":"evil"}}`},
		{"DELETE", "/v1/snapshot-sets/" + set.ID, ""},
		{"GET", "/v1/snapshot-sets/" + set.ID + "/attachments/domain.xml", ""},
		{"GET", "/v1/sessions", ""},
		{"GET", "/v1/schedules", ""},
		{"POST", "/v1/schedules", `{"vm":"keep","volumes":["keep"],"schedule":"* * * * *","keep":{"last":1}}`},
		{"GET", "/v1/schedules/sched-1", ""},
		{"PUT", "/v1/schedules/sched-1", `{"vm":"keep","volumes":["keep"],"schedule":"* * * * *","keep":{"last":9}}`},
		{"DELETE", "/v1/schedules/sched-1", ""},
		{"POST", "/v1/restic-checks", `{"repository":"/tmp/r","password_file":"/etc/passwd"}`},
		{"GET", "/metrics", ""},
		{"GET", "/v1/no-such-thing", ""},
	}
	for _, token := range []string{"", "wrong-token", apitest.Token + "x", strings.ToUpper(apitest.Token)} {
		for _, r := range requests {
			rec := do(t, srv, r.method, r.path, "application/json", strings.NewReader(r.body), token)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: status %d, want 401", r.method, r.path, token, rec.Code)
				continue
			}
			if msg := errorMessage(t, rec); !strings.Contains(msg, "token") {
				t.Errorf("%s %s: error %q, want it to mention the token", r.method, r.path, msg)
			}
		}
	}
	// A token in another scheme is no token.
	req := strings.NewReader("")
	rec := do(t, srv, "GET", "/v1/volumes", "", req, "")
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("no Authorization: status %d, want 401", rec.Code)
	}
	if after := snapshotState(t, srv); after != before {
		t.Errorf("unauthorised requests changed the state:\n got %s\nwant %s", after, before)
	}
}

func TestTheAPIRefusesToRunWithoutAToken(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, token := range []string{"", "   "} {
		if _, err := api.New(api.Config{Store: st, Exporter: apitest.NewExporter(), Token: token}); err == nil {
			t.Errorf("api.New with token %q succeeded, want an error", token)
		}
	}
}

func TestMetricsAreServedBehindTheToken(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "drover_up 1\n") })
	a, err := api.New(api.Config{Store: st, Exporter: apitest.NewExporter(), Token: "t0ken", Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	srv := &apitest.Server{API: a}
	if rec := do(t, srv, "GET", "/metrics", "", nil, ""); rec.Code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without token: status %d, want 401", rec.Code)
	}
	rec := do(t, srv, "GET", "/metrics", "", nil, "t0ken")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "drover_up 1") {
		t.Errorf("GET /metrics: status %d body %q, want 200 with the metrics", rec.Code, rec.Body)
	}
}
