package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/schedule"
)

// needRestic returns the restic command for a test that runs the real
// one: with DROVER_RESTIC=1 (make test sets it) a missing restic fails
// the test; without it the test was not asked for and skips.
func needRestic(t *testing.T) string {
	t.Helper()
	if os.Getenv("DROVER_RESTIC") == "" {
		t.Skip("set DROVER_RESTIC=1 to run with the real restic (Debian package restic; scripts/deps.sh installs it)")
	}
	p, err := exec.LookPath("restic")
	if err != nil {
		t.Fatalf("DROVER_RESTIC is set but restic is not installed: apt-get install restic (or make deps)")
	}
	return p
}

func TestEveryRunGoesToResticTaggedAndResticIsPrunedWithTheSameKeep(t *testing.T) {
	t.Parallel()
	needRestic(t)
	ctx := context.Background()
	dir := t.TempDir()
	repo := filepath.Join(dir, "restic-repo")
	pw := filepath.Join(dir, "restic.pw")
	if err := os.WriteFile(pw, []byte("h14-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startScheduling(t, "", apitest.NewClock())
	srv := sc.srv
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web-boot","size_mib":64}`, http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web-data","size_mib":8}`, http.StatusCreated, nil)

	var check wire.ResticCheck
	doJSON(t, srv, "POST", "/v1/restic-checks", fmt.Sprintf(`{"repository":%q,"password_file":%q}`, repo, pw), http.StatusOK, &check)
	if check.Initialized {
		t.Errorf("check of a repository not made yet: %+v, want initialized false", check)
	}
	doJSON(t, srv, "POST", "/v1/schedules", fmt.Sprintf(`{"vm":"vm-web","volumes":["web-boot","web-data"],"schedule":"* * * * *","keep":{"last":2},`+
		`"domain_xml":"<domain><name>web</name></domain>","restic":{"repository":%q,"password_file":%q}}`, repo, pw), http.StatusCreated, nil)
	doJSON(t, srv, "POST", "/v1/restic-checks", fmt.Sprintf(`{"repository":%q,"password_file":%q}`, repo, pw), http.StatusOK, &check)
	if !check.Initialized {
		t.Errorf("check after the schedule made the repository: %+v, want initialized", check)
	}

	var runs []wire.ScheduleRun
	var last *wire.ScheduleRun
	for i := 0; i < 3; i++ {
		writeVolume(t, srv, "web-boot", int64(i)*20<<20, []byte(fmt.Sprintf("boot record %d", i)))
		writeVolume(t, srv, "web-data", int64(i)<<20, []byte(fmt.Sprintf("data record %d", i)))
		r := sc.waitRun(t, "sched-1", last)
		if r.Status != "ok" {
			t.Fatalf("run %d: %+v, want ok", i+1, r)
		}
		runs, last = append(runs, r), &r
	}

	restic := schedule.Restic{Repository: repo, PasswordFile: pw, CacheDir: filepath.Join(dir, "cache")}
	snaps, err := restic.Snapshots(ctx, []string{"schedule=sched-1"})
	if err != nil {
		t.Fatal(err)
	}
	bySet := map[string][]string{}
	for _, s := range snaps {
		if !slices.Contains(s.Tags, "vm=vm-web") {
			t.Errorf("restic snapshot %s has tags %v, want vm=vm-web among them", s.Short, s.Tags)
		}
		for _, tag := range s.Tags {
			if set, ok := strings.CutPrefix(tag, "set="); ok {
				bySet[set] = append(bySet[set], strings.Join(s.Paths, ","))
			}
		}
	}
	if len(snaps) != 6 || len(bySet) != 2 || len(bySet[runs[1].SetID]) != 3 || len(bySet[runs[2].SetID]) != 3 {
		t.Fatalf("restic holds %d snapshots by set %v, want 6: both disks and the domain XML of the last two runs (%s, %s)", len(snaps), bySet, runs[1].SetID, runs[2].SetID)
	}
	// The newest disk image in restic is the set's snapshot byte for byte.
	var set wire.SnapshotSet
	doJSON(t, srv, "GET", "/v1/snapshot-sets/"+runs[2].SetID, "", http.StatusOK, &set)
	for _, sn := range set.Snapshots {
		want := doJSON(t, srv, "GET", "/v1/snapshots/"+sn.ID+"/data", "", http.StatusOK, nil).Body.Bytes()
		got := resticDump(t, restic, runs[2].SetID, "/"+sn.Volume+".raw")
		if !bytes.Equal(got, want) {
			t.Errorf("restic's %s.raw of %s: %d bytes, differs from the snapshot's %d", sn.Volume, runs[2].SetID, len(got), len(want))
		}
	}
	if got := resticDump(t, restic, runs[2].SetID, "/domain.xml"); string(got) != "<domain><name>web</name></domain>" {
		t.Errorf("restic's domain.xml: %q", got)
	}
}

func resticDump(t *testing.T, r schedule.Restic, setID, path string) []byte {
	t.Helper()
	cmd := exec.Command("restic", "dump", "--tag", "set="+setID, "--path", path, "latest", path)
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+r.Repository, "RESTIC_PASSWORD_FILE="+r.PasswordFile, "RESTIC_CACHE_DIR="+r.CacheDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("restic dump %s of %s: %v: %s", path, setID, err, stderr.String())
	}
	return out
}

func TestAResticPasswordThatDoesNotOpenTheRepositoryIsRefusedNamingTheFile(t *testing.T) {
	t.Parallel()
	needRestic(t)
	ctx := context.Background()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	right, wrong := filepath.Join(dir, "right.pw"), filepath.Join(dir, "wrong.pw")
	os.WriteFile(right, []byte("right"), 0o600)
	os.WriteFile(wrong, []byte("wrong"), 0o600)
	if err := (schedule.Restic{Repository: repo, PasswordFile: right, CacheDir: filepath.Join(dir, "cache")}).Init(ctx); err != nil {
		t.Fatal(err)
	}
	srv := startScheduling(t, "", apitest.NewClock()).srv
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"web","size_mib":1}`, http.StatusCreated, nil)
	before := snapshotState(t, srv)
	body := fmt.Sprintf(`{"vm":"vm-web","volumes":["web"],"schedule":"* * * * *","keep":{"last":2},"restic":{"repository":%q,"password_file":%q}}`, repo, wrong)
	rec := doJSON(t, srv, "POST", "/v1/schedules", body, http.StatusBadRequest, nil)
	if msg := errorMessage(t, rec); !strings.Contains(msg, "restic.password_file") || !strings.Contains(msg, "password is wrong") {
		t.Errorf("a wrong password: %q, want an error naming restic.password_file and saying the password is wrong", msg)
	}
	rec = doJSON(t, srv, "POST", "/v1/restic-checks", fmt.Sprintf(`{"repository":%q,"password_file":%q}`, repo, wrong), http.StatusBadRequest, nil)
	if msg := errorMessage(t, rec); !strings.Contains(msg, "password is wrong") {
		t.Errorf("check with a wrong password: %q", msg)
	}
	if after := snapshotState(t, srv); after != before {
		t.Errorf("refused schedules changed the state:\n got %s\nwant %s", after, before)
	}
}

