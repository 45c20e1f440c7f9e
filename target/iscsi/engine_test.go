package iscsi

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestAnAllowedInitiatorSeesTheVolumeWithInquiry(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "vol1", 64<<20, testInitiator)
	out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", testInitiator, volumeURL(e, ex))
	if err != nil {
		t.Fatalf("iscsi-inq: got error %v, want nil; output:\n%s", err, out)
	}
	if !strings.Contains(out, "DROVER") {
		t.Errorf("iscsi-inq output: got %q, want vendor DROVER", out)
	}
}

func TestDataWrittenWithQemuLandsInTheBackingFile(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "vol1", 64<<20, testInitiator)
	out, err := qemuIO(t, e, ex, testInitiator, "write -P 0xab 1M 3M", "read -P 0xab 1M 3M", "flush")
	if err != nil || strings.Contains(out, "error") || strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io: got error %v, want nil; output:\n%s", err, out)
	}
	got := readFile(t, ex.Path, 1<<20, 3<<20)
	if want := bytes.Repeat([]byte{0xab}, 3<<20); !bytes.Equal(got, want) {
		t.Errorf("backing file at 1 MiB: got %x..., want 3 MiB of ab", got[:16])
	}
	if got := readFile(t, ex.Path, 0, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Errorf("backing file at 0: got %x..., want zeros", got[:16])
	}
}

// waitForSessions polls Sessions until it lists want sessions of volume.
func waitForSessions(t *testing.T, e *Engine, volume string, want int) []Session {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got []Session
		for _, s := range e.Sessions() {
			if s.Volume == volume {
				got = append(got, s)
			}
		}
		if len(got) == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions of %s: got %d (%v), want %d", volume, len(got), got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTwoInitiatorsUseOneVolumeAtOnce(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "shared", 64<<20, testInitiator, testInitiator2)
	type result struct {
		out string
		err error
	}
	first := make(chan result, 1)
	go func() {
		// The first initiator stays logged in while the second one writes,
		// then reads what the second one wrote.
		out, err := qemuIO(t, e, ex, testInitiator, "sleep 3000", "read -P 0xcd 0 1M")
		first <- result{out, err}
	}()
	waitForSessions(t, e, "shared", 1)
	out, err := qemuIO(t, e, ex, testInitiator2, "write -P 0xcd 0 1M", "flush", "sleep 500")
	if err != nil || strings.Contains(out, "error") {
		t.Fatalf("second initiator: got error %v, want nil; output:\n%s", err, out)
	}
	r := <-first
	if r.err != nil || strings.Contains(r.out, "error") || strings.Contains(r.out, "verification failed") {
		t.Fatalf("first initiator: got error %v, want nil; output:\n%s", r.err, r.out)
	}
}

func TestSessionsListsBothInitiatorsOfASharedVolume(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "shared", 16<<20, testInitiator, testInitiator2)
	done := make(chan struct{}, 2)
	for _, ini := range []string{testInitiator, testInitiator2} {
		go func() {
			qemuIO(t, e, ex, ini, "sleep 2500")
			done <- struct{}{}
		}()
	}
	got := waitForSessions(t, e, "shared", 2)
	if got[0].Initiator == got[1].Initiator {
		t.Errorf("initiators: got %q twice, want %q and %q", got[0].Initiator, testInitiator, testInitiator2)
	}
	for _, s := range got {
		if s.TargetIQN != ex.IQN || !strings.HasPrefix(s.RemoteAddr, "127.0.0.1:") {
			t.Errorf("session: got %+v, want target %s from 127.0.0.1", s, ex.IQN)
		}
	}
	<-done
	<-done
	waitForSessions(t, e, "shared", 0)
}

