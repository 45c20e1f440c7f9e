package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SnapshotSet is snapshots of several volumes cut at one instant, with
// labels and attachments (for a backup of a VM: all its disks and its domain
// definition). Its snapshots are deleted with it and not on their own.
type SnapshotSet struct {
	ID          string
	CreatedAt   time.Time
	Labels      map[string]string
	Attachments []string   // names, sorted
	Snapshots   []Snapshot // in the order of the request's volumes
	// Method is MethodCopy if any snapshot was copied, else MethodReflink.
	Method string
	// Hold is how long writes to the volumes were held for the cut (see
	// SetRequest.Freeze); 0 without Freeze.
	Hold time.Duration
	// Copying is true while copy-before-write copies fill some of its
	// snapshots: CopiedBytes of TotalBytes (all its snapshots) are in
	// (equal once done). Its snapshots can be read, cloned from or deleted
	// once they are done.
	Copying                 bool
	CopiedBytes, TotalBytes int64
}

// SetRequest describes a new snapshot set.
type SetRequest struct {
	Volumes     []string
	Labels      map[string]string
	Attachments map[string][]byte
	// Freeze, when set, makes the volumes quiet for the cut; an error from
	// its thaw discards the set.
	Freeze Freeze
}

type setRecord struct {
	ID          string            `json:"id"`
	Seq         uint64            `json:"seq"`
	State       state             `json:"state"`
	CreatedAt   time.Time         `json:"created_at"`
	Labels      map[string]string `json:"labels,omitempty"`
	Attachments []string          `json:"attachments,omitempty"`
	Snapshots   []string          `json:"snapshots"` // IDs, in the order of the volumes
	HoldNS      int64             `json:"hold_ns,omitempty"`
}

// CreateSnapshotSet snapshots the volumes of req together. The set is
// recorded as creating (with its snapshots and attachments) in one
// transaction, the snapshot files are cut under req.Freeze and made
// durable, and the set and its snapshots turn ready in one more: a crash
// at any point leaves the whole set or nothing.
func (s *Store) CreateSnapshotSet(ctx context.Context, req SetRequest) (SnapshotSet, error) {
	if err := CheckSetVolumes(req.Volumes); err != nil {
		return SnapshotSet{}, err
	}
	if err := CheckLabels(req.Labels); err != nil {
		return SnapshotSet{}, err
	}
	if err := CheckAttachments(req.Attachments); err != nil {
		return SnapshotSet{}, err
	}
	keys := make([]string, len(req.Volumes))
	for i, v := range req.Volumes {
		keys[i] = "volume/" + v
	}
	unlock, err := s.locks.lock(ctx, keys...)
	if err != nil {
		return SnapshotSet{}, err
	}
	defer unlock()

	set, snaps, srcs, err := s.recordSet(req)
	if err != nil {
		return SnapshotSet{}, err
	}
	s.step("set/recorded")
	// From here on, a failure removes what was made; a crash leaves it to
	// Open, which drops a set that is not ready.
	fail := func(err error) (SnapshotSet, error) {
		s.dropSet(set, snaps)
		return SnapshotSet{}, err
	}

	dsts := make([]*os.File, len(snaps))
	defer func() {
		for _, f := range dsts {
			if f != nil {
				f.Close()
			}
		}
	}()
	ins := make([]*os.File, len(snaps))
	defer func() {
		for _, f := range ins {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, rec := range snaps {
		if ins[i], err = os.Open(srcs[i]); err != nil {
			return fail(fmt.Errorf("snapshot volume %q: %w", rec.Volume, err))
		}
		if dsts[i], err = s.createFile(rec.File); err != nil {
			return fail(fmt.Errorf("snapshot volume %q: %w", rec.Volume, err))
		}
	}

	methods, jobs, hold, err := s.cut(ctx, "set", req.Freeze, snaps, dsts, ins)
	if err != nil {
		return fail(err)
	}
	s.step("set/cut")
	set.HoldNS = int64(hold)
	for i := range snaps {
		snaps[i].Method = methods[i]
	}
	if jobs != nil {
		// Copy-before-write: the files are the copier's from here.
		fs, is := slices.Clone(dsts), slices.Clone(ins)
		clear(dsts)
		clear(ins)
		if err := s.copyLater("set", &set, snaps, jobs, fs, is); err != nil {
			for _, j := range jobs {
				if j != nil {
					s.copies.end(j)
				}
			}
			for i := range fs {
				fs[i].Close()
				is[i].Close()
			}
			return fail(err)
		}
		return s.snapshotSet(set, snaps), nil
	}

	for i, rec := range snaps {
		f := dsts[i]
		dsts[i] = nil
		if err := s.finishFile(f, rec.SizeMiB*MiB); err != nil {
			return fail(fmt.Errorf("snapshot volume %q: %w", rec.Volume, err))
		}
	}
	if err := syncDir(s.abs(snapshotsDir)); err != nil {
		return fail(err)
	}
	s.step("set/files")

	set.State = stateReady
	for i := range snaps {
		snaps[i].State = stateReady
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketSnapshots)
		for _, r := range snaps {
			if err := putSnapshot(sb, r); err != nil {
				return err
			}
		}
		return putSet(tx.Bucket(bucketSets), set)
	})
	if err != nil {
		return fail(fmt.Errorf("snapshot set: %w", err))
	}
	s.step("set/ready")
	return s.snapshotSet(set, snaps), nil
}

