package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
)

const jsonCT = "application/json"

func TestBadRequestsAreRefusedWithAClearMessageAndChangeNothing(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":2,"initiators":["iqn.2000-01.lab:alpha"],"chap":{"user":"u","secret":"0123456789ab"}}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"busy","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes/web/snapshots", "", http.StatusCreated, nil) // web.1
	srv.Exporter.AddSession(api.Session{Volume: "busy", Initiator: "iqn.2000-01.lab:beta", RemoteAddr: "127.0.0.3:4000"})
	before := snapshotState(t, srv)

	free, err := srv.Store.Free()
	if err != nil {
		t.Fatal(err)
	}
	aboveFree := free/(1<<20) + 1<<20 // 1 TiB more than there is

	for _, tc := range []struct {
		name         string
		method, path string
		contentType  string
		body         string
		wantStatus   int
		wantInError  string
	}{
		{"an uppercase name", "POST", "/v1/volumes", jsonCT, `{"name":"Web2","size_mib":1}`, 400, "uppercase"},
		{"a name of 64 characters", "POST", "/v1/volumes", jsonCT, `{"name":"` + strings.Repeat("a", 64) + `","size_mib":1}`, 400, "limit is 63"},
		{"a name with a leading dash", "POST", "/v1/volumes", jsonCT, `{"name":"-x","size_mib":1}`, 400, "starts or ends with '-'"},
		{"a name with an underscore", "POST", "/v1/volumes", jsonCT, `{"name":"a_b","size_mib":1}`, 400, "'_'"},
		{"a name with a path", "POST", "/v1/volumes", jsonCT, `{"name":"../etc","size_mib":1}`, 400, "name"},
		{"an empty name", "POST", "/v1/volumes", jsonCT, `{"name":"","size_mib":1}`, 400, "name is empty"},
		{"no size", "POST", "/v1/volumes", jsonCT, `{"name":"x"}`, 400, "size_mib is 0"},
		{"a negative size", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":-5}`, 400, "size_mib is -5"},
		{"a fractional size", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1.5}`, 400, `"size_mib" must be a whole number`},
		{"a size beyond int64", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1e30}`, 400, `"size_mib" must be a whole number`},
		{"a size as a string", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":"1"}`, 400, `"size_mib" must be a whole number`},
		{"a huge size", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":4611686018427387904}`, 400, "above the limit"},
		{"a size above the free space", "POST", "/v1/volumes", jsonCT, fmt.Sprintf(`{"name":"x","size_mib":%d}`, aboveFree), 409, "MiB free"},
		{"malformed JSON", "POST", "/v1/volumes", jsonCT, `{"name":`, 400, "malformed JSON"},
		{"a syntax error", "POST", "/v1/volumes", jsonCT, `{"name" "x"}`, 400, "malformed JSON at byte"},
		{"an unknown field", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1,"colour":"red"}`, 400, `unknown field "colour"`},
		{"an unknown field in chap", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1,"chap":{"user":"u","secret":"0123456789ab","pass":"x"}}`, 400, `unknown field "pass"`},
		{"trailing garbage", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1} garbage`, 400, "data after the JSON object"},
		{"two objects", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1}{"name":"y","size_mib":1}`, 400, "data after the JSON object"},
		{"an array instead of an object", "POST", "/v1/volumes", jsonCT, `[{"name":"x","size_mib":1}]`, 400, "must be a JSON object"},
		{"an empty body", "POST", "/v1/volumes", jsonCT, ``, 400, "body is empty"},
		{"a body over 64 KiB", "POST", "/v1/volumes", jsonCT, `{"name":"` + strings.Repeat("a", 70000) + `"}`, 413, "larger than"},
		{"a form content type", "POST", "/v1/volumes", "application/x-www-form-urlencoded", `{"name":"x","size_mib":1}`, 415, "application/json"},
		{"no content type", "POST", "/v1/volumes", "", `{"name":"x","size_mib":1}`, 415, "Content-Type is missing"},
		{"an existing name", "POST", "/v1/volumes", jsonCT, `{"name":"web","size_mib":1}`, 409, `volume "web" already exists`},
		{"a clone of a missing volume", "POST", "/v1/volumes", jsonCT, `{"name":"x","source":{"volume":"ghost"}}`, 400, `source.volume: volume "ghost" does not exist`},
		{"a clone of a missing snapshot", "POST", "/v1/volumes", jsonCT, `{"name":"x","source":{"snapshot":"web.99"}}`, 400, `snapshot "web.99" does not exist`},
		{"a clone with two sources", "POST", "/v1/volumes", jsonCT, `{"name":"x","source":{"volume":"web","snapshot":"web.1"}}`, 400, "exactly one"},
		{"a clone with an empty source", "POST", "/v1/volumes", jsonCT, `{"name":"x","source":{}}`, 400, "exactly one"},
		{"a clone smaller than its source", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1,"source":{"volume":"web"}}`, 400, "smaller than the source"},
		{"a bad initiator name", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1,"initiators":["host-a"]}`, 400, "initiators[0]"},
		{"a short CHAP secret", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1,"chap":{"user":"u","secret":"abc"}}`, 400, "chap.secret"},
		{"mutual CHAP without its secret", "POST", "/v1/volumes", jsonCT, `{"name":"x","size_mib":1,"chap":{"user":"u","secret":"0123456789ab","mutual_user":"t"}}`, 400, "chap.mutual_secret"},
		{"a path with ..", "GET", "/v1/volumes/../../etc/passwd", "", "", 400, "not canonical"},
		{"a path with escaped ..", "GET", "/v1/volumes/%2e%2e", "", "", 400, "not canonical"},
		{"a path with an escaped slash", "GET", "/v1/volumes/a%2Fb", "", "", 400, "'/'"},
		{"a path with a double slash", "GET", "/v1//volumes", "", "", 400, "not canonical"},
		{"an uppercase name in the path", "GET", "/v1/volumes/WEB", "", "", 400, "uppercase"},
		{"a missing volume", "GET", "/v1/volumes/ghost", "", "", 404, `volume "ghost" does not exist`},
		{"growing to a smaller size", "PATCH", "/v1/volumes/web", jsonCT, `{"size_mib":1}`, 409, "can only grow"},
		{"growing to zero", "PATCH", "/v1/volumes/web", jsonCT, `{"size_mib":0}`, 400, "size_mib is 0"},
		{"an empty patch", "PATCH", "/v1/volumes/web", jsonCT, `{}`, 400, "nothing to change"},
		{"a patch with an unknown field", "PATCH", "/v1/volumes/web", jsonCT, `{"size":4}`, 400, `unknown field "size"`},
		{"a patch with a bad chap", "PATCH", "/v1/volumes/web", jsonCT, `{"size_mib":4,"chap":{"user":"u","secret":"short"}}`, 400, "chap.secret"},
		{"a patch of a missing volume", "PATCH", "/v1/volumes/ghost", jsonCT, `{"size_mib":4}`, 404, "does not exist"},
		{"deleting a volume with sessions", "DELETE", "/v1/volumes/busy", "", "", 409, "in use by 1 session"},
		{"deleting with a bad force value", "DELETE", "/v1/volumes/busy?force=maybe", "", "", 400, "force=true"},
		{"deleting a missing volume", "DELETE", "/v1/volumes/ghost", "", "", 404, "does not exist"},
		{"a snapshot of a missing volume", "POST", "/v1/volumes/ghost/snapshots", "", "", 404, `volume "ghost" does not exist`},
		{"a snapshot with options", "POST", "/v1/volumes/web/snapshots", jsonCT, `{"name":"x"}`, 400, `unknown field "name"`},
		{"snapshots of a missing volume", "GET", "/v1/volumes/ghost/snapshots", "", "", 404, "does not exist"},
		{"a malformed snapshot id", "GET", "/v1/snapshots/web", "", "", 400, "snapshot id"},
		{"a missing snapshot", "GET", "/v1/snapshots/web.99", "", "", 404, "does not exist"},
		{"deleting a missing snapshot", "DELETE", "/v1/snapshots/web.99", "", "", 404, "does not exist"},
		{"downloading a missing snapshot", "GET", "/v1/snapshots/web.99/data", "", "", 404, "does not exist"},
		{"uploading an unknown format", "PUT", "/v1/volumes/web/data?format=vmdk", "", "data", 400, "format=raw or format=qcow2"},
		{"uploading a VMDK", "PUT", "/v1/volumes/web/data", "", "KDMV....", 400, "qemu-img convert"},
		{"uploading to a volume in use", "PUT", "/v1/volumes/busy/data", "", "data", 409, "in use"},
		{"uploading more than the volume holds", "PUT", "/v1/volumes/web/data", "", strings.Repeat("x", 2<<20+1), 413, "larger than the volume"},
		{"uploading to a missing volume", "PUT", "/v1/volumes/ghost/data", "", "data", 404, "does not exist"},
		{"a method the path does not take", "POST", "/v1/volumes/web", jsonCT, `{}`, 405, "GET, PATCH, DELETE"},
		{"an unknown endpoint", "GET", "/v2/volumes", "", "", 404, "no such endpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = bytes.NewBufferString(tc.body)
			}
			rec := do(t, srv, tc.method, tc.path, tc.contentType, body, apitest.Token)
			if rec.Code != tc.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", rec.Code, tc.wantStatus, rec.Body)
			}
			if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantInError) {
				t.Errorf("error = %q, want it to contain %q", msg, tc.wantInError)
			}
			if after := snapshotState(t, srv); after != before {
				t.Errorf("state changed:\n got %s\nwant %s", after, before)
			}
		})
	}
}
