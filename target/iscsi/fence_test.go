package iscsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// loginStatus sends one Login Request (straight to the full feature phase,
// no authentication offered) and returns the status of the answer. An
// empty target asks for a discovery session.
func loginStatus(t *testing.T, e *Engine, target, initiator string, isid [6]byte) uint16 {
	t.Helper()
	nc, err := net.Dial("tcp", portal(e))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	kvs := []kv{{"InitiatorName", initiator}, {"SessionType", "Normal"}, {"TargetName", target}}
	if target == "" {
		kvs = []kv{{"InitiatorName", initiator}, {"SessionType", "Discovery"}}
	}
	kvs = append(kvs, kv{"AuthMethod", "None"}, kv{"MaxRecvDataSegmentLength", "262144"})
	var h [bhsLen]byte
	h[0] = flagImmedate | opLoginReq
	h[1] = 0x80 | 3
	copy(h[8:14], isid[:])
	binary.BigEndian.PutUint32(h[24:], 1)
	if _, err := nc.Write(rawPDU(&h, marshalText(kvs))); err != nil {
		t.Fatal(err)
	}
	_, status, _ := readLoginResp(t, nc)
	return status
}

// bgTool is an initiator tool running in the background.
type bgTool struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
}

func (b *bgTool) running() bool {
	select {
	case <-b.done:
		return false
	default:
		return true
	}
}