// recordSet checks that every volume exists and records the set, its
// snapshots and its attachments as creating, in one transaction. It returns
// the records and the volumes' backing files.
func (s *Store) recordSet(req SetRequest) (setRecord, []snapshotRecord, []string, error) {
	var set setRecord
	snaps := make([]snapshotRecord, 0, len(req.Volumes))
	srcs := make([]string, 0, len(req.Volumes))
	err := s.db.Update(func(tx *bolt.Tx) error {
		vb, sb, xb, ab := tx.Bucket(bucketVolumes), tx.Bucket(bucketSnapshots), tx.Bucket(bucketSets), tx.Bucket(bucketAttachments)
		vols := make([]volumeRecord, len(req.Volumes))
		for i, name := range req.Volumes {
			v, ok, err := getVolume(vb, name)
			if err != nil {
				return err
			}
			if !ok || v.State != stateReady {
				return errorf(ErrNotFound, "volumes[%d]: volume %q does not exist", i, name)
			}
			vols[i] = v
		}
		seq, err := xb.NextSequence()
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		set = setRecord{ID: setID(seq), Seq: seq, State: stateCreating, CreatedAt: now, Labels: cloneLabels(req.Labels), Attachments: sortedKeys(req.Attachments)}
		for _, v := range vols {
			seq, err := sb.NextSequence()
			if err != nil {
				return err
			}
			id := snapshotID(v.Name, seq)
			rec := snapshotRecord{
				ID:        id,
				Seq:       seq,
				Volume:    v.Name,
				SizeMiB:   v.SizeMiB,
				State:     stateCreating,
				File:      filepath.Join(snapshotsDir, id+".raw"),
				CreatedAt: now,
				Set:       set.ID,
			}
			if err := putSnapshot(sb, rec); err != nil {
				return err
			}
			snaps = append(snaps, rec)
			srcs = append(srcs, s.abs(v.File))
			set.Snapshots = append(set.Snapshots, id)
		}
		for name, content := range req.Attachments {
			if err := ab.Put(attachmentKey(set.ID, name), bytes.Clone(content)); err != nil {
				return err
			}
		}
		return putSet(xb, set)
	})
	return set, snaps, srcs, err
}

