package store

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

var bucketFences = []byte("fences") // key: initiator name

// MaxFenceReasonLen bounds the reason of a fence, in bytes.
const MaxFenceReasonLen = 256

// Fence shuts an initiator out of every volume: the iSCSI engine refuses
// its logins whatever the allow-lists say, and its persistent-reservation
// registrations are dropped. It is keyed on the initiator name, not on an
// I_T nexus, because an initiator that reconnects comes back with a new
// ISID.
type Fence struct {
	Initiator string
	Reason    string
	CreatedAt time.Time // when the initiator was first fenced
}

type fenceRecord struct {
	Initiator string    `json:"initiator"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// CheckInitiator returns nil if name is an iSCSI initiator name (iqn.,
// eui. or naa.; see CheckAccess), or an ErrInvalid error that says what is
// wrong with it.
func CheckInitiator(name string) error {
	if err := checkInitiator(name); err != nil {
		return errorf(ErrInvalid, "initiator %v", err)
	}
	return nil
}

// CheckFenceReason returns nil if reason may be the reason of a fence:
// 1-256 bytes of UTF-8 text without control characters.
func CheckFenceReason(reason string) error {
	const rule = "say in 1-256 bytes of text why the initiator is fenced, e.g. \"host alpha declared failed\""
	switch {
	case reason == "":
		return errorf(ErrInvalid, "reason is empty: %s", rule)
	case len(reason) > MaxFenceReasonLen:
		return errorf(ErrInvalid, "reason is %d bytes, the limit is %d: %s", len(reason), MaxFenceReasonLen, rule)
	case !utf8.ValidString(reason):
		return errorf(ErrInvalid, "reason is not valid UTF-8: %s", rule)
	}
	for i, c := range reason {
		if c < 0x20 || c == 0x7f {
			return errorf(ErrInvalid, "reason has the control character %q at byte %d: %s", c, i+1, rule)
		}
	}
	return nil
}

// PutFence fences an initiator, or gives an existing fence a new reason
// (it keeps its CreatedAt); created reports whether the fence is new. The
// fence is on disk when PutFence returns (one bbolt transaction): after a
// crash it is there or, if PutFence had not returned, maybe not.
func (s *Store) PutFence(initiator, reason string) (f Fence, created bool, err error) {
	if err := CheckInitiator(initiator); err != nil {
		return Fence{}, false, err
	}
	if err := CheckFenceReason(reason); err != nil {
		return Fence{}, false, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFences)
		r, ok, err := getFence(fb, initiator)
		if err != nil {
			return err
		}
		if !ok {
			r = fenceRecord{Initiator: initiator, CreatedAt: time.Now().UTC().Truncate(time.Second)}
		}
		r.Reason = reason
		if err := putFence(fb, r); err != nil {
			return err
		}
		f, created = fenceOf(r), !ok
		s.step("fence/put") // before the commit: the old state stays
		return nil
	})
	if err != nil {
		return Fence{}, false, fmt.Errorf("keep fence of %s: %w", initiator, err)
	}
	s.step("fence/kept")
	return f, created, nil
}

// DeleteFence lifts the fence of an initiator; ErrNotFound if there is
// none.
func (s *Store) DeleteFence(initiator string) error {
	if err := CheckInitiator(initiator); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		fb := tx.Bucket(bucketFences)
		if fb.Get([]byte(initiator)) == nil {
			return errorf(ErrNotFound, "initiator %q is not fenced", initiator)
		}
		if err := fb.Delete([]byte(initiator)); err != nil {
			return err
		}
		s.step("fence-delete/deleted") // before the commit: the fence stays
		return nil
	})
	if err != nil {
		return fmt.Errorf("lift fence of %s: %w", initiator, err)
	}
	s.step("fence-delete/unrecorded")
	return nil
}

// GetFence returns the fence of an initiator; ErrNotFound if there is none.
func (s *Store) GetFence(initiator string) (Fence, error) {
	var f Fence
	err := s.db.View(func(tx *bolt.Tx) error {
		r, ok, err := getFence(tx.Bucket(bucketFences), initiator)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(ErrNotFound, "initiator %q is not fenced", initiator)
		}
		f = fenceOf(r)
		return nil
	})
	return f, err
}

// Fences lists every fence, ordered by initiator name.
func (s *Store) Fences() ([]Fence, error) {
	var out []Fence
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFences).ForEach(func(k, v []byte) error {
			r, err := decodeFence(k, v)
			if err != nil {
				return err
			}
			out = append(out, fenceOf(r))
			return nil
		})
	})
	return out, err
}

// recoverFences creates the fences' bucket and checks its records. A fence
// is one record written in one transaction, so a crash leaves it whole or
// not at all; a record that does not read back is an error, not something
// to drop: forgetting a fence would let a host that must stay out back in.
func (s *Store) recoverFences(tx *bolt.Tx) error {
	fb, err := tx.CreateBucketIfNotExists(bucketFences)
	if err != nil {
		return err
	}
	return fb.ForEach(func(k, v []byte) error {
		_, err := decodeFence(k, v)
		return err
	})
}

func decodeFence(k, v []byte) (fenceRecord, error) {
	var r fenceRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("fence record %q: %w", k, err)
	}
	if r.Initiator != string(k) {
		return r, fmt.Errorf("fence record %q names initiator %q", k, r.Initiator)
	}
	return r, nil
}

func getFence(fb *bolt.Bucket, initiator string) (fenceRecord, bool, error) {
	v := fb.Get([]byte(initiator))
	if v == nil {
		return fenceRecord{}, false, nil
	}
	r, err := decodeFence([]byte(initiator), v)
	return r, err == nil, err
}

func putFence(fb *bolt.Bucket, r fenceRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return fb.Put([]byte(r.Initiator), b)
}

func fenceOf(r fenceRecord) Fence { return Fence(r) }
