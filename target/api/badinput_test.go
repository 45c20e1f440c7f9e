package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

const jsonCT = "application/json"

func TestBadRequestsAreRefusedWithAClearMessageAndChangeNothing(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":2,"initiators":["iqn.2000-01.lab:alpha"],"chap":{"user":"u","secret":"0123456789ab"}}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"busy","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes/web/snapshots", "", http.StatusCreated, nil) // web.1
	// set-1, with the snapshots web.2 and busy.3
	// Its label shows if a bad relabelling dropped or replaced it.
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["web","busy"],"labels":{"vm":"web"},"attachments":{"domain.xml":"<domain/>"}}`, http.StatusCreated, nil)
	srv.Exporter.AddSession(wire.Session{Volume: "busy", Initiator: "iqn.2000-01.lab:beta", RemoteAddr: "127.0.0.3:4000"})
	doJSON(t, srv, "PUT", "/v1/fences/iqn.2000-01.lab:gamma", `{"reason":"gamma declared failed"}`, http.StatusCreated, nil)
	before := snapshotState(t, srv)
	manyVolumes := `"v0"` + strings.Repeat(`,"v"`, 64)
	manyLabels, manyAttachments := `"k0":""`, `"a0":""`
	for i := 1; i <= 32; i++ {
		manyLabels += fmt.Sprintf(`,"k%d":""`, i)
	}
	for i := 1; i <= 16; i++ {
		manyAttachments += fmt.Sprintf(`,"a%d":""`, i)
	}

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
		{"a snapshot set without volumes", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":[]}`, 400, "volumes is empty"},
		{"a snapshot set with no volumes field", "POST", "/v1/snapshot-sets", jsonCT, `{"labels":{"vm":"web"}}`, 400, "volumes is empty"},
		{"a snapshot set of 65 volumes", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":[` + manyVolumes + `]}`, 400, "limit is 64"},
		{"a snapshot set listing a volume twice", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web","busy","web"]}`, 400, `volumes[2]: "web" is listed twice`},
		{"a snapshot set with a bad volume name", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web","Busy"]}`, 400, "volumes[1]"},
		{"a snapshot set of a missing volume", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web","ghost"]}`, 404, `volumes[1]: volume "ghost" does not exist`},
		{"a snapshot set with volumes as a string", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":"web"}`, 400, `"volumes" must be a list of strings`},
		{"a snapshot set with an unknown field", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"name":"x"}`, 400, `unknown field "name"`},
		{"a snapshot set with 33 labels", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"labels":{` + manyLabels + `}}`, 400, "labels has 33 entries, the limit is 32"},
		{"a snapshot set with an uppercase label key", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"labels":{"VM":"web"}}`, 400, `labels: key "VM"`},
		{"a snapshot set with a label key of 64 characters", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"labels":{"` + strings.Repeat("k", 64) + `":"x"}}`, 400, "labels: key"},
		{"a snapshot set with a label value of 257 bytes", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"labels":{"k":"` + strings.Repeat("v", 257) + `"}}`, 400, "257 bytes, the limit is 256"},
		{"a snapshot set with a number as a label value", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"labels":{"k":1}}`, 400, "labels"},
		{"a snapshot set with an attachment name with a slash", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"attachments":{"../domain.xml":"x"}}`, 400, "attachments: name"},
		{"a snapshot set with 17 attachments", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"attachments":{` + manyAttachments + `}}`, 400, "attachments has 17 entries, the limit is 16"},
		{"a snapshot set with attachments over 1 MiB", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"],"attachments":{"a.xml":"` + strings.Repeat("x", 1<<19) + `","b.xml":"` + strings.Repeat("x", 1<<19+1) + `"}}`, 400, "1048577 bytes together, the limit is 1048576"},
		{"a snapshot set with 1 MiB of escaped attachments is not too large", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web","ghost"],"attachments":{"a.xml":"` + strings.Repeat(`\u003c`, 1<<20) + `"}}`, 404, `volume "ghost" does not exist`},
		{"a snapshot set body over 8 MiB", "POST", "/v1/snapshot-sets", jsonCT, `{"volumes":["web"]` + strings.Repeat(" ", 8<<20) + `}`, 413, "larger than 8388608 bytes"},
		{"a snapshot set without a content type", "POST", "/v1/snapshot-sets", "", `{"volumes":["web"]}`, 415, "Content-Type is missing"},
		{"a snapshot set that is not JSON", "POST", "/v1/snapshot-sets", jsonCT, `volumes=web`, 400, "malformed JSON"},
		{"a label filter without a value", "GET", "/v1/snapshot-sets?label=vm", "", "", 400, "label=KEY=VALUE"},
		{"a label filter with a bad key", "GET", "/v1/snapshot-sets?label=VM=web", "", "", 400, `key "VM"`},
		{"a malformed snapshot set id", "GET", "/v1/snapshot-sets/web.1", "", "", 400, "snapshot set id"},
		{"a missing snapshot set", "GET", "/v1/snapshot-sets/set-99", "", "", 404, `snapshot set "set-99" does not exist`},
		{"deleting a missing snapshot set", "DELETE", "/v1/snapshot-sets/set-99", "", "", 404, `snapshot set "set-99" does not exist`},
		{"deleting a malformed snapshot set id", "DELETE", "/v1/snapshot-sets/set-01", "", "", 400, "snapshot set id"},
		{"an attachment of a missing set", "GET", "/v1/snapshot-sets/set-99/attachments/domain.xml", "", "", 404, "does not exist"},
		{"a missing attachment", "GET", "/v1/snapshot-sets/set-1/attachments/meta.json", "", "", 404, `no attachment "meta.json"`},
		{"an attachment with a bad name", "GET", "/v1/snapshot-sets/set-1/attachments/Domain.xml", "", "", 400, "name"},
		{"deleting a snapshot of a set", "DELETE", "/v1/snapshots/web.2", "", "", 409, "delete the set"},
		{"relabelling a set without labels", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{}`, 400, "labels is required"},
		{"relabelling a set with null labels", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":null}`, 400, "labels is required"},
		{"relabelling a set with an unknown field", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{"vm":"db"},"attachments":{}}`, 400, `unknown field "attachments"`},
		{"relabelling a set with 33 labels", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{` + manyLabels + `}}`, 400, "labels has 33 entries, the limit is 32"},
		{"relabelling a set with an uppercase label key", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{"vm":"db","VM":"db"}}`, 400, `labels: key "VM"`},
		{"relabelling a set with an empty label key", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{"":"db"}}`, 400, `labels: key ""`},
		{"relabelling a set with a label key of 64 characters", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{"` + strings.Repeat("k", 64) + `":"x"}}`, 400, "labels: key"},
		{"relabelling a set with a label value of 257 bytes", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{"k":"` + strings.Repeat("v", 257) + `"}}`, 400, "257 bytes, the limit is 256"},
		{"relabelling a set with a number as a label value", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{"k":1}}`, 400, `field "labels" must be a string, not number`},
		{"relabelling a set with labels as a list", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":["vm=db"]}`, 400, `"labels" must be an object of strings`},
		{"relabelling a set with data after the object", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{}} {}`, 400, "data after the JSON object"},
		{"relabelling a set with a body that is not JSON", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `labels=vm`, 400, "malformed JSON"},
		{"relabelling a set without a content type", "PATCH", "/v1/snapshot-sets/set-1", "", `{"labels":{}}`, 415, "Content-Type is missing"},
		{"relabelling a set with a body over 64 KiB", "PATCH", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{}` + strings.Repeat(" ", 64<<10) + `}`, 413, "larger than 65536 bytes"},
		{"relabelling a missing set", "PATCH", "/v1/snapshot-sets/set-99", jsonCT, `{"labels":{}}`, 404, `snapshot set "set-99" does not exist`},
		{"relabelling a malformed set id", "PATCH", "/v1/snapshot-sets/web.2", jsonCT, `{"labels":{}}`, 400, "snapshot set id"},
		{"a method a snapshot set does not take", "PUT", "/v1/snapshot-sets/set-1", jsonCT, `{"labels":{}}`, 405, "GET, PATCH, DELETE"},
		{"extents of a missing snapshot", "GET", "/v1/snapshots/web.99/extents", "", "", 404, "does not exist"},
		{"extents of a malformed snapshot id", "GET", "/v1/snapshots/web/extents", "", "", 400, "snapshot id"},
		{"a method the path does not take", "POST", "/v1/volumes/web", jsonCT, `{}`, 405, "GET, PATCH, DELETE"},
		{"an unknown endpoint", "GET", "/v2/volumes", "", "", 404, "no such endpoint"},
		{"a fence of a host name", "PUT", "/v1/fences/alpha", jsonCT, `{"reason":"down"}`, 400, `initiator "alpha": an iSCSI name starts with "iqn.", "eui." or "naa."`},
		{"a fence of an uppercase iqn", "PUT", "/v1/fences/iqn.2000-01.lab:Alpha", jsonCT, `{"reason":"down"}`, 400, "iqn names are lowercase"},
		{"a fence of a name with a space", "PUT", "/v1/fences/iqn.2000-01.lab:al%20pha", jsonCT, `{"reason":"down"}`, 400, "the character ' '"},
		{"a fence of a name too long", "PUT", "/v1/fences/iqn.2000-01.lab:" + strings.Repeat("a", 220), jsonCT, `{"reason":"down"}`, 400, "5-223 characters"},
		{"a new reason for a fence that is bad", "PUT", "/v1/fences/iqn.2000-01.lab:gamma", jsonCT, `{"reason":""}`, 400, "reason is empty"},
		{"a fence without a reason", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{}`, 400, "reason is empty"},
		{"a fence with an empty reason", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":""}`, 400, "reason is empty"},
		{"a fence with a reason of 257 bytes", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":"` + strings.Repeat("r", 257) + `"}`, 400, "257 bytes, the limit is 256"},
		{"a fence with a newline in its reason", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":"a\nb"}`, 400, "control character"},
		{"a fence with a number as its reason", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":7}`, 400, `"reason" must be a string`},
		{"a fence with an unknown field", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":"down","until":"never"}`, 400, `unknown field "until"`},
		{"a fence with data after the object", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":"down"} {}`, 400, "data after the JSON object"},
		{"a fence without a body", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, ``, 400, "body is empty"},
		{"a fence that is not JSON", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `reason=down`, 400, "malformed JSON"},
		{"a fence without a content type", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", "", `{"reason":"down"}`, 415, "Content-Type is missing"},
		{"a fence with a body over 64 KiB", "PUT", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":"down"` + strings.Repeat(" ", 64<<10) + `}`, 413, "larger than 65536 bytes"},
		{"lifting a fence that is not there", "DELETE", "/v1/fences/iqn.2000-01.lab:alpha", "", "", 404, `initiator "iqn.2000-01.lab:alpha" is not fenced`},
		{"lifting a fence of a bad name", "DELETE", "/v1/fences/Alpha", "", "", 400, "initiator"},
		{"a method a fence does not take", "POST", "/v1/fences/iqn.2000-01.lab:alpha", jsonCT, `{"reason":"down"}`, 405, "PUT, DELETE"},
		{"a method the fences do not take", "DELETE", "/v1/fences", "", "", 405, "GET"},
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
