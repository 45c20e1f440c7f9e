package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/schedule"
	"github.com/drover/terraform-provider-drover/target/store"
)

// scheduling is an in-process drover-target whose schedules run on a
// fake clock, with its metrics in reg.
type scheduling struct {
	srv   *apitest.Server
	clock *apitest.Clock
	reg   *prometheus.Registry
	stop  func()
}

func startScheduling(t *testing.T, dir string, clock *apitest.Clock) *scheduling {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := apitest.NewWith(t, apitest.Options{
		Dir:   dir,
		Store: store.Options{CopyBeforeWrite: true, NoReflink: true},
		Config: func(c *api.Config) {
			c.Schedules = schedule.Options{Registerer: reg, Now: clock.Now, After: clock.After}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.API.RunSchedules(ctx)
	}()
	stop := sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	return &scheduling{srv: srv, clock: clock, reg: reg, stop: stop}
}

// runsCounted is drover_backup_schedule_runs_total of a schedule and
// status.
func runsCounted(t *testing.T, reg *prometheus.Registry, id, status string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "drover_backup_schedule_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["schedule"] == id && labels["status"] == status {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// waitRun advances the clock a minute and waits until the schedule has a
// last run newer than before; it returns it.
func (s *scheduling) waitRun(t *testing.T, id string, before *wire.ScheduleRun) wire.ScheduleRun {
	t.Helper()
	s.clock.AdvancePastNow(time.Minute)
	return s.waitRunAfter(t, id, before)
}

// waitRunAfter waits until the schedule has a last run newer than before
// and returns it.
func (s *scheduling) waitRunAfter(t *testing.T, id string, before *wire.ScheduleRun) wire.ScheduleRun {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var got wire.Schedule
		doJSON(t, s.srv, "GET", "/v1/schedules/"+id, "", http.StatusOK, &got)
		if got.LastRun != nil && (before == nil || got.LastRun.At.After(before.At)) {
			return *got.LastRun
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("schedule %s: no new run within 30 s of the clock passing its time", id)
	return wire.ScheduleRun{}
}

func setsLabelled(t *testing.T, srv *apitest.Server, label string) []wire.SnapshotSet {
	t.Helper()
	var list wire.SnapshotSetList
	doJSON(t, srv, "GET", "/v1/snapshot-sets?label="+label, "", http.StatusOK, &list)
	return list.SnapshotSets
}

func TestAScheduleGoesThroughItsWholeLifeOverTheAPI(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web-boot","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web-data","size_mib":1}`, http.StatusCreated, nil)

	var made wire.Schedule
	rec := doJSON(t, srv, "POST", "/v1/schedules", `{"vm":"0b7c-web","volumes":["web-boot","web-data"],"schedule":"30 2 * * *",`+
		`"keep":{"last":2,"daily":7},"labels":{"drover.vm-name":"web"},"domain_xml":"<domain><name>web</name></domain>"}`, http.StatusCreated, &made)
	if loc := rec.Header().Get("Location"); loc != "/v1/schedules/"+made.ID {
		t.Errorf("Location = %q, want /v1/schedules/%s", loc, made.ID)
	}
	if made.ID != "sched-1" || made.VM != "0b7c-web" || strings.Join(made.Volumes, ",") != "web-boot,web-data" || made.Schedule != "30 2 * * *" ||
		made.Keep != (wire.Keep{Last: 2, Daily: 7}) || made.Labels["drover.vm-name"] != "web" || made.LastRun != nil || made.Restic != nil {
		t.Errorf("created %+v, want what was sent with id sched-1 and no run yet", made)
	}
	if made.NextRun == nil {
		t.Fatal("next_run is missing")
	}
	next := made.NextRun.Local()
	if next.Hour() != 2 || next.Minute() != 30 || !next.After(made.CreatedAt) || next.Sub(made.CreatedAt) > 24*time.Hour {
		t.Errorf("next_run = %s, want the first 02:30 (storage box time) after %s", next, made.CreatedAt)
	}
	if strings.Contains(rec.Body.String(), "<domain>") {
		t.Errorf("the domain XML is shown: %s", rec.Body)
	}

	var list wire.ScheduleList
	doJSON(t, srv, "GET", "/v1/schedules", "", http.StatusOK, &list)
	if len(list.Schedules) != 1 || list.Schedules[0].ID != made.ID {
		t.Errorf("list = %+v, want the one schedule", list)
	}
	var replaced wire.Schedule
	doJSON(t, srv, "PUT", "/v1/schedules/sched-1", `{"vm":"0b7c-web","volumes":["web-boot"],"schedule":"*/15 * * * *","keep":{"weekly":4}}`, http.StatusOK, &replaced)
	if replaced.ID != made.ID || !replaced.CreatedAt.Equal(made.CreatedAt) || replaced.Schedule != "*/15 * * * *" || replaced.Keep != (wire.Keep{Weekly: 4}) ||
		len(replaced.Volumes) != 1 || len(replaced.Labels) != 0 {
		t.Errorf("replaced %+v, want the new settings under the same id and creation time", replaced)
	}
	if replaced.NextRun == nil || replaced.NextRun.Minute()%15 != 0 {
		t.Errorf("next_run after the change = %v, want a quarter hour", replaced.NextRun)
	}
	rec = doJSON(t, srv, "PUT", "/v1/schedules/sched-1", `{"vm":"other","volumes":["web-boot"],"schedule":"* * * * *","keep":{"last":1}}`, http.StatusBadRequest, nil)
	if msg := errorMessage(t, rec); !strings.Contains(msg, "does not change") {
		t.Errorf("changing the VM: %q, want a refusal saying a schedule's VM does not change", msg)
	}
	var got wire.Schedule
	doJSON(t, srv, "GET", "/v1/schedules/sched-1", "", http.StatusOK, &got)
	if got.Keep != (wire.Keep{Weekly: 4}) || got.VM != "0b7c-web" {
		t.Errorf("after a refused PUT: %+v, want the schedule as it was", got)
	}
	doJSON(t, srv, "DELETE", "/v1/schedules/sched-1", "", http.StatusNoContent, nil)
	doJSON(t, srv, "GET", "/v1/schedules/sched-1", "", http.StatusNotFound, nil)
	doJSON(t, srv, "DELETE", "/v1/schedules/sched-1", "", http.StatusNotFound, nil)
	doJSON(t, srv, "PUT", "/v1/schedules/sched-1", `{"vm":"0b7c-web","volumes":["web-boot"],"schedule":"* * * * *","keep":{"last":1}}`, http.StatusNotFound, nil)
	doJSON(t, srv, "GET", "/v1/schedules", "", http.StatusOK, &list)
	if len(list.Schedules) != 0 {
		t.Errorf("list after delete = %+v, want []", list)
	}
	if rec := doJSON(t, srv, "GET", "/v1/schedules", "", http.StatusOK, nil); !strings.Contains(rec.Body.String(), `"schedules": []`) {
		t.Errorf("an empty list is %s, want \"schedules\": []", rec.Body)
	}
}

func TestBadSchedulesAreRefusedNamingTheFieldAndChangeNothing(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"0 3 * * *","keep":{"last":3}}`, http.StatusCreated, nil)
	before := snapshotState(t, srv)
	body := func(fields string) string {
		return `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":{"last":1}` + fields + `}`
	}
	without := func(field string) string {
		m := map[string]any{"vm": "web", "volumes": []string{"web"}, "schedule": "* * * * *", "keep": map[string]int{"last": 1}}
		delete(m, field)
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct {
		name, method, path, body string
		wantStatus               int
		wantInError              string
	}{
		{"a cron expression of four fields", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"* * * *","keep":{"last":1}}`, 400, "schedule: cron expression"},
		{"a minute of 60", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"60 * * * *","keep":{"last":1}}`, 400, "minute field"},
		{"a month name that is none", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"0 0 1 foo *","keep":{"last":1}}`, 400, "month field"},
		{"no schedule", "POST", "/v1/schedules", without("schedule"), 400, "schedule: cron expression"},
		{"keep with nothing to keep", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":{}}`, 400, "keep keeps nothing"},
		{"no keep", "POST", "/v1/schedules", without("keep"), 400, "keep keeps nothing"},
		{"a negative keep", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":{"last":-1}}`, 400, "keep.last is -1"},
		{"a fractional keep", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":{"daily":1.5}}`, 400, `"keep.daily" must be a whole number`},
		{"an unknown keep", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":{"hourly":1}}`, 400, `unknown field "hourly"`},
		{"no vm", "POST", "/v1/schedules", without("vm"), 400, "vm is empty"},
		{"a vm with a newline", "POST", "/v1/schedules", body(`,"vm":"a\nb"`), 400, "vm has the control character"},
		{"no volumes", "POST", "/v1/schedules", without("volumes"), 400, "volumes is empty"},
		{"a volume twice", "POST", "/v1/schedules", `{"vm":"web","volumes":["web","web"],"schedule":"* * * * *","keep":{"last":1}}`, 400, "volumes[1]"},
		{"a missing volume", "POST", "/v1/schedules", `{"vm":"web","volumes":["web","ghost"],"schedule":"* * * * *","keep":{"last":1}}`, 400, `volumes[1]: volume "ghost" does not exist`},
		{"a label the target sets", "POST", "/v1/schedules", body(`,"labels":{"drover.schedule":"x"}`), 400, `"drover.schedule" is set by the target`},
		{"a bad label key", "POST", "/v1/schedules", body(`,"labels":{"Bad":"x"}`), 400, "labels: key"},
		{"a domain XML over 1 MiB", "POST", "/v1/schedules", body(`,"domain_xml":"` + strings.Repeat("x", 1<<20+1) + `"`), 400, "domain_xml is"},
		{"restic without a repository", "POST", "/v1/schedules", body(`,"restic":{"password_file":"/etc/hostname"}`), 400, "restic.repository is empty"},
		{"restic with a relative password file", "POST", "/v1/schedules", body(`,"restic":{"repository":"/tmp/h14-r","password_file":"pw"}`), 400, `restic.password_file "pw" is not an absolute path`},
		{"restic with a password file that is not there", "POST", "/v1/schedules", body(`,"restic":{"repository":"/tmp/h14-r","password_file":"/nonexistent/h14-pw"}`), 400, `restic.password_file "/nonexistent/h14-pw" cannot be read`},
		{"an unknown restic field", "POST", "/v1/schedules", body(`,"restic":{"repo":"/tmp/h14-r"}`), 400, `unknown field "repo"`},
		{"an unknown field", "POST", "/v1/schedules", body(`,"every":"day"`), 400, `unknown field "every"`},
		{"a string for keep", "POST", "/v1/schedules", `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":"last 2"}`, 400, `"keep" must be an object`},
		{"malformed JSON", "POST", "/v1/schedules", `{"vm":`, 400, "malformed JSON"},
		{"a bad cron on PUT", "PUT", "/v1/schedules/sched-1", `{"vm":"web","volumes":["web"],"schedule":"every day","keep":{"last":1}}`, 400, "schedule: cron expression"},
		{"keep with nothing on PUT", "PUT", "/v1/schedules/sched-1", `{"vm":"web","volumes":["web"],"schedule":"* * * * *","keep":{"last":0}}`, 400, "keep keeps nothing"},
		{"a malformed id", "GET", "/v1/schedules/../x", "", 400, "not canonical"},
		{"a malformed id on PUT", "PUT", "/v1/schedules/s1", body(""), 400, `schedule id "s1" is malformed`},
		{"a malformed id on DELETE", "DELETE", "/v1/schedules/sched-x", "", 400, `schedule id "sched-x" is malformed`},
		{"PATCH is not how a schedule changes", "PATCH", "/v1/schedules/sched-1", body(""), 405, "use GET, PUT, DELETE"},
		{"a restic check of a password file that is not there", "POST", "/v1/restic-checks", `{"repository":"/tmp/h14-r","password_file":"/nonexistent/h14-pw"}`, 400, "restic.password_file"},
		{"a restic check without a repository", "POST", "/v1/restic-checks", `{"password_file":"/etc/hostname"}`, 400, "restic.repository is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct := ""
			if tc.body != "" {
				ct = jsonCT
			}
			rec := do(t, srv, tc.method, tc.path, ct, strings.NewReader(tc.body), apitest.Token)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if msg := errorMessage(t, rec); !strings.Contains(msg, tc.wantInError) {
				t.Errorf("error %q, want it to contain %q", msg, tc.wantInError)
			}
		})
	}
	if after := snapshotState(t, srv); after != before {
		t.Errorf("refused requests changed the state:\n got %s\nwant %s", after, before)
	}
}

func TestAScheduleCutsItsVMsDisksTogetherAndKeepsOnlyWhatItsKeepSays(t *testing.T) {
	t.Parallel()
	sc := startScheduling(t, "", apitest.NewClock())
	srv := sc.srv
	for _, v := range []string{"web-boot", "web-data", "db"} {
		doJSON(t, srv, "POST", "/v1/volumes", fmt.Sprintf(`{"name":%q,"size_mib":2}`, v), http.StatusCreated, nil)
	}
	var manual wire.SnapshotSet
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["web-boot","web-data"],"labels":{"drover.vm-id":"vm-web"}}`, http.StatusCreated, &manual)
	doJSON(t, srv, "POST", "/v1/schedules", `{"vm":"vm-web","volumes":["web-boot","web-data"],"schedule":"* * * * *","keep":{"last":2},`+
		`"labels":{"drover.vm-name":"web"},"domain_xml":"<domain><name>web</name></domain>"}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/schedules", `{"vm":"vm-db","volumes":["db"],"schedule":"0 0 1 1 *","keep":{"last":1}}`, http.StatusCreated, nil)
	// A set of the other schedule that this one must not prune.
	var other wire.SnapshotSet
	doJSON(t, srv, "POST", "/v1/snapshot-sets", `{"volumes":["db"],"labels":{"drover.schedule":"sched-2","drover.vm-id":"vm-db"}}`, http.StatusCreated, &other)

	var runs []wire.ScheduleRun
	var last *wire.ScheduleRun
	for i := 0; i < 3; i++ {
		writeVolume(t, srv, "web-data", int64(i)<<18, []byte(fmt.Sprintf("run %d", i)))
		r := sc.waitRun(t, "sched-1", last)
		if r.Status != "ok" || r.Error != "" || r.SetID == "" {
			t.Fatalf("run %d: %+v, want ok with a set", i+1, r)
		}
		runs, last = append(runs, r), &r
	}
	sets := setsLabelled(t, srv, "drover.schedule=sched-1")
	if len(sets) != 2 || sets[0].ID != runs[2].SetID || sets[1].ID != runs[1].SetID {
		t.Fatalf("the schedule's sets: %v, want the last two runs' %s and %s", setIDs(sets), runs[2].SetID, runs[1].SetID)
	}
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+runs[0].SetID, "", http.StatusNotFound, nil)
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+manual.ID, "", http.StatusOK, nil)
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+other.ID, "", http.StatusOK, nil)
	if vm := setsLabelled(t, srv, "drover.vm-id=vm-web"); len(vm) != 3 {
		t.Errorf("the VM's backups: %v, want the two runs and the manual one", setIDs(vm))
	}
	for _, s := range sets {
		if s.State != wire.StateReady || len(s.Snapshots) != 2 || s.Snapshots[0].Volume != "web-boot" || s.Snapshots[1].Volume != "web-data" {
			t.Errorf("set %s: %+v, want both disks, ready", s.ID, s)
		}
		for k, want := range map[string]string{"drover.vm-id": "vm-web", "drover.schedule": "sched-1", "drover.consistency": "crash", "drover.vm-name": "web"} {
			if s.Labels[k] != want {
				t.Errorf("set %s: label %s = %q, want %q", s.ID, k, s.Labels[k], want)
			}
		}
		if _, ok := s.Labels["drover.pause-ms"]; !ok {
			t.Errorf("set %s has no drover.pause-ms label: %v", s.ID, s.Labels)
		}
		rec := doJSON(t, srv, "GET", "/v1/snapshot-sets/"+s.ID+"/attachments/domain.xml", "", http.StatusOK, nil)
		if rec.Body.String() != "<domain><name>web</name></domain>" {
			t.Errorf("set %s: domain.xml = %q", s.ID, rec.Body)
		}
	}
	// The newest run holds what web-data held at its cut: every run's
	// record, each at its own offset.
	rec := doJSON(t, srv, "GET", "/v1/snapshots/"+sets[0].Snapshots[1].ID+"/data", "", http.StatusOK, nil)
	for i := 0; i < 3; i++ {
		if got := rec.Body.Bytes()[i<<18 : i<<18+5]; string(got) != fmt.Sprintf("run %d", i) {
			t.Errorf("the newest run's web-data at %d KiB: %q, want \"run %d\"", i<<8, got, i)
		}
	}
	holds := 0
	for _, h := range srv.Exporter.Holds() {
		if strings.Join(h.Volumes, ",") == "web-boot,web-data" {
			holds++
			if !h.Released() {
				t.Errorf("a hold of %v was not released", h.Volumes)
			}
		}
	}
	if holds != 4 { // the manual set and three runs
		t.Errorf("%d holds of both disks together, want 4 (one per cut)", holds)
	}
	if got := runsCounted(t, sc.reg, "sched-1", "ok"); got != 3 {
		t.Errorf("drover_backup_schedule_runs_total{schedule=sched-1,status=ok} = %v, want 3", got)
	}
}

