package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

func writeVolume(t *testing.T, srv *apitest.Server, name string, off int64, p []byte) {
	t.Helper()
	v, err := srv.Store.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(v.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func TestASnapshotSetGoesThroughItsWholeLifeOverTheAPI(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"boot","size_mib":4}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"data","size_mib":2}`, http.StatusCreated, nil)
	writeVolume(t, srv, "boot", 0, []byte("boot sector"))
	domain := `<domain type='kvm'><name>web-1</name><devices><disk/></devices></domain>`

	var set wire.SnapshotSet
	rec := doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["data","boot"],"labels":{"drover.io/vm":"web-1","kind":"backup"},"attachments":{"domain.xml":"`+strings.ReplaceAll(domain, "'", `\u0027`)+`"}}`, http.StatusCreated, &set)
	if strings.Contains(rec.Body.String(), "<domain") {
		t.Errorf("the set's JSON carries the attachment's content, want its name only: %s", rec.Body)
	}
	if got, want := rec.Header().Get("Location"), "/v1/snapshot-sets/"+set.ID; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	if !strings.HasPrefix(set.ID, "set-") || set.Method != store.MethodCopy || set.HoldMS < 0 || time.Since(set.CreatedAt) > time.Minute {
		t.Errorf("set = %+v, want id set-…, method copy, a hold and created now", set)
	}
	if want := map[string]string{"drover.io/vm": "web-1", "kind": "backup"}; !reflect.DeepEqual(set.Labels, want) {
		t.Errorf("labels = %v, want %v", set.Labels, want)
	}
	if !reflect.DeepEqual(set.Attachments, []string{"domain.xml"}) {
		t.Errorf("attachments = %v, want [domain.xml]", set.Attachments)
	}
	if len(set.Snapshots) != 2 || set.Snapshots[0].Volume != "data" || set.Snapshots[1].Volume != "boot" {
		t.Fatalf("snapshots = %+v, want data's then boot's", set.Snapshots)
	}
	holds := srv.Exporter.Holds()
	if len(holds) != 1 || !reflect.DeepEqual(holds[0].Volumes, []string{"data", "boot"}) || !holds[0].Released() || holds[0].Limit != api.DefaultMaxHold {
		t.Errorf("holds = %+v, want one released hold of [data boot] for %s", holds, api.DefaultMaxHold)
	}
	var raw map[string]any
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", http.StatusOK, &raw)
	for _, field := range []string{"id", "created_at", "labels", "attachments", "snapshots", "method", "hold_ms"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("GET snapshot set: no field %q in %v", field, raw)
		}
	}
	var got wire.SnapshotSet
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", http.StatusOK, &got)
	if !reflect.DeepEqual(got, set) {
		t.Errorf("GET snapshot set = %+v, want %+v", got, set)
	}

	rec = do(t, srv, "GET", "/v1/snapshot-sets/"+set.ID+"/attachments/domain.xml", "", nil, apitest.Token)
	if rec.Code != http.StatusOK || rec.Body.String() != domain || rec.Header().Get("Content-Type") != "application/octet-stream" {
		t.Errorf("attachment: status %d, type %q, body %q; want 200, octet-stream and the domain XML", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}

	var snap wire.Snapshot
	doJSON(t, srv, "GET", "/v1/snapshots/"+set.Snapshots[1].ID, "", http.StatusOK, &snap)
	if snap.Set != set.ID {
		t.Errorf("snapshot %s: set = %q, want %q", snap.ID, snap.Set, set.ID)
	}
	rec = do(t, srv, "GET", "/v1/snapshots/"+snap.ID+"/data", "", nil, apitest.Token)
	if !bytes.HasPrefix(rec.Body.Bytes(), []byte("boot sector")) {
		t.Errorf("boot's snapshot starts with %q, want the boot sector", rec.Body.Bytes()[:11])
	}
	rec = doJSON(t, srv, "DELETE", "/v1/snapshots/"+snap.ID, "", http.StatusConflict, nil)
	if msg := errorMessage(t, rec); !strings.Contains(msg, "/v1/snapshot-sets/"+set.ID) {
		t.Errorf("deleting a set's snapshot: error %q, want it to point at the set", msg)
	}

	// A backup outlives the VM's volumes.
	doJSON(t, srv, "DELETE", "/v1/volumes/boot", "", http.StatusNoContent, nil)
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", http.StatusOK, &got)
	if len(got.Snapshots) != 2 {
		t.Errorf("set after deleting a volume has %d snapshots, want 2", len(got.Snapshots))
	}
	var restored wire.Volume
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"boot","source":{"snapshot":"`+snap.ID+`"}}`, http.StatusCreated, &restored)

	doJSON(t, srv, "DELETE", "/v1/snapshot-sets/"+set.ID, "", http.StatusNoContent, nil)
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", http.StatusNotFound, nil)
	doJSON(t, srv, "GET", "/v1/snapshots/"+snap.ID, "", http.StatusNotFound, nil)
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID+"/attachments/domain.xml", "", http.StatusNotFound, nil)
	doJSON(t, srv, "DELETE", "/v1/snapshot-sets/"+set.ID, "", http.StatusNotFound, nil)
}

func TestSnapshotSetsAreListedNewestFirstAndFilteredByLabel(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"db","size_mib":1}`, http.StatusCreated, nil)
	var ids []string
	for _, body := range []string{
		`{"volumes":["web"],"labels":{"vm":"web","env":"prod"}}`,
		`{"volumes":["db"],"labels":{"vm":"db","env":"prod"}}`,
		`{"volumes":["web"],"labels":{"vm":"web","env":"test=1"}}`,
	} {
		var s wire.SnapshotSet
		doJSON(t, srv, "POST", "/v1/snapshot-sets", body, http.StatusCreated, &s)
		ids = append(ids, s.ID)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{ids[2], ids[1], ids[0]}},
		{"?label=vm=web", []string{ids[2], ids[0]}},
		{"?label=vm=web&label=env=prod", []string{ids[0]}},
		{"?label=env=test=1", []string{ids[2]}},
		{"?label=vm=web&label=vm=db", []string{}},
		{"?label=vm=", []string{}},
		{"?label=owner=me", []string{}},
	} {
		var out struct {
			SnapshotSets []wire.SnapshotSet `json:"snapshot_sets"`
		}
		doJSON(t, srv, "GET", "/v1/snapshot-sets"+tc.query, "", http.StatusOK, &out)
		got := []string{}
		for _, s := range out.SnapshotSets {
			got = append(got, s.ID)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("GET /v1/snapshot-sets%s = %v, want %v", tc.query, got, tc.want)
		}
	}
}