// startQemuIO starts qemu-io on a volume in the background; the test ends
// it by its pid.
func startQemuIO(t *testing.T, e *Engine, ex Export, initiator string, cmds ...string) *bgTool {
	t.Helper()
	requireTool(t, "qemu-io")
	b := &bgTool{cmd: exec.Command("qemu-io", qemuIOArgs(e, ex, initiator, cmds...)...), done: make(chan struct{})}
	var out bytes.Buffer
	b.cmd.Stdout, b.cmd.Stderr = &out, &out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
		if t.Failed() {
			t.Logf("qemu-io as %s:\n%s", initiator, out.String())
		}
	})
	return b
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetGauge() != nil {
			return m.GetGauge().GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func sessionsOf(e *Engine, initiator string) int {
	n := 0
	for _, s := range e.Sessions() {
		if s.Initiator == initiator {
			n++
		}
	}
	return n
}

func unitOf(t *testing.T, e *Engine, name string) *logicalUnit {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.volumes[name].unit
}

var (
	isid1 = [6]byte{0x80, 0, 0, 0, 0, 1}
	isid2 = [6]byte{0x23, 0xd0, 0, 0, 0, 7} // as a reconnecting libiscsi would choose anew
)

// TestAFencedInitiatorIsShutOutAndNothingItWritesLandsAfterTheFence has
// QEMU's initiator write a changing pattern without pause (small writes,
// which run on the reader goroutine, and large ones, which get their own)
// while another initiator uses the same volume, then fences the writer:
// when Fence returns, its session is gone, its registrations too, and the
// backing file does not change any more although its qemu-io keeps
// reconnecting (with new ISIDs) for seconds; a login with its name is
// refused with 0x0202 with any ISID, for discovery too, although the
// allow-list has it; the other initiator carries on. Unfence lets it in
// again.
func TestAFencedInitiatorIsShutOutAndNothingItWritesLandsAfterTheFence(t *testing.T) {
	e, reg := startEngine(t)
	const size = 4 << 20
	ex := exportVolume(t, e, "shared", size, testInitiator, testInitiator2)
	pr := unitOf(t, e, "shared").pr
	mustPROut(t, pr, testInitiator+",i,0x800000000001", prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, pr, testInitiator+",i,0x23d000000007", prOutRegisterIgnore, 0, 0, 0xa2)
	mustPROut(t, pr, testInitiator2+",i,0x800000000001", prOutRegisterIgnore, 0, 0, 0xb)

	var cmds []string
	for i := range 4000 {
		n := 64 << 10
		if i%2 == 1 {
			n = 256 << 10 // past inlineMax: a command goroutine
		}
		cmds = append(cmds, fmt.Sprintf("write -P 0x%02x %d %d", i%254+1, (i*(64<<10))%(size-(256<<10)), n))
	}
	writer := startQemuIO(t, e, ex, testInitiator, cmds...)
	deadline := time.Now().Add(20 * time.Second)
	for !bytes.ContainsAny(readFile(t, ex.Path, 0, size), "\x02\x03\x04") {
		if time.Now().After(deadline) {
			t.Fatal("the writer's pattern never showed in the backing file")
		}
		time.Sleep(10 * time.Millisecond)
	}
	reader := startQemuIO(t, e, ex, testInitiator2, slices.Repeat([]string{"read 0 1M", "sleep 50"}, 400)...)
	waitForSessions(t, e, "shared", 2)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Fence(ctx, testInitiator); err != nil {
		t.Fatalf("Fence: got error %v, want nil", err)
	}
	fenced := readFile(t, ex.Path, 0, size)
	if n := sessionsOf(e, testInitiator); n != 0 {
		t.Errorf("sessions of the fenced initiator after Fence: got %d, want 0", n)
	}
	if _, keys := readKeys(t, pr); !slices.Equal(keys, []uint64{0xb}) {
		t.Errorf("registered keys after Fence: got %#x, want only the other initiator's 0xb", keys)
	}
	for _, tc := range []struct {
		name, target string
		isid         [6]byte
	}{{"its old ISID", ex.IQN, isid1}, {"a new ISID", ex.IQN, isid2}, {"discovery", "", isid2}} {
		if got := loginStatus(t, e, tc.target, testInitiator, tc.isid); got != loginForbidden {
			t.Errorf("login of the fenced initiator with %s: got status %#04x, want %#04x (authorization failure)", tc.name, got, loginForbidden)
		}
	}

	// Its qemu-io keeps trying to reconnect and to write: nothing lands.
	time.Sleep(3 * time.Second)
	if after := readFile(t, ex.Path, 0, size); !bytes.Equal(after, fenced) {
		i := 0
		for after[i] == fenced[i] {
			i++
		}
		t.Errorf("the backing file changed after Fence returned: first at byte %d (%#x, was %#x)", i, after[i], fenced[i])
	}
	if n := sessionsOf(e, testInitiator); n != 0 {
		t.Errorf("sessions of the fenced initiator 3 s after Fence: got %d, want 0", n)
	}
	if !reader.running() || sessionsOf(e, testInitiator2) != 1 {
		t.Errorf("the other initiator: running %v with %d sessions, want its one session to carry on", reader.running(), sessionsOf(e, testInitiator2))
	}
	if !writer.running() {
		t.Error("the fenced initiator's qemu-io ended; want it still retrying, as libiscsi does for ever")
	}
	mustSucceed(t, "another initiator's write", <-runQemuIO(t, e, ex, testInitiator2, "write -P 0xee 0 4k"))
	if got := gaugeValue(t, reg, "drover_iscsi_fenced_initiators"); got != 1 {
		t.Errorf("drover_iscsi_fenced_initiators: got %v, want 1", got)
	}
	if got := gaugeValue(t, reg, "drover_iscsi_fenced_logins_refused_total"); got < 3 {
		t.Errorf("drover_iscsi_fenced_logins_refused_total: got %v, want at least the 3 refused here", got)
	}

	if err := e.Fence(ctx, testInitiator); err != nil {
		t.Errorf("Fence again: got error %v, want nil (it is idempotent)", err)
	}
	e.Unfence(testInitiator)
	if got := gaugeValue(t, reg, "drover_iscsi_fenced_initiators"); got != 0 {
		t.Errorf("drover_iscsi_fenced_initiators after Unfence: got %v, want 0", got)
	}
	mustSucceed(t, "the unfenced initiator's write", <-runQemuIO(t, e, ex, testInitiator, "write -P 0xdd 1M 4k", "read -P 0xdd 1M 4k"))
}

// TestAWriteWaitingWhenTheFenceComesNeverLands: a write already read off
// the socket, held at the volume's write gate (by a hold, as for a
// snapshot), when its initiator is fenced: Fence returns while the hold
// is still on, and after the hold ends the write has not landed.
func TestAWriteWaitingWhenTheFenceComesNeverLands(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "held", 4<<20, testInitiator)
	h, err := e.Hold(context.Background(), []string{"held"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	small := startQemuIO(t, e, ex, testInitiator, "write -P 0x77 0 4k")
	large := startQemuIO(t, e, ex, testInitiator, "write -P 0x77 1M 1M")
	waitForHeldWrites(t, e, "held", 2)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Fence(ctx, testInitiator); err != nil {
		t.Fatalf("Fence with writes waiting at the gate: got error %v, want nil", err)
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // what would land, lands by now
	zeros := make([]byte, 1<<20)
	if got := readFile(t, ex.Path, 0, 4<<10); !bytes.Equal(got, zeros[:4<<10]) {
		t.Errorf("the small write landed after Fence returned: got %x... at 0, want zeros", got[:8])
	}
	if got := readFile(t, ex.Path, 1<<20, 1<<20); !bytes.Equal(got, zeros) {
		t.Errorf("the large write landed after Fence returned: got %x... at 1 MiB, want zeros", got[:8])
	}
	for _, p := range []*bgTool{small, large} {
		if !p.running() {
			t.Errorf("qemu-io %d ended, want it still retrying against the fence", p.cmd.Process.Pid)
		}
	}
}

// TestAFenceOutranksCHAPAndTheAllowList: a fenced initiator with the right
// CHAP credentials is refused as unauthorised, before CHAP is asked for.
func TestAFenceOutranksCHAPAndTheAllowList(t *testing.T) {
	e, _ := startEngine(t)
	ex := Export{Name: "chap", IQN: "iqn.2026-11.io.drover:chap", Path: newBackingFile(t, t.TempDir(), 1<<20),
		Initiators: []string{testInitiator}, CHAP: &wire.CHAP{User: "u", Secret: "0123456789ab"}}
	if err := e.Add(ex); err != nil {
		t.Fatal(err)
	}
	if out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", testInitiator, chapURL(e, ex, "u", "0123456789ab")); err != nil {
		t.Fatalf("iscsi-inq before the fence: got error %v\n%s", err, out)
	}
	if err := e.Fence(context.Background(), testInitiator); err != nil {
		t.Fatal(err)
	}
	if out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", testInitiator, chapURL(e, ex, "u", "0123456789ab")); err == nil {
		t.Errorf("iscsi-inq of the fenced initiator with the right CHAP credentials: got success, want refused\n%s", out)
	}
	if got := loginStatus(t, e, ex.IQN, testInitiator, isid1); got != loginForbidden {
		t.Errorf("login of the fenced initiator to a CHAP volume: got status %#04x, want %#04x before any CHAP", got, loginForbidden)
	}
}

// TestALoginUnderWayWhenTheFenceComesIsDropped: a connection that passed
// the fence check before the fence, and finishes its login after, is
// closed instead of becoming a session.
func TestALoginUnderWayWhenTheFenceComesIsDropped(t *testing.T) {
	e, reg := startEngine(t)
	ex := exportVolume(t, e, "racy", 1<<20, testInitiator)
	nc, err := net.Dial("tcp", portal(e))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var h [bhsLen]byte
	h[0] = flagImmedate | opLoginReq
	h[1] = 0x80 | 1<<0 // security stage, transit to operational negotiation
	copy(h[8:14], isid1[:])
	binary.BigEndian.PutUint32(h[24:], 1)
	nc.Write(rawPDU(&h, marshalText([]kv{{"InitiatorName", testInitiator}, {"TargetName", ex.IQN}, {"AuthMethod", "None"}})))
	if _, status, _ := readLoginResp(t, nc); status != 0 {
		t.Fatalf("first login step: got status %#04x, want success", status)
	}
	if err := e.Fence(context.Background(), testInitiator); err != nil {
		t.Fatal(err)
	}
	h[1] = 0x80 | 1<<2 | 3 // operational stage, transit to full feature
	nc.Write(rawPDU(&h, marshalText([]kv{{"MaxRecvDataSegmentLength", "262144"}})))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection of a login finished after the fence is still open")
			}
			break
		}
	}
	if n := sessionsOf(e, testInitiator); n != 0 {
		t.Errorf("sessions of the fenced initiator: got %d, want 0", n)
	}
	if got := gaugeValue(t, reg, "drover_iscsi_fenced_logins_refused_total"); got != 1 {
		t.Errorf("drover_iscsi_fenced_logins_refused_total: got %v, want 1", got)
	}
}

