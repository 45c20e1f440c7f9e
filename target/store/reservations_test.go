package store

import (
	"errors"
	"reflect"
	"testing"
)

func TestReservationsAreKeptWithTheirVolume(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestStore(t, dir, Options{})
	mustCreate(t, s, "web", 1)
	mustCreate(t, s, "db", 1)
	web := Reservations{Generation: 4, Registrations: []Registration{{Port: "iqn.2026-11.io.drover.test:a,i,0x1", Key: 0xa}}, Holder: "iqn.2026-11.io.drover.test:a,i,0x1", Type: 1}
	db := Reservations{Generation: 2, APTPL: true, Registrations: []Registration{{Port: "iqn.2026-11.io.drover.test:b,i,0x1", Key: 0xb}}}
	for name, r := range map[string]Reservations{"web": web, "db": db} {
		if err := s.PutReservations(name, r); err != nil {
			t.Fatalf("PutReservations(%s): %v", name, err)
		}
	}
	if err := s.PutReservations("nope", web); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutReservations of a missing volume: got %v, want ErrNotFound", err)
	}
	s.Close()

	s = openTestStore(t, dir, Options{})
	for name, want := range map[string]Reservations{"web": web, "db": db} {
		if got, err := s.Reservations(name); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("after reopening, Reservations(%s): got %+v, %v, want %+v", name, got, err, want)
		}
	}
	s.Close()

	// VolatileRegistrations: a restart forgets what was not asked to persist.
	s = openTestStore(t, dir, Options{VolatileRegistrations: true})
	if got, _ := s.Reservations("web"); !reflect.DeepEqual(got, Reservations{}) {
		t.Errorf("with VolatileRegistrations, web (no APTPL): got %+v, want nothing", got)
	}
	if got, _ := s.Reservations("db"); !reflect.DeepEqual(got, db) {
		t.Errorf("with VolatileRegistrations, db (APTPL): got %+v, want %+v", got, db)
	}

	if err := s.Delete(t.Context(), "db"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "db", 1)
	if got, _ := s.Reservations("db"); !reflect.DeepEqual(got, Reservations{}) {
		t.Errorf("a new volume of a deleted one's name: got reservations %+v, want none", got)
	}
}