func TestASetsLabelsAreReplacedWithPATCH(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
	var set, other wire.SnapshotSet
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["web"],"labels":{"vm":"web","kind":"nightly"},"attachments":{"domain.xml":"<domain/>"}}`, http.StatusCreated, &set)
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["web"],"labels":{"vm":"web"}}`, http.StatusCreated, &other)

	var patched wire.SnapshotSet
	rec := doJSON(t, srv, "PATCH", "/v1/snapshot-sets/"+set.ID, `{"labels":{"vm":"web","kind":"keep","note":"<before upgrade>"}}`, http.StatusOK, &patched)
	want := set
	want.Labels = map[string]string{"vm": "web", "kind": "keep", "note": "<before upgrade>"}
	if !reflect.DeepEqual(patched, want) {
		t.Errorf("PATCH = %+v, want the set with only its labels replaced: %+v", patched, want)
	}
	var got wire.SnapshotSet
	get := doJSON(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", http.StatusOK, &got)
	if rec.Body.String() != get.Body.String() {
		t.Errorf("PATCH answered\n%s\nGET answers\n%s\nwant the same", rec.Body, get.Body)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?label=kind=keep", []string{set.ID}},
		{"?label=kind=nightly", []string{}},
		{"?label=vm=web", []string{other.ID, set.ID}},
	} {
		var out struct {
			SnapshotSets []wire.SnapshotSet `json:"snapshot_sets"`
		}
		doJSON(t, srv, "GET", "/v1/snapshot-sets"+tc.query, "", http.StatusOK, &out)
		ids := []string{}
		for _, s := range out.SnapshotSets {
			ids = append(ids, s.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("GET /v1/snapshot-sets%s after PATCH = %v, want %v", tc.query, ids, tc.want)
		}
	}

	var cleared wire.SnapshotSet
	doJSON(t, srv, "PATCH", "/v1/snapshot-sets/"+set.ID, `{"labels":{}}`, http.StatusOK, &cleared)
	if cleared.Labels == nil || len(cleared.Labels) != 0 {
		t.Errorf(`PATCH {"labels":{}}: labels = %#v, want an empty object`, cleared.Labels)
	}
	if !strings.Contains(do(t, srv, "GET", "/v1/snapshot-sets/"+set.ID, "", nil, apitest.Token).Body.String(), `"labels": {}`) {
		t.Errorf("a set without labels should show \"labels\": {}")
	}
}

// holdless is an exporter that cannot hold writes.
type holdless struct{ *apitest.Exporter }

func (holdless) HoldWrites() {} // not api.Holder's method: hides the embedded one

func TestASetIsOnlyKeptIfItsWritesWereHeldForTheWholeCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		setup      func(*apitest.Exporter)
		wantStatus int
		wantInErr  string
	}{
		{"a hold that cannot drain fails the set", func(e *apitest.Exporter) {
			e.FailHolds(errors.New("hold writes: after 10s, writes were still running on web (1 in flight); nothing was held (retry, or pause the VM first)"))
		}, http.StatusServiceUnavailable, "still running on web (1 in flight); nothing was held (retry, or pause the VM first); the snapshot set was not created"},
		{"a hold that runs out during the cut discards the set", func(e *apitest.Exporter) {
			e.ExpireHolds(true)
		}, http.StatusServiceUnavailable, "took longer than the 10s writes may be held"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := apitest.New(t)
			doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
			before := snapshotState(t, srv)
			tc.setup(srv.Exporter)
			rec := doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["web"],"attachments":{"domain.xml":"<domain/>"}}`, tc.wantStatus, nil)
			if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantInErr) {
				t.Errorf("error = %q, want it to contain %q", msg, tc.wantInErr)
			}
			if after := snapshotState(t, srv); after != before {
				t.Errorf("state changed:\n got %s\nwant %s", after, before)
			}
		})
	}

	t.Run("an exporter that cannot hold writes gets the set without a hold", func(t *testing.T) {
		t.Parallel()
		st, err := store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		a, err := api.New(api.Config{Store: st, Exporter: holdless{apitest.NewExporter()}, Token: apitest.Token})
		if err != nil {
			t.Fatal(err)
		}
		srv := &apitest.Server{API: a, Store: st}
		doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
		var set wire.SnapshotSet
		doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["web"]}`, http.StatusCreated, &set)
		if set.HoldMS != 0 || len(set.Snapshots) != 1 {
			t.Errorf("set = %+v, want one snapshot and hold_ms 0", set)
		}
	})
}

