package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

var bucketReservations = []byte("reservations") // key: volume name

// Reservations are a volume's SCSI persistent reservations (SPC-4 5.13) as
// the store keeps them across restarts of drover-target. The iSCSI engine
// owns their meaning (and iscsi.Engine.RemoveInitiator drops an
// initiator's registrations); the store keeps them with the volume, and
// they go when it is deleted.
type Reservations struct {
	Generation uint32 `json:"generation"`
	// APTPL is the initiator's "activate persist through power loss".
	APTPL         bool           `json:"aptpl,omitempty"`
	Registrations []Registration `json:"registrations,omitempty"`
	Holder        string         `json:"holder,omitempty"` // initiator port holding the reservation
	Type          byte           `json:"type,omitempty"`   // reservation type; 0: none
}

// Registration is one I_T nexus's reservation key.
type Registration struct {
	Port string `json:"port"` // initiator port name: initiator name + ",i,0x" + ISID
	Key  uint64 `json:"key"`
}

// Reservations returns the persistent reservations kept for a volume; the
// zero value if there are none.
func (s *Store) Reservations(volume string) (Reservations, error) {
	var r Reservations
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketReservations).Get([]byte(volume))
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("reservations of volume %q: %w", volume, err)
		}
		return nil
	})
	return r, err
}

// PutReservations replaces the persistent reservations of a volume, in one
// transaction that is on disk when it returns (bbolt syncs every commit):
// after a crash the old or the new state is there, never a mix.
func (s *Store) PutReservations(volume string, r Reservations) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		vr, ok, err := getVolume(tx.Bucket(bucketVolumes), volume)
		if err != nil {
			return err
		}
		if !ok || vr.State != stateReady {
			return errorf(ErrNotFound, "volume %q does not exist", volume)
		}
		if err := putReservations(tx.Bucket(bucketReservations), volume, r); err != nil {
			return err
		}
		s.step("reservations/put") // before the commit: the old state stays
		return nil
	})
	if err != nil {
		return fmt.Errorf("keep reservations of volume %s: %w", volume, err)
	}
	s.step("reservations/kept")
	return nil
}

func putReservations(rb *bolt.Bucket, volume string, r Reservations) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return rb.Put([]byte(volume), b)
}

// recoverReservations drops the reservations of volumes that are gone (a
// crash between deleting a volume and its reservations cannot happen, as
// both go in one transaction, but a record of a volume rolled back can),
// and, with Options.VolatileRegistrations, those the initiators did not
// ask to persist through power loss (APTPL).
func (s *Store) recoverReservations(tx *bolt.Tx) error {
	rb, err := tx.CreateBucketIfNotExists(bucketReservations)
	if err != nil {
		return err
	}
	vb := tx.Bucket(bucketVolumes)
	var drop [][]byte
	err = rb.ForEach(func(k, v []byte) error {
		vr, ok, err := getVolume(vb, string(k))
		if err != nil {
			return err
		}
		if !ok || vr.State != stateReady {
			drop = append(drop, k)
			return nil
		}
		var r Reservations
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("reservations of volume %q: %w", k, err)
		}
		if s.volatileRegistrations && !r.APTPL {
			drop = append(drop, k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range drop {
		if err := rb.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