// cut clones every volume into its snapshot file under freeze, for a
// snapshot set or a single snapshot (op names the crash step), or starts
// its copy-before-write copy (jobs, nil if none was started; jobs[i] is nil
// for a volume cut otherwise). hold is the time from the freeze to the thaw.
func (s *Store) cut(ctx context.Context, op string, freeze Freeze, snaps []snapshotRecord, dsts, srcs []*os.File) (methods []string, jobs []*copyJob, hold time.Duration, err error) {
	started := make([]*copyJob, len(snaps))
	defer func() { // after the thaw: a cut that failed or did not last copies nothing
		if err != nil {
			for _, j := range started {
				if j != nil {
					s.copies.end(j)
				}
			}
			jobs = nil
		}
	}()
	cutCtx := ctx
	if freeze != nil {
		start := time.Now()
		c, thaw, ferr := freeze(ctx)
		if ferr != nil {
			return nil, nil, 0, ferr
		}
		cutCtx = c
		defer func() {
			terr := thaw()
			hold = time.Since(start)
			if terr != nil {
				err = terr // the reason the cut was stopped, if it was
			}
		}()
		s.step(op + "/frozen")
	}
	methods = make([]string, len(snaps))
	for i := range snaps {
		if err := cutCtx.Err(); err != nil {
			return nil, nil, 0, fmt.Errorf("snapshot volume %q: %w", snaps[i].Volume, err)
		}
		m, j, err := s.cutInto(cutCtx, snaps[i], dsts[i], srcs[i])
		if err != nil {
			return nil, nil, 0, fmt.Errorf("snapshot volume %q: %w", snaps[i].Volume, err)
		}
		methods[i] = m
		if j != nil {
			started[i] = j
			jobs = started
		}
	}
	return methods, jobs, 0, nil
}

// finishFile sizes a snapshot file, makes it durable and closes it.
func (s *Store) finishFile(f *os.File, size int64) error {
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return mapNoSpace(err)
	}
	if err := f.Sync(); err != nil {
		return mapNoSpace(err)
	}
	return f.Close()
}

