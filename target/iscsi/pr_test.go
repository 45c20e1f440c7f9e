package iscsi

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/drover/terraform-provider-drover/target/store"
)

const (
	portA1 = testInitiator + ",i,0x23d000000"
	portA2 = testInitiator + ",i,0x23d000001" // the same initiator reconnected
	portB  = testInitiator2 + ",i,0x23d000000"
)

func prOutCDB(sa, typ byte) []byte { return []byte{opPROut, sa, typ, 0, 0, 0, 0, 0, 24, 0} }

func prParam(key, saKey uint64, aptpl bool) []byte {
	b := make([]byte, 24)
	binary.BigEndian.PutUint64(b, key)
	binary.BigEndian.PutUint64(b[8:], saKey)
	if aptpl {
		b[20] = 0x01
	}
	return b
}

func mustPROut(t *testing.T, pr *persistentReservations, port string, sa, typ byte, key, saKey uint64) {
	t.Helper()
	if r := pr.out(port, prOutCDB(sa, typ), prParam(key, saKey, false)); r.status != statusGood {
		t.Fatalf("PR OUT service action %d from %s: got status %#x sense %x, want GOOD", sa, port, r.status, r.sense)
	}
}

// readReservation returns the holder's key and the type of READ RESERVATION.
func readReservation(t *testing.T, pr *persistentReservations) (key uint64, typ byte, reserved bool) {
	t.Helper()
	r := pr.in([]byte{opPRIn, prInReadReservation, 0, 0, 0, 0, 0, 0xff, 0xff, 0})
	if r.status != statusGood {
		t.Fatalf("READ RESERVATION: got status %#x, want GOOD", r.status)
	}
	if binary.BigEndian.Uint32(r.in[4:]) == 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(r.in[8:]), r.in[21], true
}

func readKeys(t *testing.T, pr *persistentReservations) (generation uint32, keys []uint64) {
	t.Helper()
	r := pr.in([]byte{opPRIn, prInReadKeys, 0, 0, 0, 0, 0, 0xff, 0xff, 0})
	if r.status != statusGood {
		t.Fatalf("READ KEYS: got status %#x, want GOOD", r.status)
	}
	for i := 8; i+8 <= len(r.in); i += 8 {
		keys = append(keys, binary.BigEndian.Uint64(r.in[i:]))
	}
	return binary.BigEndian.Uint32(r.in), keys
}

func TestReservationOfRegistrantsOnlyEndsWhenItsHolderUnregisters(t *testing.T) {
	t.Parallel()
	for _, typ := range []byte{prWriteExclusiveRO, prExclusiveAccessRO} {
		pr, _ := newPersistentReservations("v", nil)
		mustPROut(t, pr, portA1, prOutRegisterIgnore, 0, 0, 0xa)
		mustPROut(t, pr, portB, prOutRegisterIgnore, 0, 0, 0xb)
		mustPROut(t, pr, portA1, prOutReserve, typ, 0xa, 0)
		if key, got, ok := readReservation(t, pr); !ok || key != 0xa || got != typ {
			t.Fatalf("type %d: got key %#x type %d reserved %v, want %#x %d true", typ, key, got, ok, 0xa, typ)
		}
		if pr.conflicts(portB, opWrite10) {
			t.Errorf("type %d: a registrant's write conflicts, want it let in", typ)
		}
		mustPROut(t, pr, portA1, prOutRegister, 0, 0xa, 0)
		if _, _, ok := readReservation(t, pr); ok {
			t.Errorf("type %d: still reserved after its holder unregistered, want no reservation", typ)
		}
	}
	// All registrants: the reservation stays with the remaining registrant.
	pr, _ := newPersistentReservations("v", nil)
	mustPROut(t, pr, portA1, prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, pr, portB, prOutRegisterIgnore, 0, 0, 0xb)
	mustPROut(t, pr, portA1, prOutReserve, prWriteExclusiveAR, 0xa, 0)
	mustPROut(t, pr, portA1, prOutRegister, 0, 0xa, 0)
	if key, typ, ok := readReservation(t, pr); !ok || key != 0 || typ != prWriteExclusiveAR {
		t.Errorf("all registrants: got key %#x type %d reserved %v, want key 0 type %d", key, typ, ok, prWriteExclusiveAR)
	}
}

