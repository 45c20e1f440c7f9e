package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestTheDaemonRunsItsSchedulesKeepsThemAcrossARestartAndCountsTheirRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := apitest.NewClock()
	cfg := config(t, dir, apitest.NewExporter())
	cfg.Now, cfg.After = clock.Now, clock.After
	s := start(t, cfg)
	call(t, s, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, 201)
	call(t, s, "POST", "/v1/schedules", `{"vm":"vm-web","volumes":["web"],"schedule":"* * * * *","keep":{"last":2},"domain_xml":"<domain/>"}`, 201)
	clock.Advance(time.Minute)
	var got wire.Schedule
	deadline := time.Now().Add(30 * time.Second)
	for got.LastRun == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if err := json.Unmarshal([]byte(call(t, s, "GET", "/v1/schedules/sched-1", "", 200)), &got); err != nil {
			t.Fatal(err)
		}
	}
	if got.LastRun == nil || got.LastRun.Status != "ok" || got.LastRun.SetID == "" {
		t.Fatalf("last run %+v, want an ok run with its set", got.LastRun)
	}
	if m := call(t, s, "GET", "/metrics", "", 200); !strings.Contains(m, `drover_backup_schedule_runs_total{schedule="sched-1",status="ok"} 1`) {
		t.Errorf("/metrics has no count of the run:\n%s", grepLines(m, "drover_backup"))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	again := start(t, cfg)
	var after wire.Schedule
	if err := json.Unmarshal([]byte(call(t, again, "GET", "/v1/schedules/sched-1", "", 200)), &after); err != nil {
		t.Fatal(err)
	}
	if after.VM != "vm-web" || after.LastRun == nil || after.LastRun.SetID != got.LastRun.SetID || !after.LastRun.At.Equal(got.LastRun.At) {
		t.Errorf("after a restart: %+v, want the schedule with its last run %+v", after, got.LastRun)
	}
	if !strings.Contains(call(t, again, "GET", "/v1/snapshot-sets/"+got.LastRun.SetID, "", 200), `"drover.schedule": "sched-1"`) {
		t.Errorf("the run's set is not labelled with its schedule")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
