package store

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

var bucketSchedules = []byte("schedules") // key: schedule ID

// MaxVMLen bounds the VM a schedule names, in bytes (a label value).
const MaxVMLen = MaxLabelValueLen

// Schedule is a backup schedule as the store keeps it: what to cut, when,
// what to keep and where else to send it, and how its latest run went.
// The cron expression is kept as written; the API checks it.
type Schedule struct {
	ID        string
	VM        string
	Volumes   []string
	Cron      string
	Keep      wire.Keep
	Restic    *wire.Restic
	Labels    map[string]string
	DomainXML string
	CreatedAt time.Time
	// UpdatedAt is when it was last replaced (CreatedAt before that).
	UpdatedAt time.Time
	LastRun   *wire.ScheduleRun
}

type scheduleRecord struct {
	ID        string            `json:"id"`
	Seq       uint64            `json:"seq"`
	VM        string            `json:"vm"`
	Volumes   []string          `json:"volumes"`
	Cron      string            `json:"cron"`
	Keep      wire.Keep         `json:"keep"`
	Restic    *wire.Restic      `json:"restic,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	DomainXML string            `json:"domain_xml,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	LastRun   *wire.ScheduleRun `json:"last_run,omitempty"`
}

// CheckScheduleID returns nil if id has the form of a schedule ID:
// "sched-<sequence>", for example "sched-3".
func CheckScheduleID(id string) error {
	seq, ok := strings.CutPrefix(id, "sched-")
	if !ok || !validSeq(seq) {
		return errorf(ErrInvalid, "schedule id %q is malformed: schedule ids look like sched-<number>, for example sched-3", truncate(id))
	}
	return nil
}

// CheckVM returns nil if vm may name the VM of a schedule: 1-256 bytes of
// UTF-8 text without control characters (a drover_vm's id is its UUID).
func CheckVM(vm string) error {
	const rule = "give the VM's id (a drover_vm's id, its domain UUID) in 1-256 bytes of text"
	switch {
	case vm == "":
		return errorf(ErrInvalid, "vm is empty: %s", rule)
	case len(vm) > MaxVMLen:
		return errorf(ErrInvalid, "vm is %d bytes, the limit is %d: %s", len(vm), MaxVMLen, rule)
	case !utf8.ValidString(vm):
		return errorf(ErrInvalid, "vm is not valid UTF-8: %s", rule)
	}
	for i, c := range vm {
		if c < 0x20 || c == 0x7f {
			return errorf(ErrInvalid, "vm has the control character %q at byte %d: %s", c, i+1, rule)
		}
	}
	return nil
}

// CheckSchedule checks what the store can of a schedule: the VM, the
// volumes (as for a snapshot set), the labels (room left for those the
// target adds) and the domain XML (an attachment of 1 MiB at most).
func CheckSchedule(s Schedule) error {
	if err := CheckVM(s.VM); err != nil {
		return err
	}
	if err := CheckSetVolumes(s.Volumes); err != nil {
		return err
	}
	if len(s.Labels) > MaxLabels-4 {
		return errorf(ErrInvalid, "labels has %d entries, the limit is %d (the target adds 4 of its own to each run)", len(s.Labels), MaxLabels-4)
	}
	if err := CheckLabels(s.Labels); err != nil {
		return err
	}
	for _, k := range []string{wire.LabelVMID, wire.LabelSchedule, wire.LabelConsistency, wire.LabelPauseMS} {
		if _, ok := s.Labels[k]; ok {
			return errorf(ErrInvalid, "labels: %q is set by the target on every run: leave it out", k)
		}
	}
	if len(s.DomainXML) > MaxAttachmentBytes {
		return errorf(ErrInvalid, "domain_xml is %d bytes, the limit is %d (1 MiB)", len(s.DomainXML), MaxAttachmentBytes)
	}
	if s.Cron == "" {
		return errorf(ErrInvalid, "schedule is empty: give a 5-field cron expression such as \"30 2 * * *\"")
	}
	return nil
}

// CreateSchedule keeps a new schedule and returns it with its ID and
// creation time. It is on disk when CreateSchedule returns (one bbolt
// transaction).
func (s *Store) CreateSchedule(sch Schedule) (Schedule, error) {
	if err := CheckSchedule(sch); err != nil {
		return Schedule{}, err
	}
	var out scheduleRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedules)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		out = recordOf(sch)
		out.ID, out.Seq = "sched-"+strconv.FormatUint(seq, 10), seq
		out.CreatedAt = time.Now().UTC().Truncate(time.Second)
		out.UpdatedAt = out.CreatedAt
		out.LastRun = nil
		if err := putSchedule(b, out); err != nil {
			return err
		}
		s.step("schedule-create/put") // before the commit: no schedule
		return nil
	})
	if err != nil {
		return Schedule{}, fmt.Errorf("keep schedule: %w", err)
	}
	s.step("schedule-create/kept")
	return scheduleOf(out), nil
}