func TestSchedulesOfTwoVMsSendingToOneResticRepositoryAtOnceBothSucceed(t *testing.T) {
	t.Parallel()
	needRestic(t)
	dir := t.TempDir()
	repo, pw := filepath.Join(dir, "repo"), filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("shared"), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startScheduling(t, "", apitest.NewClock())
	srv := sc.srv
	for _, vm := range []string{"web", "db"} {
		doJSON(t, srv, "POST", "/v1/volumes", fmt.Sprintf(`{"name":%q,"size_mib":4}`, vm), http.StatusCreated, nil)
		writeVolume(t, srv, vm, 0, []byte("data of "+vm))
		doJSON(t, srv, "POST", "/v1/schedules", fmt.Sprintf(`{"vm":"vm-%s","volumes":[%q],"schedule":"* * * * *","keep":{"last":1},"restic":{"repository":%q,"password_file":%q}}`, vm, vm, repo, pw), http.StatusCreated, nil)
	}
	var last [2]*wire.ScheduleRun
	for round := 0; round < 2; round++ {
		sc.clock.AdvancePastNow(time.Minute) // both due at the same minute
		for i, id := range []string{"sched-1", "sched-2"} {
			r := sc.waitRunAfter(t, id, last[i])
			if r.Status != "ok" {
				t.Fatalf("round %d, %s: %+v, want ok", round+1, id, r)
			}
			last[i] = &r
		}
	}
	snaps, err := (schedule.Restic{Repository: repo, PasswordFile: pw, CacheDir: filepath.Join(dir, "cache")}).Snapshots(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 {
		t.Errorf("restic holds %d snapshots, want 2: the last run of each VM (keep last 1)", len(snaps))
	}
}

func TestARunCutShortWhileInResticLeavesNoLockInTheRepository(t *testing.T) {
	t.Parallel()
	needRestic(t)
	dir := t.TempDir()
	repo, pw := filepath.Join(dir, "repo"), filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startScheduling(t, "", apitest.NewClock())
	srv := sc.srv
	doJSON(t, srv, "POST", "/v1/volumes", `{"name":"big","size_mib":512}`, http.StatusCreated, nil)
	noise := make([]byte, 64<<20) // data restic has to chunk and encrypt: it takes a while
	for i := range noise {
		noise[i] = byte(i*2654435761>>13) ^ byte(i>>7)
	}
	for off := int64(0); off < 512<<20; off += int64(len(noise)) {
		noise[0]++
		writeVolume(t, srv, "big", off, noise)
	}
	doJSON(t, srv, "POST", "/v1/schedules", fmt.Sprintf(`{"vm":"vm-big","volumes":["big"],"schedule":"* * * * *","keep":{"last":1},"restic":{"repository":%q,"password_file":%q}}`, repo, pw), http.StatusCreated, nil)
	sc.clock.AdvancePastNow(time.Minute)
	locks := filepath.Join(repo, "locks")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if entries, _ := os.ReadDir(locks); len(entries) > 0 {
			time.Sleep(time.Second) // restic backup is under way, a second into its data
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restic never took its lock within 60 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sc.stop() // as the daemon stopping does: the run is cut short
	var got wire.Schedule
	doJSON(t, srv, "GET", "/v1/schedules/sched-1", "", http.StatusOK, &got)
	if got.LastRun == nil || got.LastRun.Status != "failed" {
		t.Errorf("the run cut short: %+v, want it recorded as failed", got.LastRun)
	}
	if entries, _ := os.ReadDir(locks); len(entries) != 0 {
		t.Errorf("restic left %d lock(s) in %s after the run was cut short (the run: %+v)", len(entries), locks, got.LastRun)
	}
}