func TestAddingAndRemovingAVolumeLeavesOtherSessionsAlone(t *testing.T) {
	e, _ := startEngine(t)
	steady := exportVolume(t, e, "steady", 16<<20, testInitiator)
	type result struct {
		out string
		err error
	}
	res := make(chan result, 1)
	go func() {
		out, err := qemuIO(t, e, steady, testInitiator, "write -P 0x11 0 64k", "sleep 3000", "write -P 0x22 64k 64k", "read -P 0x11 0 64k", "flush")
		res <- result{out, err}
	}()
	waitForSessions(t, e, "steady", 1)

	extra := exportVolume(t, e, "extra", 16<<20, testInitiator)
	if out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", testInitiator, volumeURL(e, extra)); err != nil {
		t.Fatalf("iscsi-inq on the added volume: got error %v, want nil\n%s", err, out)
	}
	if err := e.Remove("extra"); err != nil {
		t.Fatalf("Remove: got error %v, want nil", err)
	}
	if out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", testInitiator, volumeURL(e, extra)); err == nil {
		t.Errorf("iscsi-inq on the removed volume: got success, want a refused login\n%s", out)
	}

	r := <-res
	if r.err != nil || strings.Contains(r.out, "error") || strings.Contains(r.out, "verification failed") {
		t.Fatalf("session on the other volume: got error %v, want nil; output:\n%s", r.err, r.out)
	}
	if got := readFile(t, steady.Path, 64<<10, 64<<10); !bytes.Equal(got, bytes.Repeat([]byte{0x22}, 64<<10)) {
		t.Errorf("steady volume after the other volume went: got %x..., want 22...", got[:8])
	}
}

func TestRemovingAVolumeClosesItsSessions(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "doomed", 16<<20, testInitiator)
	done := make(chan struct{})
	go func() {
		defer close(done)
		qemuIO(t, e, ex, testInitiator, "sleep 20000")
	}()
	waitForSessions(t, e, "doomed", 1)
	if err := e.Remove("doomed"); err != nil {
		t.Fatalf("Remove: got error %v, want nil", err)
	}
	if got := e.Sessions(); len(got) != 0 {
		t.Errorf("sessions after Remove: got %v, want none", got)
	}
}

func TestLoginIsRefused(t *testing.T) {
	e, _ := startEngine(t)
	listed := exportVolume(t, e, "listed", 16<<20, testInitiator)
	nobody := exportVolume(t, e, "nobody", 16<<20)
	tests := []struct {
		name, initiator, url string
	}{
		{"for an initiator not in the allow-list", testInitiator2, volumeURL(e, listed)},
		{"for everyone when the allow-list is empty", testInitiator, volumeURL(e, nobody)},
		{"for a target that does not exist", testInitiator, fmt.Sprintf("iscsi://%s/iqn.2026-11.io.drover:missing/0", portal(e))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", tt.initiator, tt.url)
			if err == nil {
				t.Errorf("iscsi-inq: got success, want refused login\n%s", out)
			}
		})
	}
	if got := e.Sessions(); len(got) != 0 {
		t.Errorf("sessions: got %v, want none", got)
	}
}

func TestCHAPLogin(t *testing.T) {
	e, _ := startEngine(t)
	ex := Export{Name: "secret", IQN: "iqn.2026-11.io.drover:secret", Path: newBackingFile(t, t.TempDir(), 16<<20),
		Initiators: []string{testInitiator}, CHAP: &wire.CHAP{User: "alice", Secret: "correct-horse-1"}}
	if err := e.Add(ex); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		url     string
		allowed bool
	}{
		{"with the right secret is accepted", chapURL(e, ex, "alice", "correct-horse-1"), true},
		{"with a wrong secret is refused", chapURL(e, ex, "alice", "wrong-horse-22"), false},
		{"with a wrong user is refused", chapURL(e, ex, "mallory", "correct-horse-1"), false},
		{"without credentials is refused", volumeURL(e, ex), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTool(t, 20*time.Second, "iscsi-inq", "-i", testInitiator, tt.url)
			if got := err == nil; got != tt.allowed {
				t.Errorf("login allowed: got %v, want %v (err %v)\n%s", got, tt.allowed, err, out)
			}
		})
	}
}

func TestAnORWRITEDoesNotStopTheEngine(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "orwrite", 16<<20, testCUInitiator, testCUInitiator2, testInitiator)
	out, err := runTool(t, 60*time.Second, "iscsi-test-cu", "--dataloss", "-t", "SCSI.OrWrite", volumeURL(e, ex))
	if err != nil && strings.Contains(err.Error(), "timed out") {
		t.Fatalf("iscsi-test-cu -t SCSI.OrWrite: got %v, want it to finish\n%s", err, out)
	}
	out, err = qemuIO(t, e, ex, testInitiator, "write -P 0x5a 0 64k", "read -P 0x5a 0 64k")
	if err != nil || strings.Contains(out, "error") || strings.Contains(out, "verification failed") {
		t.Fatalf("qemu-io after ORWRITE: got error %v, want nil; output:\n%s", err, out)
	}
}
