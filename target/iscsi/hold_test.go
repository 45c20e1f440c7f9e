package iscsi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

const testInitiator3 = "iqn.2026-11.io.drover.test:initiator-c"

type toolResult struct {
	out string
	err error
	at  time.Time
}

// runQemuIO runs qemu-io in the background and delivers its result.
func runQemuIO(t *testing.T, e *Engine, ex Export, initiator string, cmds ...string) <-chan toolResult {
	t.Helper()
	res := make(chan toolResult, 1)
	go func() {
		out, err := qemuIO(t, e, ex, initiator, cmds...)
		res <- toolResult{out, err, time.Now()}
	}()
	return res
}

func mustSucceed(t *testing.T, what string, r toolResult) {
	t.Helper()
	if r.err != nil || strings.Contains(r.out, "error") || strings.Contains(r.out, "verification failed") {
		t.Fatalf("%s: got error %v, want success; output:\n%s", what, r.err, r.out)
	}
}

func gateOf(t *testing.T, e *Engine, name string) *writeGate {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.volumes[name]
	if !ok {
		t.Fatalf("volume %s is not exported", name)
	}
	return &v.unit.gate
}

// waitForHeldWrites polls until n commands of a volume wait at its gate.
func waitForHeldWrites(t *testing.T, e *Engine, name string, n int) {
	t.Helper()
	g := gateOf(t, e, name)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, waiting := g.state(); waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			_, waiting := g.state()
			t.Fatalf("writes waiting on %s: got %d, want %d", name, waiting, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func notYet(t *testing.T, what string, res <-chan toolResult) {
	t.Helper()
	select {
	case r := <-res:
		t.Fatalf("%s finished during the hold, want it to wait for the release; output:\n%s", what, r.out)
	default:
	}
}

// TestWritesDuringAHoldWaitAndMissTheCut holds writes on a volume while
// QEMU's initiator writes to it (a small write, which would run on the
// reader goroutine, and a large one, which gets its own) and another
// initiator reads: the reads complete during the hold, the writes complete
// only after Release, and a copy of the file taken during the hold has the
// data from before it.
func TestWritesDuringAHoldWaitAndMissTheCut(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "held", 16<<20, testInitiator, testInitiator2, testInitiator3)
	mustSucceed(t, "write before the hold", <-runQemuIO(t, e, ex, testInitiator, "write -P 0x11 0 2M", "flush"))

	h, err := e.Hold(context.Background(), []string{"held", "not-exported"}, 30*time.Second)
	if err != nil {
		t.Fatalf("Hold: got error %v, want nil", err)
	}
	defer h.Release()
	if got := h.Volumes(); len(got) != 1 || got[0] != "held" {
		t.Errorf("held volumes: got %v, want [held] (unexported ones skipped)", got)
	}
	small := runQemuIO(t, e, ex, testInitiator, "write -P 0x22 0 64k", "flush")
	large := runQemuIO(t, e, ex, testInitiator2, "write -P 0x33 1M 1M", "flush")
	waitForHeldWrites(t, e, "held", 2)

	start := time.Now()
	mustSucceed(t, "read during the hold", <-runQemuIO(t, e, ex, testInitiator3, "read -P 0x11 0 2M"))
	t.Logf("a 2 MiB read took %s during the hold", time.Since(start))
	notYet(t, "the small write", small)
	notYet(t, "the large write", large)

	cut, err := os.ReadFile(ex.Path)
	if err != nil {
		t.Fatal(err)
	}
	notYet(t, "the small write", small)
	notYet(t, "the large write", large)
	released := time.Now()
	if err := h.Release(); err != nil {
		t.Fatalf("Release: got error %v, want nil", err)
	}
	for _, w := range []struct {
		name string
		res  <-chan toolResult
	}{{"the small write", small}, {"the large write", large}} {
		r := <-w.res
		mustSucceed(t, w.name, r)
		if r.at.Before(released) {
			t.Errorf("%s finished at %s, before the release at %s", w.name, r.at, released)
		}
	}
	if want := bytes.Repeat([]byte{0x11}, 2<<20); !bytes.Equal(cut[:2<<20], want) {
		t.Errorf("file copied during the hold: got %x... at 0 and %x... at 1 MiB, want 2 MiB of 11", cut[:4], cut[1<<20:1<<20+4])
	}
	if got := readFile(t, ex.Path, 0, 64<<10); !bytes.Equal(got, bytes.Repeat([]byte{0x22}, 64<<10)) {
		t.Errorf("file after the release at 0: got %x..., want 22", got[:4])
	}
	if got := readFile(t, ex.Path, 1<<20, 1<<20); !bytes.Equal(got, bytes.Repeat([]byte{0x33}, 1<<20)) {
		t.Errorf("file after the release at 1 MiB: got %x..., want 33", got[:4])
	}
	if err := h.Release(); err != nil {
		t.Errorf("second Release: got error %v, want nil", err)
	}
}

// TestAHoldThatCannotDrainGivesUpAndReleases keeps a command inside the
// gate (as a write stuck in the file system would be): Hold must return an
// error naming the volume at its limit, and writes must flow again.
func TestAHoldThatCannotDrainGivesUpAndReleases(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "stuck", 16<<20, testInitiator)
	g := gateOf(t, e, "stuck")
	if err := g.enter(nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := e.Hold(context.Background(), []string{"stuck"}, 300*time.Millisecond)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "still running on stuck (1 in flight)") || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Hold: got error %v, want one naming the busy volume", err)
	}
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("Hold gave up after %s, want about its 300ms limit", took)
	}
	g.leave()
	r := <-runQemuIO(t, e, ex, testInitiator, "write -P 0x44 0 64k", "flush")
	mustSucceed(t, "write after the failed hold", r)
	if got := readFile(t, ex.Path, 0, 4); !bytes.Equal(got, []byte{0x44, 0x44, 0x44, 0x44}) {
		t.Errorf("file after the failed hold: got %x, want 44444444", got)
	}
}