// ReplaceSchedule replaces what a schedule does with sch (its ID, VM,
// creation time and last run stay) and returns it; ErrNotFound if there is
// no such schedule, ErrInvalid if sch names another VM.
func (s *Store) ReplaceSchedule(id string, sch Schedule) (Schedule, error) {
	if err := CheckScheduleID(id); err != nil {
		return Schedule{}, err
	}
	if err := CheckSchedule(sch); err != nil {
		return Schedule{}, err
	}
	var out scheduleRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedules)
		old, ok, err := getSchedule(b, id)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(ErrNotFound, "schedule %q does not exist", id)
		}
		if old.VM != sch.VM {
			return errorf(ErrInvalid, "vm is %q, but schedule %s backs up %q: a schedule's VM does not change (make a new schedule)", truncate(sch.VM), id, truncate(old.VM))
		}
		out = recordOf(sch)
		out.ID, out.Seq, out.CreatedAt, out.LastRun = old.ID, old.Seq, old.CreatedAt, old.LastRun
		out.UpdatedAt = time.Now().UTC()
		if err := putSchedule(b, out); err != nil {
			return err
		}
		s.step("schedule-replace/put") // before the commit: the old schedule stays
		return nil
	})
	if err != nil {
		return Schedule{}, fmt.Errorf("replace schedule %s: %w", id, err)
	}
	return scheduleOf(out), nil
}

// RecordScheduleRun keeps r as the schedule's last run; ErrNotFound if the
// schedule is gone (deleted while it ran).
func (s *Store) RecordScheduleRun(id string, r wire.ScheduleRun) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedules)
		rec, ok, err := getSchedule(b, id)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(ErrNotFound, "schedule %q does not exist", id)
		}
		r.At = r.At.UTC()
		rec.LastRun = &r
		if err := putSchedule(b, rec); err != nil {
			return err
		}
		s.step("schedule-run/put") // before the commit: the previous run stays the last
		return nil
	})
	if err != nil {
		return fmt.Errorf("record run of schedule %s: %w", id, err)
	}
	return nil
}

// DeleteSchedule forgets a schedule; the snapshot sets its runs made stay.
// ErrNotFound if there is none.
func (s *Store) DeleteSchedule(id string) error {
	if err := CheckScheduleID(id); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSchedules)
		if b.Get([]byte(id)) == nil {
			return errorf(ErrNotFound, "schedule %q does not exist", id)
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		s.step("schedule-delete/deleted") // before the commit: the schedule stays
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete schedule %s: %w", id, err)
	}
	return nil
}

// GetSchedule returns a schedule; ErrNotFound if there is none.
func (s *Store) GetSchedule(id string) (Schedule, error) {
	if err := CheckScheduleID(id); err != nil {
		return Schedule{}, err
	}
	var out Schedule
	err := s.db.View(func(tx *bolt.Tx) error {
		r, ok, err := getSchedule(tx.Bucket(bucketSchedules), id)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(ErrNotFound, "schedule %q does not exist", id)
		}
		out = scheduleOf(r)
		return nil
	})
	return out, err
}

// Schedules lists every schedule in the order they were made.
func (s *Store) Schedules() ([]Schedule, error) {
	var recs []scheduleRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSchedules).ForEach(func(k, v []byte) error {
			r, err := decodeSchedule(k, v)
			if err != nil {
				return err
			}
			recs = append(recs, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(recs, func(a, b scheduleRecord) int { return cmp.Compare(a.Seq, b.Seq) })
	out := make([]Schedule, len(recs))
	for i, r := range recs {
		out[i] = scheduleOf(r)
	}
	return out, nil
}

// recoverSchedules creates the schedules' bucket and checks its records.
// A schedule is one record written in one transaction, so a crash leaves
// it whole or not at all; a record that does not read back is an error.
func (s *Store) recoverSchedules(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(bucketSchedules)
	if err != nil {
		return err
	}
	return b.ForEach(func(k, v []byte) error {
		_, err := decodeSchedule(k, v)
		return err
	})
}

func decodeSchedule(k, v []byte) (scheduleRecord, error) {
	var r scheduleRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("schedule record %q: %w", k, err)
	}
	if r.ID != string(k) {
		return r, fmt.Errorf("schedule record %q names schedule %q", k, r.ID)
	}
	return r, nil
}

func getSchedule(b *bolt.Bucket, id string) (scheduleRecord, bool, error) {
	v := b.Get([]byte(id))
	if v == nil {
		return scheduleRecord{}, false, nil
	}
	r, err := decodeSchedule([]byte(id), v)
	return r, err == nil, err
}

func putSchedule(b *bolt.Bucket, r scheduleRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(r.ID), v)
}

func recordOf(s Schedule) scheduleRecord {
	r := scheduleRecord{
		ID: s.ID, VM: s.VM, Volumes: append([]string(nil), s.Volumes...), Cron: s.Cron, Keep: s.Keep,
		Labels: cloneLabels(s.Labels), DomainXML: s.DomainXML, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, LastRun: s.LastRun,
	}
	if s.Restic != nil {
		c := *s.Restic
		r.Restic = &c
	}
	return r
}

func scheduleOf(r scheduleRecord) Schedule {
	s := Schedule{
		ID: r.ID, VM: r.VM, Volumes: append([]string(nil), r.Volumes...), Cron: r.Cron, Keep: r.Keep,
		Labels: cloneLabels(r.Labels), DomainXML: r.DomainXML, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
	if r.Restic != nil {
		c := *r.Restic
		s.Restic = &c
	}
	if r.LastRun != nil {
		l := *r.LastRun
		s.LastRun = &l
	}
	return s
}
