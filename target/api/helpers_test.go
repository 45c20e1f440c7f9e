package api_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api/apitest"
)

// do sends one request straight to the handler.
func do(t *testing.T, srv *apitest.Server, method, target, contentType string, body io.Reader, token string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	srv.API.ServeHTTP(rec, req)
	return rec
}

// doJSON sends body as JSON with the right token and decodes the answer
// into out (if not nil), failing unless the status is want.
func doJSON(t *testing.T, srv *apitest.Server, method, target, body string, want int, out any) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	ct := ""
	if body != "" {
		r, ct = strings.NewReader(body), "application/json"
	}
	rec := do(t, srv, method, target, ct, r, apitest.Token)
	if rec.Code != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, target, rec.Code, want, rec.Body)
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, target, rec.Body, err)
		}
	}
	return rec
}

// snapshotState renders all state a request could change: volumes with
// access settings and file content, snapshots, snapshot sets, exports,
// sessions, write holds not released and fences.
func snapshotState(t *testing.T, srv *apitest.Server) string {
	t.Helper()
	var lines []string
	vols, err := srv.Store.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		b, err := os.ReadFile(v.Path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		lines = append(lines, fmt.Sprintf("volume %s %d %v %+v %s", v.Name, v.SizeMiB, v.Access.Initiators, v.Access.CHAP, hex.EncodeToString(sum[:4])))
	}
	snaps, err := srv.Store.ListSnapshots("")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snaps {
		lines = append(lines, fmt.Sprintf("snapshot %s %s %d set=%q", s.ID, s.Volume, s.SizeMiB, s.Set))
	}
	sets, err := srv.Store.ListSnapshotSets(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		var ids []string
		for _, sn := range s.Snapshots {
			ids = append(ids, sn.ID)
		}
		lines = append(lines, fmt.Sprintf("set %s %v %v %v", s.ID, s.Labels, s.Attachments, ids))
	}
	for i, h := range srv.Exporter.Holds() {
		if !h.Released() {
			lines = append(lines, fmt.Sprintf("hold %d of %v not released", i, h.Volumes))
		}
	}
	for _, ex := range srv.Exporter.Exports() {
		lines = append(lines, fmt.Sprintf("export %s %s %d %v %+v", ex.Name, ex.IQN, ex.LUN, ex.Initiators, ex.CHAP))
	}
	for _, s := range srv.Exporter.Sessions() {
		lines = append(lines, fmt.Sprintf("session %s %s", s.Volume, s.Initiator))
	}
	fences, err := srv.Store.Fences()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fences {
		lines = append(lines, fmt.Sprintf("fence %s %q %s", f.Initiator, f.Reason, f.CreatedAt))
	}
	schedules, err := srv.Store.Schedules()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range schedules {
		lines = append(lines, fmt.Sprintf("schedule %s %s %v %q %+v %+v %v %d %+v", s.ID, s.VM, s.Volumes, s.Cron, s.Keep, s.Restic, s.Labels, len(s.DomainXML), s.LastRun))
	}
	for _, name := range srv.Exporter.Fenced() {
		lines = append(lines, "fenced in the engine "+name)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func errorMessage(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body is not {\"error\": ...}: %v", err)
	}
	return body.Error
}

var _ = http.StatusOK
