package iscsi

import (
	"encoding/binary"
	"testing"
	"time"
)

// TestLogoutReleasesTheReservationBeforeItIsAnswered: an initiator holding
// a RESERVE(6) that is told it is logged out no longer holds it, so a
// second initiator can reserve at once (libiscsi's Reserve6.Logout does
// exactly that, and failed now and then while the nexus ended only after
// the answer).
func TestLogoutReleasesTheReservationBeforeItIsAnswered(t *testing.T) {
	t.Parallel()
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "logout", 1<<20, testInitiator)
	c := rawLogin(t, e, ex, testInitiator)
	if _, err := c.nc.Write(scsiCmd(1, 1, []byte{opReserve6, 0, 0, 0, 0, 0}, 0, false, false, nil)); err != nil {
		t.Fatal(err)
	}
	if h, _ := c.read(); h[0]&0x3f != opSCSIResp || h[3] != 0 {
		t.Fatalf("RESERVE(6): got opcode %#x status %#x, want GOOD", h[0]&0x3f, h[3])
	}
	e.mu.Lock()
	u := e.volumes[ex.Name].unit
	e.mu.Unlock()
	if u.resMu.Lock(); u.holder == nil {
		u.resMu.Unlock()
		t.Fatal("RESERVE(6) answered GOOD but nobody holds the unit")
	}
	u.resMu.Unlock()

	// Hold the unit's reservation lock while logging out: the nexus can
	// only end (and release the reservation) once the test lets go, so a
	// Logout Response that arrives meanwhile was sent too early.
	u.resMu.Lock()
	var h [bhsLen]byte
	h[0] = flagImmedate | opLogoutReq
	h[1] = 0x80 // close the session
	binary.BigEndian.PutUint32(h[16:], 2)
	binary.BigEndian.PutUint32(h[24:], 2)
	c.write(&h, nil)
	c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var early [1]byte
	_, err := c.nc.Read(early[:])
	u.resMu.Unlock()
	if err == nil {
		t.Fatal("the logout was answered while the initiator still held its RESERVE(6)")
	}
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if r, _ := c.read(); r[0]&0x3f != opLogoutResp || r[2] != 0 {
		t.Fatalf("logout: got opcode %#x response %#x, want a successful Logout Response", r[0]&0x3f, r[2])
	}
	u.resMu.Lock()
	held := u.holder != nil
	u.resMu.Unlock()
	if held {
		t.Error("the initiator still holds its RESERVE(6) after its logout was answered")
	}
}