func setIDs(sets []wire.SnapshotSet) []string {
	out := make([]string, len(sets))
	for i, s := range sets {
		out[i] = s.ID
	}
	return out
}

func TestAFailedRunIsRecordedWithItsReasonAndTheNextOneStillRuns(t *testing.T) {
	t.Parallel()
	sc := startScheduling(t, "", apitest.NewClock())
	srv := sc.srv
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/schedules", `{"vm":"vm-web","volumes":["web"],"schedule":"* * * * *","keep":{"last":1}}`, http.StatusCreated, nil)
	srv.Exporter.FailHolds(fmt.Errorf("hold writes of web: no answer within 10s"))
	failed := sc.waitRun(t, "sched-1", nil)
	if failed.Status != "failed" || !strings.Contains(failed.Error, "no answer within 10s") || failed.SetID != "" {
		t.Errorf("the run: %+v, want failed with the hold's reason and no set", failed)
	}
	if got := runsCounted(t, sc.reg, "sched-1", "failed"); got != 1 {
		t.Errorf("drover_backup_schedule_runs_total{status=failed} = %v, want 1", got)
	}
	if sets := setsLabelled(t, srv, "drover.schedule=sched-1"); len(sets) != 0 {
		t.Errorf("a failed run left sets %v", setIDs(sets))
	}
	srv.Exporter.FailHolds(nil)
	ok := sc.waitRun(t, "sched-1", &failed)
	if ok.Status != "ok" || ok.SetID == "" {
		t.Errorf("the run after: %+v, want ok", ok)
	}
}