func TestReadFullStatusListsEveryRegistrationWithItsTransportID(t *testing.T) {
	t.Parallel()
	pr, _ := newPersistentReservations("v", nil)
	mustPROut(t, pr, portA1, prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, pr, portB, prOutRegisterIgnore, 0, 0, 0xb)
	mustPROut(t, pr, portB, prOutReserve, prExclusiveAccess, 0xb, 0)
	r := pr.in([]byte{opPRIn, prInReadFullStatus, 0, 0, 0, 0, 0, 0xff, 0xff, 0})
	if r.status != statusGood {
		t.Fatalf("READ FULL STATUS: got status %#x, want GOOD", r.status)
	}
	if got := int(binary.BigEndian.Uint32(r.in[4:])); got != len(r.in)-8 {
		t.Fatalf("ADDITIONAL LENGTH: got %d, want %d", got, len(r.in)-8)
	}
	type desc struct {
		key    uint64
		holder bool
		port   string
	}
	var got []desc
	for b := r.in[8:]; len(b) >= 24; {
		n := int(binary.BigEndian.Uint32(b[20:]))
		tid := b[24 : 24+n]
		if tid[0] != 0x45 || n%4 != 0 {
			t.Errorf("TransportID: got format/protocol %#x length %d, want 0x45 and a multiple of 4", tid[0], n)
		}
		name := tid[4:]
		if i := slices.Index(name, 0); i >= 0 {
			name = name[:i]
		}
		got = append(got, desc{binary.BigEndian.Uint64(b), b[12]&0x01 != 0, string(name)})
		b = b[24+n:]
	}
	want := []desc{{0xa, false, portA1}, {0xb, true, portB}}
	if !slices.Equal(got, want) {
		t.Errorf("descriptors: got %+v, want %+v", got, want)
	}
}

