package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/iscsi"
	"github.com/drover/terraform-provider-drover/target/server"
	"github.com/drover/terraform-provider-drover/target/store"
)

const token = "server-test-token"

func config(t *testing.T, dir string, ex *apitest.Exporter) server.Config {
	t.Helper()
	return server.Config{
		DataDir:     dir,
		APIListen:   "127.0.0.1:0",
		ISCSIListen: "127.0.0.1:0",
		Token:       token,
		NewEngine:   func(server.EngineConfig) (server.Exporter, error) { return ex, nil },
	}
}

func start(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	s, err := server.Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func call(t *testing.T, s *server.Server, method, path, body string, want int) string {
	t.Helper()
	req, err := http.NewRequest(method, s.APIURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; %s", method, path, resp.StatusCode, want, b)
	}
	return string(b)
}

func TestTheDaemonRefusesToStartWithoutAToken(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir(), apitest.NewExporter())
	cfg.Token = ""
	_, err := server.Start(cfg)
	if err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("Start without token: error %v, want one naming --token-file", err)
	}
}

func TestAnEmptyTokenFileIsRefused(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ReadTokenFile(p); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("ReadTokenFile(blank) error = %v, want one saying it is empty", err)
	}
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := server.ReadTokenFile(p); err != nil || got != "s3cret" {
		t.Errorf("ReadTokenFile = %q, %v; want %q", got, err, "s3cret")
	}
}

func TestEveryVolumeIsExportedAgainAfterARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, config(t, dir, apitest.NewExporter()))
	call(t, s, "POST", "/v1/volumes", `{"name":"a","size_mib":1,"initiators":["iqn.2000-01.lab:h"]}`, http.StatusCreated)
	call(t, s, "POST", "/v1/volumes", `{"name":"b","size_mib":2}`, http.StatusCreated)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}

	ex := apitest.NewExporter()
	start(t, config(t, dir, ex))
	var names []string
	for _, e := range ex.Exports() {
		names = append(names, e.Name+" "+e.IQN)
		if e.Name == "a" && (len(e.Initiators) != 1 || e.Initiators[0] != "iqn.2000-01.lab:h") {
			t.Errorf("export a initiators = %v, want [iqn.2000-01.lab:h]", e.Initiators)
		}
	}
	if got, want := strings.Join(names, ", "), "a iqn.2026-11.io.drover:a, b iqn.2026-11.io.drover:b"; got != want {
		t.Errorf("exports after restart = %q, want %q", got, want)
	}
}

func TestMetricsAreBehindTheTokenAndCountSessions(t *testing.T) {
	t.Parallel()
	ex := apitest.NewExporter()
	s := start(t, config(t, t.TempDir(), ex))
	ex.AddSession(wire.Session{Volume: "a", Initiator: "iqn.2000-01.lab:h"})
	resp, err := http.Get(s.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without token: status %d, want 401", resp.StatusCode)
	}
	body := call(t, s, "GET", "/metrics", "", http.StatusOK)
	for _, want := range []string{"drover_target_sessions 1", "drover_target_volumes 0", "drover_target_api_requests_total", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestAFailedStartLeavesNothingRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := config(t, dir, nil)
	cfg.NewEngine = func(server.EngineConfig) (server.Exporter, error) { return nil, errors.New("port taken") }
	if _, err := server.Start(cfg); err == nil || !strings.Contains(err.Error(), "port taken") {
		t.Fatalf("Start error = %v, want the engine's error", err)
	}
	// The store was closed again: the data directory can be opened at once.
	start(t, config(t, dir, apitest.NewExporter()))
}

func TestRunStopsWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir(), apitest.NewExporter())
	cfg.APIListen = apitest.FreeAddr(t)
	health := func() error {
		resp, err := http.Get("http://" + cfg.APIListen + "/v1/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx, cfg) }()

	// Run serves until the context ends: the API answers, and Run has not
	// returned.
	for deadline := time.Now().Add(10 * time.Second); health() != nil; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("Run returned %v before its context ended", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API never answered at %s: %v", cfg.APIListen, health())
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while its context was live", err)
	case <-time.After(200 * time.Millisecond):
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	if err := health(); err == nil {
		t.Error("the API still answers after Run returned")
	}
}

func TestMaxHoldBoundsTheWriteHoldOfASnapshot(t *testing.T) {
	t.Parallel()
	ex := apitest.NewExporter()
	cfg := config(t, t.TempDir(), ex)
	cfg.MaxHold = 90 * time.Second
	s := start(t, cfg)
	call(t, s, "POST", "/v1/volumes", `{"name":"vm","size_mib":1}`, http.StatusCreated)
	call(t, s, "POST", "/v1/volumes/vm/snapshots", "", http.StatusCreated)
	if holds := ex.Holds(); len(holds) != 1 || holds[0].Limit != cfg.MaxHold {
		t.Errorf("holds = %+v, want one bounded by %s", holds, cfg.MaxHold)
	}
}

func TestTheRealISCSIEngineServesNewVolumes(t *testing.T) {
	t.Parallel()
	cfg := config(t, t.TempDir(), nil)
	cfg.NewEngine = nil // the real engine, on a free loopback port
	s := start(t, cfg)
	call(t, s, "POST", "/v1/volumes", `{"name":"real","size_mib":4,"initiators":["iqn.2000-01.lab:h"]}`, http.StatusCreated)
	call(t, s, "PATCH", "/v1/volumes/real", `{"size_mib":8}`, http.StatusOK)
	// The real engine holds writes for a snapshot set (api.Holder).
	if body := call(t, s, "POST", "/v1/snapshot-sets", `{"volumes":["real"]}`, http.StatusCreated); !strings.Contains(body, `"hold_ms": `) {
		t.Errorf("snapshot set = %s, want one with hold_ms", body)
	}
	call(t, s, "POST", "/v1/volumes/real/snapshots", "", http.StatusCreated) // under a hold too
	if body := call(t, s, "GET", "/v1/sessions", "", http.StatusOK); !strings.Contains(body, `"sessions": []`) {
		t.Errorf("sessions = %s, want an empty list", body)
	}
	call(t, s, "DELETE", "/v1/volumes/real", "", http.StatusNoContent)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestTheEngineKeepsReservationsInTheStore: the daemon hands the iSCSI
// engine its store for persistent reservations, so what the engine keeps
// there is found again by the engine of the next start on the same data.
func TestTheEngineKeepsReservationsInTheStore(t *testing.T) {
	dir := t.TempDir()
	var got iscsi.ReservationStore
	cfg := config(t, dir, apitest.NewExporter())
	cfg.NewEngine = func(c server.EngineConfig) (server.Exporter, error) {
		got = c.Reservations
		return apitest.NewExporter(), nil
	}
	s := start(t, cfg)
	if got == nil {
		t.Fatal("the engine was given no store for persistent reservations")
	}
	call(t, s, "POST", "/v1/volumes", `{"name":"db","size_mib":8}`, http.StatusCreated)
	want := store.Reservations{Generation: 3, Registrations: []store.Registration{{Port: "iqn.2000-01.lab:alpha,i,0x23d000000001", Key: 7}}}
	if err := got.PutReservations("db", want); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	got = nil
	start(t, cfg)
	r, err := got.Reservations("db")
	if err != nil {
		t.Fatal(err)
	}
	if r.Generation != 3 || len(r.Registrations) != 1 || r.Registrations[0] != want.Registrations[0] {
		t.Errorf("after a restart the engine finds %+v, want %+v", r, want)
	}
}