// TestAHoldNotReleasedInTimeEndsByItself: the writes a forgotten hold keeps
// waiting go on at its limit, and Release then says the hold did not last.
func TestAHoldNotReleasedInTimeEndsByItself(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "forgotten", 16<<20, testInitiator)
	const limit = 1500 * time.Millisecond
	h, err := e.Hold(context.Background(), []string{"forgotten"}, limit)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	w := runQemuIO(t, e, ex, testInitiator, "write -P 0x55 0 64k", "flush")
	select {
	case <-h.Expired():
	case <-time.After(10 * time.Second):
		t.Fatal("the hold did not expire within 10s of its 1.5s limit")
	}
	r := <-w
	mustSucceed(t, "write held by a forgotten hold", r)
	if took := r.at.Sub(start); took > limit+10*time.Second {
		t.Errorf("write took %s, want it released at the %s limit", took, limit)
	}
	if err := h.Release(); err == nil || !strings.Contains(err.Error(), "longest allowed") {
		t.Errorf("Release after expiry: got %v, want an error saying the hold ran out", err)
	}
}

// TestRemovingAVolumeDuringAHoldDoesNotWaitForIt: a write waiting at the
// gate gives up when its session is closed, so Remove is not held up.
func TestRemovingAVolumeDuringAHoldDoesNotWaitForIt(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "going", 16<<20, testInitiator)
	h, err := e.Hold(context.Background(), []string{"going"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	// After the removal, qemu-io would retry its write until its own
	// timeout: it is killed when the test is done with it.
	requireTool(t, "qemu-io")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "qemu-io", qemuIOArgs(e, ex, testInitiator, "write -P 0x66 0 64k")...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		cmd.Wait()
	}()
	waitForHeldWrites(t, e, "going", 1)
	start := time.Now()
	if err := e.Remove("going"); err != nil {
		t.Fatalf("Remove: got error %v, want nil", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Remove took %s during a hold, want it not to wait for the hold", took)
	}
	if got := readFile(t, ex.Path, 0, 4); !bytes.Equal(got, make([]byte, 4)) {
		t.Errorf("file after the removal: got %x, want the held write never written", got)
	}
}

func TestHoldsOverlapAndTheLastOneOpensTheGate(t *testing.T) {
	t.Parallel()
	e, _ := startEngine(t)
	exportVolume(t, e, "a", 1<<20)
	exportVolume(t, e, "b", 1<<20)
	ctx := context.Background()
	h1, err := e.Hold(ctx, []string{"a", "b"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := e.Hold(ctx, []string{"b", "b"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a, b := gateOf(t, e, "a"), gateOf(t, e, "b")
	if err := h1.Release(); err != nil {
		t.Fatal(err)
	}
	if !a.tryEnter() {
		t.Errorf("gate a after its only hold ended: shut, want open")
	} else {
		a.leave()
	}
	if b.tryEnter() {
		t.Errorf("gate b while the second hold is on: open, want shut")
		b.leave()
	}
	if err := h2.Release(); err != nil {
		t.Fatal(err)
	}
	if !b.tryEnter() {
		t.Errorf("gate b after both holds ended: shut, want open")
	}
	b.leave()

	if _, err := e.Hold(ctx, []string{"a"}, 0); err == nil {
		t.Errorf("Hold with no limit: got nil error, want a refusal")
	}
	if err := a.enter(nil); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.Hold(cctx, []string{"a"}, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("Hold with a cancelled context while busy: got %v, want context.Canceled", err)
	}
	a.leave()
	if !a.tryEnter() {
		t.Errorf("gate a after a cancelled hold: shut, want open")
	}
	a.leave()
}

// apiEngine serves the engine to the management API as target/server does
// (api.Exporter and api.Holder), with hooks a test runs while a hold is in
// force: whileHeld before the API goes on to cut, beforeRelease when the
// cut is done.
type apiEngine struct {
	e                        *Engine
	whileHeld, beforeRelease func()
}

var _ api.Holder = (*apiEngine)(nil)

func (a *apiEngine) Add(ex api.Export) error {
	return a.e.Add(Export{Name: ex.Name, IQN: ex.IQN, LUN: ex.LUN, Path: ex.Path, Initiators: ex.Initiators})
}

func (a *apiEngine) Update(ex api.Export) error {
	return a.e.Update(Export{Name: ex.Name, IQN: ex.IQN, LUN: ex.LUN, Path: ex.Path, Initiators: ex.Initiators})
}

func (a *apiEngine) Remove(name string) error { return a.e.Remove(name) }
func (a *apiEngine) Sessions() []wire.Session { return nil }

func (a *apiEngine) HoldWrites(ctx context.Context, volumes []string, limit time.Duration) (api.WriteHold, error) {
	h, err := a.e.Hold(ctx, volumes, limit)
	if err != nil {
		return nil, err
	}
	if a.whileHeld != nil {
		a.whileHeld()
	}
	return hookedHold{h, a.beforeRelease}, nil
}

type hookedHold struct {
	*Hold
	beforeRelease func()
}

func (h hookedHold) Release() error {
	if h.beforeRelease != nil {
		h.beforeRelease()
	}
	return h.Hold.Release()
}

// TestASnapshotTakenWhileAnInitiatorWritesIsOfOneInstant takes a single
// snapshot through the management API (copied, not reflinked) while QEMU's
// initiator writes to the volume: the write issued once the hold is on
// waits through the whole cut, lands after it, and is not in the snapshot.
func TestASnapshotTakenWhileAnInitiatorWritesIsOfOneInstant(t *testing.T) {
	requireTool(t, "qemu-io")
	e, _ := startEngine(t)
	st, err := store.Open(t.TempDir(), store.Options{Logger: testLogger(t), NoReflink: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng := &apiEngine{e: e}
	const token = "hold-test-token"
	a, err := api.New(api.Config{Store: st, Exporter: eng, Token: token, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string, want int) []byte {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Fatalf("%s %s: status %d, want %d; body %s", method, path, rec.Code, want, rec.Body)
		}
		return rec.Body.Bytes()
	}
	call("POST", "/v1/volumes", `{"name":"cut","size_mib":16,"initiators":["`+testInitiator+`","`+testInitiator2+`"]}`, http.StatusCreated)
	ex := Export{Name: "cut", IQN: api.DefaultIQNPrefix + "cut", LUN: api.LUN}
	mustSucceed(t, "write before the snapshot", <-runQemuIO(t, e, ex, testInitiator, "write -P 0x11 0 2M", "flush"))

	var during <-chan toolResult
	var released time.Time
	eng.whileHeld = func() {
		during = runQemuIO(t, e, ex, testInitiator2, "write -P 0x22 0 64k", "flush")
		waitForHeldWrites(t, e, "cut", 1)
	}
	eng.beforeRelease = func() {
		notYet(t, "the write issued during the cut", during)
		released = time.Now()
	}
	var snap wire.Snapshot
	if err := json.Unmarshal(call("POST", "/v1/volumes/cut/snapshots", "", http.StatusCreated), &snap); err != nil {
		t.Fatal(err)
	}
	if during == nil || released.IsZero() {
		t.Fatalf("the snapshot was cut without a write hold")
	}
	r := <-during
	mustSucceed(t, "the write issued during the cut", r)
	if r.at.Before(released) {
		t.Errorf("the write issued during the cut finished at %s, before the release at %s", r.at, released)
	}
	s, err := st.GetSnapshot(snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, s.Path, 0, 2<<20), bytes.Repeat([]byte{0x11}, 2<<20); !bytes.Equal(got, want) {
		t.Errorf("snapshot (method %s): got %x... at 0, want 2 MiB of 11 from before the cut", s.Method, got[:4])
	}
	v, err := st.Get("cut")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, v.Path, 0, 64<<10); !bytes.Equal(got, bytes.Repeat([]byte{0x22}, 64<<10)) {
		t.Errorf("volume after the snapshot at 0: got %x..., want the write issued during the cut (22)", got[:4])
	}
}