func TestASingleSnapshotIsCutUnderAWriteHoldLikeASetOfOne(t *testing.T) {
	t.Parallel()
	t.Run("the hold covers the cut and is released", func(t *testing.T) {
		t.Parallel()
		srv := apitest.New(t)
		doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
		var raw map[string]any
		doJSON(t, srv, "POST", "/v1/volumes/web/snapshots", "", http.StatusCreated, &raw)
		if _, ok := raw["hold_ms"]; ok || raw["id"] != "web.1" || raw["volume"] != "web" {
			t.Errorf("snapshot = %v, want web.1 of web as before (no hold_ms)", raw)
		}
		holds := srv.Exporter.Holds()
		if len(holds) != 1 || !reflect.DeepEqual(holds[0].Volumes, []string{"web"}) || !holds[0].Released() || holds[0].Limit != api.DefaultMaxHold {
			t.Errorf("holds = %+v, want one released hold of [web] for %s", holds, api.DefaultMaxHold)
		}
	})
	for _, tc := range []struct {
		name      string
		setup     func(*apitest.Exporter)
		wantInErr string
	}{
		{"a hold that cannot drain fails the snapshot", func(e *apitest.Exporter) {
			e.FailHolds(errors.New("hold writes: after 10s, writes were still running on web (1 in flight); nothing was held (retry, or pause the VM first)"))
		}, "still running on web (1 in flight); nothing was held (retry, or pause the VM first); the snapshot was not created"},
		{"a hold that runs out during the cut discards the snapshot", func(e *apitest.Exporter) {
			e.ExpireHolds(true)
		}, "cutting the snapshot took longer than the 10s writes may be held, so it was not kept; a data directory on a filesystem with reflinks (XFS, btrfs) makes the cut instant; otherwise raise the daemon's --max-hold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := apitest.New(t)
			doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
			before := snapshotState(t, srv)
			tc.setup(srv.Exporter)
			rec := doJSON(t, srv, "POST", "/v1/volumes/web/snapshots", "", http.StatusServiceUnavailable, nil)
			if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantInErr) {
				t.Errorf("error = %q, want it to contain %q", msg, tc.wantInErr)
			}
			if after := snapshotState(t, srv); after != before {
				t.Errorf("state changed:\n got %s\nwant %s", after, before)
			}
		})
	}
	t.Run("an exporter that cannot hold writes gets the snapshot without a hold", func(t *testing.T) {
		t.Parallel()
		st, err := store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		a, err := api.New(api.Config{Store: st, Exporter: holdless{apitest.NewExporter()}, Token: apitest.Token})
		if err != nil {
			t.Fatal(err)
		}
		srv := &apitest.Server{API: a, Store: st}
		doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
		doJSON(t, srv, "POST", "/v1/volumes/web/snapshots", "", http.StatusCreated, nil)
	})
}