// dropSet undoes a set creation that failed (not crashed) midway.
func (s *Store) dropSet(set setRecord, snaps []snapshotRecord) {
	for _, r := range snaps {
		if err := os.Remove(s.abs(r.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove file of failed snapshot set; it goes at next start", "set", set.ID, "snapshot", r.ID, "err", err)
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return deleteSet(tx, set) }); err != nil {
		s.log.Warn("drop record of failed snapshot set; it goes at next start", "set", set.ID, "err", err)
	}
}

// deleteSet removes a set's record, attachments and snapshot records.
func deleteSet(tx *bolt.Tx, set setRecord) error {
	sb, xb, ab := tx.Bucket(bucketSnapshots), tx.Bucket(bucketSets), tx.Bucket(bucketAttachments)
	for _, id := range set.Snapshots {
		if err := sb.Delete([]byte(id)); err != nil {
			return err
		}
	}
	for _, name := range set.Attachments {
		if err := ab.Delete(attachmentKey(set.ID, name)); err != nil {
			return err
		}
	}
	return xb.Delete([]byte(set.ID))
}

// recoverSets creates the sets' buckets and drops the sets a crash left
// unfinished, with their snapshot records and attachments (their files go
// with the other files no record claims).
func (s *Store) recoverSets(tx *bolt.Tx) error {
	xb, err := tx.CreateBucketIfNotExists(bucketSets)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketAttachments); err != nil {
		return err
	}
	var drop []setRecord
	err = xb.ForEach(func(k, v []byte) error {
		var r setRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("snapshot set record %q: %w", k, err)
		}
		if r.State == stateCopying {
			s.log.Warn("dropping snapshot set whose copy was cut short by a crash or a stop", "set", r.ID)
		}
		if r.State != stateReady {
			drop = append(drop, r)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range drop {
		s.log.Warn("rolling back snapshot set interrupted by a crash", "set", r.ID)
		if err := deleteSet(tx, r); err != nil {
			return err
		}
	}
	return nil
}

func attachmentKey(setID, name string) []byte { return []byte(setID + "/" + name) }

func putSet(xb *bolt.Bucket, r setRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return xb.Put([]byte(r.ID), b)
}

func getSet(xb *bolt.Bucket, id string) (setRecord, bool, error) {
	var r setRecord
	v := xb.Get([]byte(id))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("snapshot set record %q: %w", id, err)
	}
	return r, true, nil
}

func cloneLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// snapshotSet builds the set as callers see it from its records.
func (s *Store) snapshotSet(r setRecord, snaps []snapshotRecord) SnapshotSet {
	out := SnapshotSet{
		ID:          r.ID,
		CreatedAt:   r.CreatedAt,
		Labels:      cloneLabels(r.Labels),
		Attachments: append([]string{}, r.Attachments...),
		Method:      MethodReflink,
		Hold:        time.Duration(r.HoldNS),
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	for _, sr := range snaps {
		sn := s.snapshot(sr)
		out.Snapshots = append(out.Snapshots, sn)
		if sr.Method != MethodReflink {
			out.Method = MethodCopy
		}
		out.TotalBytes += sn.TotalBytes
		out.CopiedBytes += sn.CopiedBytes
		out.Copying = out.Copying || sn.Copying
	}
	return out
}

// readySet reads a ready (or copying) set and its snapshots in one
// transaction.
func (s *Store) readySet(tx *bolt.Tx, id string) (setRecord, []snapshotRecord, error) {
	r, ok, err := getSet(tx.Bucket(bucketSets), id)
	if err != nil {
		return r, nil, err
	}
	if !ok || (r.State != stateReady && r.State != stateCopying) {
		return r, nil, errorf(ErrNotFound, "snapshot set %q does not exist", id)
	}
	snaps := make([]snapshotRecord, 0, len(r.Snapshots))
	for _, sid := range r.Snapshots {
		sr, ok, err := getSnapshot(tx.Bucket(bucketSnapshots), sid)
		if err != nil {
			return r, nil, err
		}
		if !ok {
			return r, nil, fmt.Errorf("snapshot set %s: snapshot %s has no record: restore the data directory from a backup, or delete the set", id, sid)
		}
		snaps = append(snaps, sr)
	}
	return r, snaps, nil
}

// GetSnapshotSet returns a snapshot set or an ErrNotFound error.
func (s *Store) GetSnapshotSet(id string) (SnapshotSet, error) {
	if err := CheckSetID(id); err != nil {
		return SnapshotSet{}, err
	}
	var out SnapshotSet
	err := s.db.View(func(tx *bolt.Tx) error {
		r, snaps, err := s.readySet(tx, id)
		if err != nil {
			return err
		}
		out = s.snapshotSet(r, snaps)
		return nil
	})
	return out, err
}

// ListSnapshotSets returns the snapshot sets that carry every label of
// match (all sets when match is empty), newest first.
func (s *Store) ListSnapshotSets(match map[string]string) ([]SnapshotSet, error) {
	for _, k := range sortedKeys(match) {
		if err := CheckLabelKey(k); err != nil {
			return nil, errorf(ErrInvalid, "label filter: %v", err)
		}
	}
	var out []SnapshotSet
	var seqs []uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSets).ForEach(func(k, _ []byte) error {
			r, snaps, err := s.readySet(tx, string(k))
			if errors.Is(err, ErrNotFound) {
				return nil // not ready
			}
			if err != nil {
				return err
			}
			for mk, mv := range match {
				if v, ok := r.Labels[mk]; !ok || v != mv {
					return nil
				}
			}
			out = append(out, s.snapshotSet(r, snaps))
			seqs = append(seqs, r.Seq)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return seqs[idx[a]] > seqs[idx[b]] })
	sorted := make([]SnapshotSet, len(out))
	for i, j := range idx {
		sorted[i] = out[j]
	}
	return sorted, nil
}

// SnapshotSetAttachment returns the content of one attachment of a set.
func (s *Store) SnapshotSetAttachment(id, name string) ([]byte, error) {
	if err := CheckSetID(id); err != nil {
		return nil, err
	}
	if err := CheckAttachmentName(name); err != nil {
		return nil, err
	}
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		r, ok, err := getSet(tx.Bucket(bucketSets), id)
		if err != nil {
			return err
		}
		if !ok || (r.State != stateReady && r.State != stateCopying) {
			return errorf(ErrNotFound, "snapshot set %q does not exist", id)
		}
		v := tx.Bucket(bucketAttachments).Get(attachmentKey(id, name))
		if v == nil {
			return errorf(ErrNotFound, "snapshot set %s has no attachment %q (it has: %v)", id, name, r.Attachments)
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// SetSnapshotSetLabels replaces the labels of a ready set with labels (nil
// or empty removes them all) and returns the set. It holds the set's lock,
// as DeleteSnapshotSet does, so it cannot interleave with a delete; a set
// that is being created or is gone is ErrNotFound.
func (s *Store) SetSnapshotSetLabels(ctx context.Context, id string, labels map[string]string) (SnapshotSet, error) {
	if err := CheckSetID(id); err != nil {
		return SnapshotSet{}, err
	}
	if err := CheckLabels(labels); err != nil {
		return SnapshotSet{}, err
	}
	unlock, err := s.locks.lock(ctx, "set/"+id)
	if err != nil {
		return SnapshotSet{}, err
	}
	defer unlock()
	var out SnapshotSet
	err = s.db.Update(func(tx *bolt.Tx) error {
		r, snaps, err := s.readySet(tx, id)
		if err != nil {
			return err
		}
		r.Labels = cloneLabels(labels)
		if err := putSet(tx.Bucket(bucketSets), r); err != nil {
			return fmt.Errorf("snapshot set %s: labels: %w", id, err)
		}
		out = s.snapshotSet(r, snaps)
		return nil
	})
	if err != nil {
		return SnapshotSet{}, err
	}
	s.step("set-labels/recorded")
	return out, nil
}

// DeleteSnapshotSet removes a set with all its snapshots and attachments:
// every record in one transaction first, the files second, so a crash in
// between leaves orphan files that Open removes.
func (s *Store) DeleteSnapshotSet(ctx context.Context, id string) error {
	if err := CheckSetID(id); err != nil {
		return err
	}
	set, err := s.GetSnapshotSet(id)
	if err != nil {
		return err
	}
	if set.Copying { // stop the copy: the copier drops the set
		ids := make([]string, len(set.Snapshots))
		for i, sn := range set.Snapshots {
			ids[i] = sn.ID
		}
		if err := s.copies.stopCopies(ctx, ids); err != nil {
			return fmt.Errorf("delete snapshot set %s: %w", id, err)
		}
		if set, err = s.GetSnapshotSet(id); errors.Is(err, ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
	}
	// The snapshots' locks keep a clone from one of them from reading a
	// file that goes away under it.
	keys := []string{"set/" + id}
	for _, sn := range set.Snapshots {
		keys = append(keys, "snapshot/"+sn.ID)
	}
	unlock, err := s.locks.lock(ctx, keys...)
	if err != nil {
		return err
	}
	defer unlock()
	var files []string
	err = s.db.Update(func(tx *bolt.Tx) error {
		r, snaps, err := s.readySet(tx, id)
		if err != nil {
			return err
		}
		if r.State == stateCopying { // a copy after the check: retry
			return errorf(ErrConflict, "snapshot set %s is being copied: retry the delete", id)
		}
		for _, sr := range snaps {
			files = append(files, sr.File)
		}
		return deleteSet(tx, r)
	})
	if err != nil {
		return err
	}
	s.step("set-delete/unrecorded")
	for _, f := range files {
		if err := os.Remove(s.abs(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove file of deleted snapshot set; it goes at next start", "set", id, "file", f, "err", err)
		}
	}
	if err := syncDir(s.abs(snapshotsDir)); err != nil {
		s.log.Warn("sync snapshots directory", "err", err)
	}
	return nil
}