// openReservationStore opens a volume store with one volume, "v".
func openReservationStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Get("v"); err != nil {
		if _, err := st.Create(context.Background(), "v", 1, store.Access{}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestReservationsSurviveARestartThroughTheStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openReservationStore(t, dir)
	pr, err := newPersistentReservations("v", st)
	if err != nil {
		t.Fatal(err)
	}
	if r := pr.out(portA1, prOutCDB(prOutRegisterIgnore, 0), prParam(0, 0xa, true)); r.status != statusGood {
		t.Fatalf("REGISTER with APTPL: got status %#x sense %x, want GOOD", r.status, r.sense)
	}
	// APTPL is the last REGISTER's (SPC-4 5.13.5.3): B's sets it again.
	if r := pr.out(portB, prOutCDB(prOutRegisterIgnore, 0), prParam(0, 0xb, true)); r.status != statusGood {
		t.Fatalf("REGISTER with APTPL: got status %#x sense %x, want GOOD", r.status, r.sense)
	}
	mustPROut(t, pr, portA1, prOutReserve, prWriteExclusive, 0xa, 0)
	gen, _ := readKeys(t, pr)
	st.Close()

	st = openReservationStore(t, dir)
	again, err := newPersistentReservations("v", st)
	if err != nil {
		t.Fatal(err)
	}
	gotGen, keys := readKeys(t, again)
	if gotGen != gen || !slices.Equal(keys, []uint64{0xa, 0xb}) {
		t.Errorf("after reopening: got generation %d keys %x, want %d [a b]", gotGen, keys, gen)
	}
	if key, typ, ok := readReservation(t, again); !ok || key != 0xa || typ != prWriteExclusive {
		t.Errorf("after reopening: got key %#x type %d reserved %v, want 0xa %d", key, typ, ok, prWriteExclusive)
	}
	if !again.conflicts(portB, opWrite10) {
		t.Errorf("after reopening: another initiator's write does not conflict, want a conflict")
	}
	caps := again.in([]byte{opPRIn, prInReportCaps, 0, 0, 0, 0, 0, 0, 8, 0})
	if caps.in[2]&0x01 == 0 || caps.in[3]&0x01 == 0 {
		t.Errorf("REPORT CAPABILITIES: got PTPL_C %v PTPL_A %v, want both", caps.in[2]&0x01 != 0, caps.in[3]&0x01 != 0)
	}
}

// failingStore reads nothing back and refuses every change.
type failingStore struct{}

func (failingStore) Reservations(string) (store.Reservations, error) {
	return store.Reservations{}, nil
}
func (failingStore) PutReservations(string, store.Reservations) error {
	return errors.New("disk full")
}

func TestAReservationTheStoreRefusesIsNotMade(t *testing.T) {
	t.Parallel()
	pr, err := newPersistentReservations("v", failingStore{})
	if err != nil {
		t.Fatal(err)
	}
	r := pr.out(portA1, prOutCDB(prOutRegisterIgnore, 0), prParam(0, 0xa, false))
	if r.status != statusCheckCondition {
		t.Fatalf("REGISTER with a failing store: got status %#x, want CHECK CONDITION", r.status)
	}
	if _, keys := readKeys(t, pr); len(keys) != 0 {
		t.Errorf("keys after the failed REGISTER: got %x, want none", keys)
	}
}

func TestRemoveInitiatorDropsAllItsRegistrations(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openReservationStore(t, dir)
	pr, err := newPersistentReservations("v", st)
	if err != nil {
		t.Fatal(err)
	}
	mustPROut(t, pr, portA1, prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, pr, portA2, prOutRegisterIgnore, 0, 0, 0xa2)
	mustPROut(t, pr, portB, prOutRegisterIgnore, 0, 0, 0xb)
	mustPROut(t, pr, portA2, prOutReserve, prExclusiveAccess, 0xa2, 0)
	gen, _ := readKeys(t, pr)

	removed, err := pr.removeInitiator(testInitiator)
	if err != nil || !removed {
		t.Fatalf("removeInitiator: got %v, %v, want true, nil", removed, err)
	}
	gotGen, keys := readKeys(t, pr)
	if !slices.Equal(keys, []uint64{0xb}) || gotGen != gen+1 {
		t.Errorf("after removing %s: got generation %d keys %x, want %d [b]", testInitiator, gotGen, keys, gen+1)
	}
	if _, _, ok := readReservation(t, pr); ok {
		t.Errorf("the removed initiator's reservation is still there, want none")
	}
	if removed, err := pr.removeInitiator(testInitiator); removed || err != nil {
		t.Errorf("removing again: got %v, %v, want false, nil", removed, err)
	}
	kept, err := st.Reservations("v")
	if err != nil || len(kept.Registrations) != 1 || kept.Registrations[0].Port != portB || kept.Type != 0 {
		t.Errorf("in the store: got %+v, %v, want only %s's registration and no reservation", kept, err, portB)
	}
}

func TestEngineRemoveInitiatorCoversEveryVolume(t *testing.T) {
	t.Parallel()
	e, _ := startEngine(t)
	for _, name := range []string{"one", "two", "three"} {
		exportVolume(t, e, name, 1<<20, testInitiator)
	}
	e.mu.Lock()
	one, two := e.volumes["one"].unit.pr, e.volumes["two"].unit.pr
	e.mu.Unlock()
	mustPROut(t, one, portA1, prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, two, portA2, prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, two, portB, prOutRegisterIgnore, 0, 0, 0xb)
	changed, err := e.RemoveInitiator(testInitiator)
	if err != nil || !slices.Equal(changed, []string{"one", "two"}) {
		t.Errorf("RemoveInitiator: got %v, %v, want [one two], nil", changed, err)
	}
	if _, keys := readKeys(t, two); !slices.Equal(keys, []uint64{0xb}) {
		t.Errorf("keys of volume two: got %x, want [b]", keys)
	}
}

// TestEngineReadsReservationsBackAtAdd restarts an engine on the same store:
// the volume exported again has the registrations and the reservation its
// initiators made before, and enforces them.
func TestEngineReadsReservationsBackAtAdd(t *testing.T) {
	t.Parallel()
	st := openReservationStore(t, t.TempDir())
	v, err := st.Get("v")
	if err != nil {
		t.Fatal(err)
	}
	ex := Export{Name: "v", IQN: "iqn.2026-11.io.drover:v", Path: v.Path, Initiators: []string{testInitiator, testInitiator2}}
	start := func() *Engine {
		e, err := New(Config{Listen: "127.0.0.1:0", Logger: testLogger(t), Reservations: st})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Add(ex); err != nil {
			t.Fatal(err)
		}
		return e
	}
	unitPR := func(e *Engine) *persistentReservations {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.volumes["v"].unit.pr
	}
	e := start()
	mustPROut(t, unitPR(e), portA1, prOutRegisterIgnore, 0, 0, 0xa)
	mustPROut(t, unitPR(e), portA1, prOutReserve, prExclusiveAccess, 0xa, 0)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = start()
	defer e.Close()
	if key, typ, ok := readReservation(t, unitPR(e)); !ok || key != 0xa || typ != prExclusiveAccess {
		t.Errorf("after the restart: got key %#x type %d reserved %v, want 0xa %d", key, typ, ok, prExclusiveAccess)
	}
	if !unitPR(e).conflicts(portB, opRead10) {
		t.Errorf("after the restart: another initiator's read does not conflict, want a conflict")
	}
}