func TestSnapshotDataServesRangesAndExtentsListTheData(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"vm","size_mib":8}`, http.StatusCreated, nil)
	writeVolume(t, srv, "vm", 0, bytes.Repeat([]byte("a"), 8192))
	writeVolume(t, srv, "vm", 5<<20, []byte("far away"))
	var snap wire.Snapshot
	doJSON(t, srv, "POST", "/v1/volumes/vm/snapshots", "", http.StatusCreated, &snap)

	var ext wire.Extents
	doJSON(t, srv, "GET", "/v1/snapshots/"+snap.ID+"/extents", "", http.StatusOK, &ext)
	want := wire.Extents{SizeBytes: 8 << 20, Extents: []wire.Extent{{Offset: 0, Length: 8192}, {Offset: 5 << 20, Length: 4096}}}
	if !reflect.DeepEqual(ext, want) {
		t.Errorf("extents = %+v, want %+v", ext, want)
	}

	get := func(header map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/v1/snapshots/"+snap.ID+"/data", nil)
		req.Header.Set("Authorization", "Bearer "+apitest.Token)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		srv.API.ServeHTTP(rec, req)
		return rec
	}
	full := get(nil)
	etag := full.Header().Get("ETag")
	if full.Code != http.StatusOK || etag == "" || full.Header().Get("Accept-Ranges") != "bytes" {
		t.Fatalf("GET data: status %d, ETag %q, Accept-Ranges %q; want 200 with an ETag and byte ranges", full.Code, etag, full.Header().Get("Accept-Ranges"))
	}
	for _, tc := range []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantRange  string
		wantBody   string
	}{
		{"one range", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", 5<<20, 5<<20+7)}, http.StatusPartialContent, fmt.Sprintf("bytes %d-%d/%d", 5<<20, 5<<20+7, 8<<20), "far away"},
		{"a range with the current ETag", map[string]string{"Range": "bytes=8190-8193", "If-Range": etag}, http.StatusPartialContent, fmt.Sprintf("bytes 8190-8193/%d", 8<<20), "aa\x00\x00"},
		{"a range with another ETag gets everything", map[string]string{"Range": "bytes=0-3", "If-Range": `"other"`}, http.StatusOK, "", ""},
		{"a range past the end", map[string]string{"Range": fmt.Sprintf("bytes=%d-", 8<<20)}, http.StatusRequestedRangeNotSatisfiable, fmt.Sprintf("bytes */%d", 8<<20), ""},
	} {
		rec := get(tc.header)
		if rec.Code != tc.wantStatus || rec.Header().Get("Content-Range") != tc.wantRange {
			t.Errorf("%s: status %d, Content-Range %q; want %d, %q", tc.name, rec.Code, rec.Header().Get("Content-Range"), tc.wantStatus, tc.wantRange)
		}
		if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
			t.Errorf("%s: body %q, want %q", tc.name, rec.Body, tc.wantBody)
		}
		if tc.wantStatus == http.StatusOK && rec.Body.Len() != 8<<20 {
			t.Errorf("%s: %d bytes, want the whole snapshot", tc.name, rec.Body.Len())
		}
	}
}

func FuzzDecodeUpdateSnapshotSet(f *testing.F) {
	for _, s := range []string{
		`{"labels":{"drover.io/vm":"web-1"}}`, `{"labels":{}}`, `{"labels":null}`, `{}`,
		`{"labels":{"K":"v"}}`, `{"labels":{"k":1}}`, `{"labels":[]}`, `{"labels":{},"x":1}`, `[]`, `null`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := api.DecodeUpdateSnapshotSet(strings.NewReader(body))
		if err != nil {
			if err.Error() == "" {
				t.Errorf("DecodeUpdateSnapshotSet(%q) refused with an empty message", body)
			}
			return
		}
		if req.Labels == nil || store.CheckLabels(req.Labels) != nil {
			t.Errorf("accepted missing or bad labels: %q gave %+v", body, req)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := api.DecodeUpdateSnapshotSet(bytes.NewReader(b))
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Errorf("accepted %q but its re-encoding %s decodes to %+v, %v", body, b, again, err)
		}
	})
}

func FuzzDecodeCreateSnapshotSet(f *testing.F) {
	for _, s := range []string{
		`{"volumes":["web-1","data"],"labels":{"drover.io/vm":"web-1"},"attachments":{"domain.xml":"<domain/>"}}`,
		`{"volumes":["a"]}`,
		`{"volumes":["a","a"]}`,
		`{"volumes":[],"labels":{"K":"v"}}`,
		`{"volumes":["a"],"attachments":{".x":""}}`,
		`{"volumes":"a"}`, `[]`, `null`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := api.DecodeCreateSnapshotSet(strings.NewReader(body))
		if err != nil {
			if err.Error() == "" {
				t.Errorf("DecodeCreateSnapshotSet(%q) refused with an empty message", body)
			}
			return
		}
		if store.CheckSetVolumes(req.Volumes) != nil || store.CheckLabels(req.Labels) != nil {
			t.Errorf("accepted bad volumes or labels: %+v", req)
		}
		for name := range req.Attachments {
			if store.CheckAttachmentName(name) != nil {
				t.Errorf("accepted attachment name %q", name)
			}
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := api.DecodeCreateSnapshotSet(bytes.NewReader(b))
		if err != nil {
			t.Errorf("accepted %q but refused its re-encoding %s: %v", body, b, err)
			return
		}
		if !reflect.DeepEqual(again.Volumes, req.Volumes) {
			t.Errorf("round trip changed the volumes: %v became %v", req.Volumes, again.Volumes)
		}
	})
}