func TestRunsMissedWhileTheDaemonWasDownAreMadeUpOnceAndSchedulesSurviveARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := apitest.NewClock()
	sc := startScheduling(t, dir, clock)
	doJSON(t, sc.srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
	doJSON(t, sc.srv, "POST", "/v1/schedules", `{"vm":"vm-web","volumes":["web"],"schedule":"* * * * *","keep":{"last":10}}`, http.StatusCreated, nil)
	first := sc.waitRun(t, "sched-1", nil)
	sc.stop()
	sc.srv.Close()
	if err := sc.srv.Store.Close(); err != nil {
		t.Fatal(err)
	}

	clock.AdvancePastNow(10 * time.Minute) // ten runs missed while down
	again := startScheduling(t, dir, clock)
	var got wire.Schedule
	deadline := time.Now().Add(30 * time.Second)
	for {
		doJSON(t, again.srv, "GET", "/v1/schedules/sched-1", "", http.StatusOK, &got)
		if got.LastRun != nil && got.LastRun.At.After(first.At) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got.LastRun == nil || !got.LastRun.At.After(first.At) || got.LastRun.Status != "ok" {
		t.Fatalf("after the restart: last run %+v, want a new one made up for the missed ones", got.LastRun)
	}
	time.Sleep(200 * time.Millisecond) // room for a second run, which must not come
	if sets := setsLabelled(t, again.srv, "drover.schedule=sched-1"); len(sets) != 2 {
		t.Errorf("sets after the restart: %v, want 2: the run before and one made up for ten missed", setIDs(sets))
	}
	if got.NextRun == nil || !got.NextRun.After(clock.Now()) {
		t.Errorf("next_run = %v, want after now (%s): nothing more is due", got.NextRun, clock.Now())
	}
}
