package server_test

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
	"github.com/drover/terraform-provider-drover/target/store"
)

const (
	hostA = "iqn.2008-11.org.linux-kvm:alpha"
	hostB = "iqn.2008-11.org.linux-kvm:beta"
)

func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (Debian: libiscsi-bin, qemu-utils, qemu-block-extra)", n)
		}
	}
}

// qemuIOCmd is qemu-io on LUN 0 of a target through QEMU's libiscsi, as
// initiator.
func qemuIOCmd(ctx context.Context, portal, iqn, initiator string, cmds ...string) *exec.Cmd {
	args := []string{"--image-opts", "-n"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	host, port, _ := strings.Cut(portal, ":")
	args = append(args, fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=%s:%s,file.target=%s,file.lun=0,file.initiator-name=%s", host, port, iqn, initiator))
	return exec.CommandContext(ctx, "qemu-io", args...)
}

func qemuIO(t *testing.T, portal, iqn, initiator string, cmds ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := qemuIOCmd(ctx, portal, iqn, initiator, cmds...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("error")) || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("qemu-io as %s: %v\n%s", initiator, err, out)
	}
}

// inquiry runs iscsi-inq as initiator and reports whether it got in.
func inquiry(t *testing.T, portal, iqn, initiator string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := exec.CommandContext(ctx, "iscsi-inq", "-i", initiator, fmt.Sprintf("iscsi://%s/%s/0", portal, iqn)).Run()
	if ctx.Err() != nil {
		t.Fatalf("iscsi-inq as %s did not end", initiator)
	}
	return err == nil
}

// registrations lists the initiator ports registered on a volume, with
// the daemon stopped (the store is its).
func registrations(t *testing.T, dir, volume string) []string {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Reservations(volume)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, reg := range r.Registrations {
		out = append(out, reg.Port)
	}
	slices.Sort(out)
	return out
}

func register(t *testing.T, dir, volume string, ports ...string) {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := store.Reservations{Generation: 1}
	for i, p := range ports {
		r.Registrations = append(r.Registrations, store.Registration{Port: p, Key: uint64(i + 1)})
	}
	if err := st.PutReservations(volume, r); err != nil {
		t.Fatal(err)
	}
}

// TestAFenceHoldsAcrossRestartsUntilItIsLifted runs the daemon with the
// real iSCSI engine while QEMU's initiator of host alpha writes to a
// volume without pause, and host beta uses it too: PUT /v1/fences/alpha
// answers once alpha's session is gone, nothing alpha writes lands after
// the answer (its qemu-io keeps reconnecting), alpha is refused and beta
// is not, alpha's registrations are gone from the store; after a restart
// alpha is still refused and registrations a crash could have left are
// removed at start; DELETE lets alpha in again.
func TestAFenceHoldsAcrossRestartsUntilItIsLifted(t *testing.T) {
	requireTools(t, "qemu-io", "iscsi-inq")
	dir := t.TempDir()
	cfg := config(t, dir, nil)
	cfg.NewEngine = nil // the real engine
	cfg.ISCSIListen = apitest.FreeAddr(t)
	portal, iqn := cfg.ISCSIListen, "iqn.2026-11.io.drover:vm"
	s := start(t, cfg)
	call(t, s, "POST", "/v1/volumes", `{"name":"vm","size_mib":4,"initiators":["`+hostA+`","`+hostB+`"]}`, http.StatusCreated)
	s.Close()
	portA, portB := hostA+",i,0x23d000000001", hostB+",i,0x23d000000001"
	register(t, dir, "vm", portA, hostA+",i,0x23d000000002", portB)

	s = start(t, cfg)
	path := filepath.Join(dir, "volumes", "vm.raw")
	var cmds []string
	for i := range 3000 {
		cmds = append(cmds, fmt.Sprintf("write -P 0x%02x %d 128k", i%250+1, (i%24)*(128<<10)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := qemuIOCmd(ctx, portal, iqn, hostA, cmds...)
	var writerOut bytes.Buffer
	writer.Stdout, writer.Stderr = &writerOut, &writerOut
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		writer.Wait()
		close(exited)
	}()
	defer func() { writer.Process.Kill(); <-exited }()
	// A busy machine (make test runs packages side by side) can take a
	// while to start QEMU's initiator: wait long, but not for a writer
	// that is gone.
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(call(t, s, "GET", "/v1/sessions", "", http.StatusOK), hostA) || !hasData(t, path) {
		select {
		case <-exited:
			t.Fatalf("alpha's writer exited before it got going: %s", writerOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("alpha's writer never got going")
		}
		time.Sleep(20 * time.Millisecond)
	}

	body := call(t, s, "PUT", "/v1/fences/"+hostA, `{"reason":"host alpha declared failed"}`, http.StatusCreated)
	fenced, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `"reason": "host alpha declared failed"`) {
		t.Errorf("PUT answer: %s", body)
	}
	if sessions := call(t, s, "GET", "/v1/sessions", "", http.StatusOK); strings.Contains(sessions, hostA) {
		t.Errorf("sessions after the fence: %s, want none of alpha", sessions)
	}
	if inquiry(t, portal, iqn, hostA) {
		t.Error("alpha logged in after the fence")
	}
	if !inquiry(t, portal, iqn, hostB) {
		t.Error("beta was refused; only alpha is fenced")
	}
	time.Sleep(2 * time.Second) // alpha's qemu-io keeps trying meanwhile
	if after, _ := os.ReadFile(path); !bytes.Equal(after, fenced) {
		t.Error("the volume changed after PUT /v1/fences answered: a write of the fenced host landed")
	}
	select {
	case <-exited:
		t.Error("alpha's qemu-io gave up; want it still retrying (as a half-dead host's QEMU does)")
	default:
	}
	metrics := call(t, s, "GET", "/metrics", "", http.StatusOK)
	if !strings.Contains(metrics, "drover_iscsi_fenced_initiators 1") {
		t.Errorf("/metrics: want drover_iscsi_fenced_initiators 1")
	}
	s.Close()
	if got := registrations(t, dir, "vm"); !slices.Equal(got, []string{portB}) {
		t.Errorf("registrations after the fence: got %v, want beta's only", got)
	}

	// As if a crash had come between keeping the fence and removing the
	// registrations: the next start removes them.
	register(t, dir, "vm", portA, portB)
	s = start(t, cfg)
	if inquiry(t, portal, iqn, hostA) {
		t.Error("alpha logged in after a restart; the fence must hold")
	}
	if !strings.Contains(call(t, s, "GET", "/v1/fences", "", http.StatusOK), hostA) {
		t.Error("GET /v1/fences after a restart does not list alpha")
	}
	s.Close()
	if got := registrations(t, dir, "vm"); !slices.Equal(got, []string{portB}) {
		t.Errorf("registrations after a restart with a fence: got %v, want beta's only", got)
	}

	s = start(t, cfg)
	call(t, s, "DELETE", "/v1/fences/"+hostA, "", http.StatusNoContent)
	if !inquiry(t, portal, iqn, hostA) {
		t.Error("alpha was refused after its fence was lifted")
	}
	qemuIO(t, portal, iqn, hostA, "write -P 0xcc 0 4k", "read -P 0xcc 0 4k")
	if body := call(t, s, "GET", "/v1/fences", "", http.StatusOK); !strings.Contains(body, `"fences": []`) {
		t.Errorf("GET /v1/fences after DELETE: %s, want an empty list", body)
	}
}

func hasData(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ContainsAny(b, "\x01\x02\x03")
}
