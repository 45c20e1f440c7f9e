package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// cli runs one admin command against srv and returns its output.
func cli(t *testing.T, srv *apitest.Server, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--endpoint", srv.URL)
	err := run(context.Background(), args, env(map[string]string{"DROVER_STORAGE_TOKEN": apitest.Token}), &out, &errOut)
	return out.String() + errOut.String(), err
}

func mustCLI(t *testing.T, srv *apitest.Server, args ...string) string {
	t.Helper()
	out, err := cli(t, srv, args...)
	if err != nil {
		t.Fatalf("drover-target %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func TestTheAdminCLIManagesVolumesSnapshotsSessionsAndFences(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	out := mustCLI(t, srv, "volume", "create", "web-1", "16", "--initiator", "iqn.2000-01.lab:alpha")
	if !strings.Contains(out, "iqn.2026-11.io.drover:web-1") || !strings.Contains(out, "iqn.2000-01.lab:alpha") {
		t.Errorf("volume create output lacks the IQN or the initiator:\n%s", out)
	}
	mustCLI(t, srv, "volume", "grow", "web-1", "32")
	if out := mustCLI(t, srv, "volume", "ls"); !strings.Contains(out, "web-1") || !strings.Contains(out, "32") {
		t.Errorf("volume ls output = %q, want web-1 at 32 MiB", out)
	}
	img := filepath.Join(t.TempDir(), "img.raw")
	if err := os.WriteFile(img, []byte("boot"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, srv, "volume", "upload", "web-1", img)
	out = mustCLI(t, srv, "snapshot", "create", "web-1")
	if !strings.Contains(out, "web-1.1") {
		t.Errorf("snapshot create output = %q, want the id web-1.1", out)
	}
	if out := mustCLI(t, srv, "snapshot", "ls", "web-1"); !strings.Contains(out, "web-1.1") {
		t.Errorf("snapshot ls output = %q, want web-1.1", out)
	}
	mustCLI(t, srv, "snapshot", "rm", "web-1.1")

	srv.Exporter.AddSession(wire.Session{Volume: "web-1", Initiator: "iqn.2000-01.lab:alpha", RemoteAddr: "127.0.0.2:9", Since: time.Now()})
	if out := mustCLI(t, srv, "session", "ls"); !strings.Contains(out, "iqn.2000-01.lab:alpha") {
		t.Errorf("session ls output = %q, want alpha's session", out)
	}
	if out := mustCLI(t, srv, "fence", "add", "iqn.2000-01.lab:alpha", "host", "alpha", "declared", "failed"); !strings.Contains(out, "fenced iqn.2000-01.lab:alpha") {
		t.Errorf("fence add output = %q", out)
	}
	if out := mustCLI(t, srv, "fence", "ls"); !strings.Contains(out, "iqn.2000-01.lab:alpha") || !strings.Contains(out, "host alpha declared failed") {
		t.Errorf("fence ls output = %q, want alpha with its reason", out)
	}
	if out := mustCLI(t, srv, "session", "ls"); strings.Contains(out, "iqn.2000-01.lab:alpha") {
		t.Errorf("session ls after the fence = %q, want alpha's session gone", out)
	}
	if out, err := cli(t, srv, "fence", "add", "alpha", "no", "iqn"); err == nil {
		t.Errorf("fence add of a name that is no iSCSI name succeeded: %q", out)
	}
	mustCLI(t, srv, "fence", "rm", "iqn.2000-01.lab:alpha")
	if out := mustCLI(t, srv, "fence", "ls"); strings.Contains(out, "iqn.2000-01.lab:alpha") {
		t.Errorf("fence ls after rm = %q, want no fence", out)
	}
	srv.Exporter.AddSession(wire.Session{Volume: "web-1", Initiator: "iqn.2000-01.lab:alpha", RemoteAddr: "127.0.0.2:9", Since: time.Now()})
	if out, err := cli(t, srv, "volume", "rm", "web-1"); err == nil || !strings.Contains(err.Error(), "force=true") {
		t.Errorf("volume rm of a volume in use: %v (output %q), want a refusal mentioning force", err, out)
	}
	mustCLI(t, srv, "volume", "rm", "web-1", "--force")
	if out = mustCLI(t, srv, "volume", "ls"); strings.Contains(out, "web-1") {
		t.Errorf("volume ls after rm = %q, want no web-1", out)
	}
}

func TestTheAdminCLIListsAndRemovesSnapshotSets(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"web-boot", "web-data", "db"} {
		mustCLI(t, srv, "volume", "create", name, "1")
	}
	web, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"web-boot", "web-data"}, Labels: map[string]string{"vm": "web"}, Attachments: map[string]string{"domain.xml": "<domain/>"}})
	if err != nil {
		t.Fatal(err)
	}
	db, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"db"}, Labels: map[string]string{"vm": "db"}})
	if err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, srv, "snapshot-set", "ls")
	for _, want := range []string{web.ID, db.ID, "web-boot.1,web-data.2", "vm=web", "domain.xml", "HOLD_MS"} {
		if !strings.Contains(out, want) {
			t.Errorf("snapshot-set ls output lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, db.ID) > strings.Index(out, web.ID) {
		t.Errorf("snapshot-set ls lists %s before %s, want newest first:\n%s", web.ID, db.ID, out)
	}
	if out := mustCLI(t, srv, "snapshot-set", "ls", "--label", "vm=db"); strings.Contains(out, web.ID) || !strings.Contains(out, db.ID) {
		t.Errorf("snapshot-set ls --label vm=db output = %q, want %s only", out, db.ID)
	}
	if _, err := cli(t, srv, "snapshot-set", "ls", "--label", "vm"); !errors.Is(err, errUsage) {
		t.Errorf("--label without a value: %v, want a usage error", err)
	}
	if _, err := cli(t, srv, "snapshot", "rm", "web-boot.1"); err == nil || !strings.Contains(err.Error(), "delete the set") {
		t.Errorf("snapshot rm of a set's snapshot: %v, want a refusal saying to delete the set", err)
	}
	mustCLI(t, srv, "snapshot-set", "rm", web.ID)
	if out := mustCLI(t, srv, "snapshot-set", "ls"); strings.Contains(out, web.ID) {
		t.Errorf("snapshot-set ls after rm = %q, want no %s", out, web.ID)
	}
	if _, err := cli(t, srv, "snapshot-set", "rm", web.ID); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("second snapshot-set rm: %v, want one saying it does not exist", err)
	}
}

