package api_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/schedule"
	"github.com/drover/terraform-provider-drover/target/store"
)

// FuzzDecodeCreateVolume feeds arbitrary bodies to the POST /v1/volumes
// decoder: it must never panic, every refusal must carry a message, and
// whatever it accepts must be a valid request that survives a round trip.
func FuzzDecodeCreateVolume(f *testing.F) {
	for _, s := range []string{
		`{"name":"web-1","size_mib":1024}`,
		`{"name":"db","size_mib":10,"initiators":["iqn.2008-11.org.linux-kvm:vm"],"chap":{"user":"u","secret":"0123456789ab"}}`,
		`{"name":"c","source":{"snapshot":"web.1"}}`,
		`{"name":"c","size_mib":5,"source":{"volume":"web"}}`,
		`{"name":"x","size_mib":1} tail`,
		`{"name":"X","size_mib":-1}`,
		`[]`, `null`, ``, `{"name":"x","size_mib":1e99}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := api.DecodeCreateVolume(strings.NewReader(body))
		if err != nil {
			if err.Error() == "" {
				t.Errorf("DecodeCreateVolume(%q) refused with an empty message", body)
			}
			return
		}
		if !store.ValidName(req.Name) {
			t.Errorf("accepted invalid name %q", req.Name)
		}
		if req.Source == nil && (req.SizeMiB <= 0 || req.SizeMiB > store.MaxSizeMiB) {
			t.Errorf("accepted size_mib %d without a source", req.SizeMiB)
		}
		if req.SizeMiB < 0 {
			t.Errorf("accepted negative size_mib %d", req.SizeMiB)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := api.DecodeCreateVolume(strings.NewReader(string(b)))
		if err != nil {
			var syn *json.SyntaxError
			if !errors.As(err, &syn) {
				t.Errorf("accepted %q but refused its re-encoding %s: %v", body, b, err)
			}
			return
		}
		if again.Name != req.Name || again.SizeMiB != req.SizeMiB {
			t.Errorf("round trip changed the request: %+v became %+v", req, again)
		}
	})
}

// FuzzDecodeFence feeds arbitrary bodies to the PUT /v1/fences/{initiator}
// decoder: it must never panic, every refusal must carry a message, and
// whatever it accepts has a reason the store takes, and survives a round
// trip.
func FuzzDecodeFence(f *testing.F) {
	for _, s := range []string{
		`{"reason":"host alpha declared failed"}`, `{"reason":""}`, `{}`, `{"reason":"a\nb"}`,
		`{"reason":"x","y":1}`, `{"reason":"x"} {}`, `[]`, `null`, ``, `{"reason":"\u00e9t\u00e9"}`, `{"reason":"\ud800"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := api.DecodeFence(strings.NewReader(body))
		if err != nil {
			if err.Error() == "" {
				t.Errorf("DecodeFence(%q) refused with an empty message", body)
			}
			return
		}
		if err := store.CheckFenceReason(req.Reason); err != nil {
			t.Errorf("accepted reason %q that the store refuses: %v", req.Reason, err)
		}
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := api.DecodeFence(strings.NewReader(string(b)))
		if err != nil || again != req {
			t.Errorf("round trip of %q: got %+v, %v; want %+v", b, again, err, req)
		}
	})
}

// FuzzDecodeSchedule feeds arbitrary bodies to the POST /v1/schedules
// decoder: it must never panic, every refusal must carry a message, and
// whatever it accepts has a cron expression that parses, a keep that keeps
// something, and survives a round trip.
func FuzzDecodeSchedule(f *testing.F) {
	for _, s := range []string{
		`{"vm":"web","volumes":["web-boot","web-data"],"schedule":"30 2 * * *","keep":{"last":2,"daily":7}}`,
		`{"vm":"web","volumes":["w"],"schedule":"*/5 1-3 * jan-mar mon,fri","keep":{"monthly":6},"restic":{"repository":"/srv/restic","password_file":"/etc/restic.pw"}}`,
		`{"vm":"web","volumes":["w"],"schedule":"* * * *","keep":{"last":1}}`,
		`{"vm":"web","volumes":["w"],"schedule":"* * * * *","keep":{}}`,
		`{"vm":"","volumes":[],"schedule":"","keep":{"last":-1}}`,
		`{"vm":"web","volumes":["w"],"schedule":"* * * * *","keep":{"last":1},"labels":{"drover.vm-name":"web"},"domain_xml":"<domain/>"}`,
		`[]`, `null`, ``, `{"vm":"web"} {}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, err := api.DecodeSchedule(strings.NewReader(body))
		if err != nil {
			if err.Error() == "" {
				t.Errorf("DecodeSchedule(%q) refused with an empty message", body)
			}
			return
		}
		if _, err := schedule.ParseCron(req.Schedule); err != nil {
			t.Errorf("accepted schedule %q that does not parse: %v", req.Schedule, err)
		}
		if err := (schedule.Keep{Last: req.Keep.Last, Daily: req.Keep.Daily, Weekly: req.Keep.Weekly, Monthly: req.Keep.Monthly}).Validate(); err != nil {
			t.Errorf("accepted keep %+v: %v", req.Keep, err)
		}
		if err := store.CheckSetVolumes(req.Volumes); err != nil {
			t.Errorf("accepted volumes %q: %v", req.Volumes, err)
		}
		b, err := json.Marshal(req.ScheduleRequest)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := api.DecodeSchedule(strings.NewReader(string(b)))
		if err != nil {
			t.Errorf("accepted %q but refused its re-encoding %s: %v", body, b, err)
			return
		}
		if again.Cron.String() != req.Cron.String() || again.VM != req.VM || again.Keep != req.Keep {
			t.Errorf("round trip changed the request: %+v became %+v", req.ScheduleRequest, again.ScheduleRequest)
		}
	})
}