// TestFenceGivesUpAtItsDeadline: a session whose command cannot finish (a
// write stuck inside the gate, as in a hung file system) keeps Fence
// waiting only until ctx ends; the fence stays in force.
func TestFenceGivesUpAtItsDeadline(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "stuck", 1<<20, testInitiator, testInitiator2)
	rawLogin(t, e, ex, testInitiator)
	waitForSessions(t, e, "stuck", 1)
	// The session's reader is stuck as a command would be: it waits for a
	// command slot that never frees (a test-only stand-in for a pwrite that
	// does not return).
	e.mu.Lock()
	var s *session
	for o := range e.sessions {
		s = o
	}
	e.mu.Unlock()
	s.inflight.Add(1)
	defer s.inflight.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := e.Fence(ctx, testInitiator)
	if err == nil || !strings.Contains(err.Error(), "1 of its 1 sessions have not ended") {
		t.Errorf("Fence with a stuck session: got %v, want the deadline's error naming the session", err)
	}
	if got := loginStatus(t, e, ex.IQN, testInitiator, isid2); got != loginForbidden {
		t.Errorf("login after a Fence that timed out: got %#04x, want %#04x (the fence holds)", got, loginForbidden)
	}
}

// TestFenceWaitsForTheCommandsItsSessionsAreRunning: a command of the
// fenced initiator that is running when the fence comes (here one that
// takes 300 ms to write, standing in for a pwrite in progress) finishes
// before Fence returns, not after.
func TestFenceWaitsForTheCommandsItsSessionsAreRunning(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "busy", 1<<20, testInitiator)
	rawLogin(t, e, ex, testInitiator)
	waitForSessions(t, e, "busy", 1)
	e.mu.Lock()
	var s *session
	for o := range e.sessions {
		s = o
	}
	e.mu.Unlock()
	s.inflight.Add(1) // as dispatch does for a command goroutine
	go func() {
		defer s.inflight.Done()
		time.Sleep(300 * time.Millisecond)
		f, err := os.OpenFile(ex.Path, os.O_RDWR, 0)
		if err != nil {
			return
		}
		defer f.Close()
		f.WriteAt([]byte("late write"), 0)
	}()
	if err := e.Fence(context.Background(), testInitiator); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, ex.Path, 0, 10); string(got) != "late write" {
		t.Errorf("the volume when Fence returned: got %q at 0, want the running command's write in (Fence waits for it)", got)
	}
}