func TestTheAdminCLIReplacesASetsLabels(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustCLI(t, srv, "volume", "create", "web", "1")
	set, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"web"}, Labels: map[string]string{"drover.io/vm": "web", "kind": "nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, srv, "snapshot-set", "label", set.ID, "drover.io/vm=web", "kind=keep", "note=")
	if !strings.Contains(out, set.ID) || !strings.Contains(out, "drover.io/vm=web,kind=keep,note=") {
		t.Errorf("snapshot-set label output lacks the set with its new labels:\n%s", out)
	}
	got, err := c.GetSnapshotSet(ctx, set.ID)
	if want := map[string]string{"drover.io/vm": "web", "kind": "keep", "note": ""}; err != nil || !reflect.DeepEqual(got.Labels, want) {
		t.Errorf("labels after snapshot-set label = %v, %v; want %v", got.Labels, err, want)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no labels", []string{set.ID}, "takes ID KEY=VALUE..."},
		{"a label without a value", []string{set.ID, "kind"}, `"kind": give KEY=VALUE`},
		{"a label without a key", []string{set.ID, "=x"}, `"=x": give KEY=VALUE`},
		{"a label given twice", []string{set.ID, "kind=a", "kind=b"}, "label kind is given twice"},
		{"a key the target refuses", []string{set.ID, "Kind=a"}, `key "Kind"`},
		{"a set that does not exist", []string{"set-999", "kind=a"}, "does not exist"},
	} {
		if _, err := cli(t, srv, append([]string{"snapshot-set", "label"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if got, err := c.GetSnapshotSet(ctx, set.ID); err != nil || len(got.Labels) != 3 || got.Labels["kind"] != "keep" {
		t.Errorf("labels after refused changes = %v, %v; want them unchanged", got.Labels, err)
	}
}

func TestTheCLIExplainsWhatIsMissing(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no token", []string{"volume", "ls", "--endpoint", srv.URL}, nil, "DROVER_STORAGE_TOKEN"},
		{"a wrong token", []string{"volume", "ls", "--endpoint", srv.URL}, map[string]string{"DROVER_STORAGE_TOKEN": "nope"}, "token"},
		{"a bad size", []string{"volume", "create", "x", "lots", "--endpoint", srv.URL}, map[string]string{"DROVER_STORAGE_TOKEN": apitest.Token}, "SIZE_MIB"},
		{"a missing argument", []string{"volume", "grow", "x", "--endpoint", srv.URL}, map[string]string{"DROVER_STORAGE_TOKEN": apitest.Token}, "NAME SIZE_MIB"},
		{"a bad name", []string{"volume", "create", "Bad", "1", "--endpoint", srv.URL}, map[string]string{"DROVER_STORAGE_TOKEN": apitest.Token}, "uppercase"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, env(tc.env), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, env(nil), &out, &errOut); !errors.Is(err, errUsage) || !strings.Contains(errOut.String(), "unknown command") {
		t.Errorf("unknown command: %v, stderr %q; want a usage error", err, errOut.String())
	}
}

func TestServeRefusesToStartWithoutAToken(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--data-dir", t.TempDir()}, env(nil), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("serve without a token: %v, want an error naming --token-file", err)
	}
}

func TestServeTakesMaxHoldFromTheFlagOrTheConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("serve-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		file    string // max_hold in the config file; "" for no file
		want    time.Duration
		wantErr string
	}{
		{name: "no --max-hold is the default 10s", want: api.DefaultMaxHold},
		{name: "--max-hold 30s", args: []string{"--max-hold", "30s"}, want: 30 * time.Second},
		{name: "the bounds themselves are allowed", args: []string{"--max-hold=10m"}, want: 10 * time.Minute},
		{name: "the config file's max_hold", file: "2m30s", want: 150 * time.Second},
		{name: "the flag wins over the config file", args: []string{"--max-hold", "100ms"}, file: "2m", want: 100 * time.Millisecond},
		{name: "under 100ms is refused", args: []string{"--max-hold", "99ms"}, wantErr: "--max-hold 99ms is too short"},
		{name: "zero is refused", args: []string{"--max-hold", "0"}, wantErr: "--max-hold 0 is too short"},
		{name: "over 10m is refused", args: []string{"--max-hold", "10m1s"}, wantErr: "--max-hold 10m1s is too long"},
		{name: "a config file value over 10m is refused", file: "1h", wantErr: "--max-hold 1h is too long"},
		{name: "a number without a unit is refused", args: []string{"--max-hold", "30"}, wantErr: `--max-hold "30": give a duration such as 10s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--data-dir", dir, "--token-file", tokenFile}, tc.args...)
			if tc.file != "" {
				config := filepath.Join(t.TempDir(), "drover-target.json")
				if err := os.WriteFile(config, []byte(`{"max_hold":"`+tc.file+`"}`), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", config)
			}
			cfg, err := serveConfig(args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("serve %s: error %v, want one containing %q", strings.Join(args, " "), err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.MaxHold != tc.want {
				t.Errorf("serve %s: MaxHold %s, error %v; want %s", strings.Join(args, " "), cfg.MaxHold, err, tc.want)
			}
		})
	}
}

func TestServeRunsUntilTheContextEndsAndReadsAConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("serve-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	apiAddr := apitest.FreeAddr(t)
	config := filepath.Join(dir, "drover-target.json")
	cfg := `{"data_dir":"` + filepath.Join(dir, "data") + `","api_listen":"` + apiAddr + `","token_file":"` + tokenFile + `","max_hold":"30s","log_level":"warn"}`
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out, errOut bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--config", config, "--iscsi-listen", apitest.FreeAddr(t)}, env(nil), &out, &errOut)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + apiAddr + "/v1/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the daemon did not answer on %s within 10s: %v (log: %s)", apiAddr, err, errOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop within 10s of cancel")
	}
}

func TestTheAdminCLIListsAndRemovesSchedules(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	c, err := storage.New(srv.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustCLI(t, srv, "volume", "create", "web", "1")
	s, err := c.CreateSchedule(ctx, wire.ScheduleRequest{VM: "vm-web", Volumes: []string{"web"}, Schedule: "30 2 * * *", Keep: wire.Keep{Last: 2, Daily: 7}})
	if err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, srv, "schedule", "ls")
	for _, want := range []string{"NEXT RUN", s.ID, "vm-web", "30 2 * * *", "last=2,daily=7", "web", s.NextRun.Format(time.RFC3339)} {
		if !strings.Contains(out, want) {
			t.Errorf("schedule ls output lacks %q:\n%s", want, out)
		}
	}
	if out := mustCLI(t, srv, "schedule", "rm", s.ID); !strings.Contains(out, "backups it made stay") {
		t.Errorf("schedule rm said %q", out)
	}
	if out := mustCLI(t, srv, "schedule", "ls"); strings.Contains(out, s.ID) {
		t.Errorf("schedule ls after rm = %q, want no %s", out, s.ID)
	}
	if _, err := cli(t, srv, "schedule", "rm", s.ID); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("second schedule rm: %v, want one saying it does not exist", err)
	}
}

func TestTheAdminCLITrustsTheCAOfCAFile(t *testing.T) {
	t.Parallel()
	srv := apitest.New(t)
	tlsSrv := httptest.NewTLSServer(srv.API)
	t.Cleanup(tlsSrv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	run1 := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(args, "--endpoint", tlsSrv.URL), env(map[string]string{"DROVER_STORAGE_TOKEN": apitest.Token}), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if _, err := run1("volume", "ls"); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Errorf("without --ca-file: %v, want the certificate refused as not trusted", err)
	}
	if out, err := run1("volume", "ls", "--ca-file", ca); err != nil {
		t.Errorf("with --ca-file: %v\n%s", err, out)
	}
	if _, err := run1("volume", "ls", "--ca-file", filepath.Join(t.TempDir(), "missing.pem")); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("with a missing --ca-file: %v, want an error naming the file", err)
	}
}
