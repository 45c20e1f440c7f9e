package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Freeze makes volumes quiet for the cut of snapshots (the API holds the
// writes to them in the iSCSI engine). It is called once the snapshots are
// recorded and their files created, just before the first volume is
// cloned; thaw is called on every path (error, panic) right after the last
// one is, before anything is flushed. The cut stops when the returned
// context ends (the freeze ran out of time), and an error from thaw (the
// freeze did not last) discards what was cut.
type Freeze func(ctx context.Context) (cut context.Context, thaw func() error, err error)

// CreateSnapshot takes a point-in-time copy of a volume: a reflink where the
// filesystem supports it (instant), a sparse copy otherwise. freeze, when
// set, keeps the volume quiet for the cut, as for a snapshot set of one
// volume; without it, a copy is point-in-time only if nobody writes to the
// volume meanwhile.
func (s *Store) CreateSnapshot(ctx context.Context, volume string, freeze Freeze) (Snapshot, error) {
	if err := CheckName(volume); err != nil {
		return Snapshot{}, err
	}
	unlock, err := s.locks.lock(ctx, "volume/"+volume)
	if err != nil {
		return Snapshot{}, err
	}
	defer unlock()
	var rec snapshotRecord
	var src string
	err = s.update(func(vb, sb *bolt.Bucket) error {
		v, ok, err := getVolume(vb, volume)
		if err != nil {
			return err
		}
		if !ok || v.State != stateReady {
			return errorf(ErrNotFound, "volume %q does not exist", volume)
		}
		seq, err := sb.NextSequence()
		if err != nil {
			return err
		}
		src = s.abs(v.File)
		id := snapshotID(volume, seq)
		rec = snapshotRecord{
			ID:        id,
			Seq:       seq,
			Volume:    volume,
			SizeMiB:   v.SizeMiB,
			State:     stateCreating,
			File:      filepath.Join(snapshotsDir, id+".raw"),
			CreatedAt: time.Now().UTC(),
		}
		return putSnapshot(sb, rec)
	})
	if err != nil {
		return Snapshot{}, err
	}
	s.step("snapshot/recorded")
	// From here on, a failure removes what was made; a crash leaves it to
	// Open, which drops a snapshot that is not ready.
	fail := func(err error) (Snapshot, error) {
		s.dropSnapshot(rec)
		return Snapshot{}, err
	}

	in, err := os.Open(src)
	if err != nil {
		return fail(fmt.Errorf("snapshot volume %q: %w", volume, err))
	}
	defer func() {
		if in != nil {
			in.Close()
		}
	}()
	dst, err := s.createFile(rec.File)
	if err != nil {
		return fail(fmt.Errorf("snapshot volume %q: %w", volume, err))
	}
	defer func() {
		if dst != nil {
			dst.Close() // after finishFile, a no-op
		}
	}()
	methods, jobs, _, err := s.cut(ctx, "snapshot", freeze, []snapshotRecord{rec}, []*os.File{dst}, []*os.File{in})
	if err != nil {
		return fail(err)
	}
	rec.Method = methods[0]
	if jobs != nil {
		// Copy-before-write: the files are the copier's from here.
		recs := []snapshotRecord{rec}
		if err := s.copyLater("snapshot", nil, recs, jobs, []*os.File{dst}, []*os.File{in}); err != nil {
			s.copies.end(jobs[0])
			return fail(err)
		}
		in, dst = nil, nil
		return s.snapshot(recs[0]), nil
	}
	if err := s.finishFile(dst, rec.SizeMiB*MiB); err != nil {
		return fail(fmt.Errorf("snapshot volume %q: %w", volume, err))
	}
	if err := syncDir(s.abs(snapshotsDir)); err != nil {
		return fail(fmt.Errorf("snapshot volume %q: %w", volume, err))
	}
	s.step("snapshot/file")

	rec.State = stateReady
	if err := s.update(func(_, sb *bolt.Bucket) error { return putSnapshot(sb, rec) }); err != nil {
		return fail(fmt.Errorf("snapshot volume %q: %w", volume, err))
	}
	return s.snapshot(rec), nil
}

func (s *Store) dropSnapshot(rec snapshotRecord) {
	if err := os.Remove(s.abs(rec.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove file of failed snapshot; it goes at next start", "snapshot", rec.ID, "err", err)
	}
	if err := s.update(func(_, sb *bolt.Bucket) error { return sb.Delete([]byte(rec.ID)) }); err != nil {
		s.log.Warn("drop record of failed snapshot; it goes at next start", "snapshot", rec.ID, "err", err)
	}
}

// GetSnapshot returns a snapshot or an ErrNotFound error.
func (s *Store) GetSnapshot(id string) (Snapshot, error) {
	if err := CheckSnapshotID(id); err != nil {
		return Snapshot{}, err
	}
	r, err := s.visibleSnapshot(id)
	if err != nil {
		return Snapshot{}, err
	}
	return s.snapshot(r), nil
}

// ListSnapshots returns the snapshots taken of the named volume, oldest
// first, including those that outlived it. An empty volume name lists all.
func (s *Store) ListSnapshots(volume string) ([]Snapshot, error) {
	if volume != "" {
		if err := CheckName(volume); err != nil {
			return nil, err
		}
	}
	var recs []snapshotRecord
	err := s.view(func(_, sb *bolt.Bucket) error {
		return sb.ForEach(func(k, _ []byte) error {
			r, _, err := getSnapshot(sb, string(k))
			if err != nil {
				return err
			}
			if (r.State == stateReady || r.State == stateCopying) && (volume == "" || r.Volume == volume) {
				recs = append(recs, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Seq < recs[j].Seq })
	out := make([]Snapshot, 0, len(recs))
	for _, r := range recs {
		out = append(out, s.snapshot(r))
	}
	return out, nil
}

// DeleteSnapshot removes a snapshot: record first, file second.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	if err := CheckSnapshotID(id); err != nil {
		return err
	}
	if r, err := s.visibleSnapshot(id); err == nil && r.State == stateCopying && r.Set == "" {
		// Stop the copy: the copier drops the snapshot.
		if err := s.copies.stopCopies(ctx, []string{id}); err != nil {
			return fmt.Errorf("delete snapshot %s: %w", id, err)
		}
		if _, err := s.visibleSnapshot(id); errors.Is(err, ErrNotFound) {
			return nil
		}
	}
	unlock, err := s.locks.lock(ctx, "snapshot/"+id)
	if err != nil {
		return err
	}
	defer unlock()
	var rec snapshotRecord
	err = s.update(func(_, sb *bolt.Bucket) error {
		var ok bool
		var err error
		rec, ok, err = getSnapshot(sb, id)
		if err != nil {
			return err
		}
		if !ok || (rec.State != stateReady && rec.State != stateCopying) {
			return errorf(ErrNotFound, "snapshot %q does not exist", id)
		}
		if rec.State == stateCopying && rec.Set == "" {
			return s.stillCopying(rec) // cut after the check above
		}
		if rec.Set != "" {
			return errorf(ErrConflict, "snapshot %q belongs to snapshot set %s: delete the set (DELETE /v1/snapshot-sets/%s), which deletes all its snapshots together", id, rec.Set, rec.Set)
		}
		return sb.Delete([]byte(id))
	})
	if err != nil {
		return err
	}
	s.step("snapshot-delete/unrecorded")
	if err := os.Remove(s.abs(rec.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove file of deleted snapshot; it goes at next start", "snapshot", id, "err", err)
	}
	return nil
}

// OpenSnapshot opens a snapshot's data for reading; the caller closes it.
// The open file stays readable even if the snapshot is deleted meanwhile.
func (s *Store) OpenSnapshot(id string) (*os.File, Snapshot, error) {
	if err := CheckSnapshotID(id); err != nil {
		return nil, Snapshot{}, err
	}
	r, err := s.readySnapshot(id) // a snapshot still copying is refused
	if err != nil {
		return nil, Snapshot{}, err
	}
	snap := s.snapshot(r)
	f, err := os.Open(snap.Path)
	if err != nil {
		return nil, Snapshot{}, fmt.Errorf("open snapshot %s: %w", id, err)
	}
	return f, snap, nil
}

// Extent is a byte range of a file.
type Extent struct {
	Offset int64
	Length int64
}

// SnapshotExtents returns a snapshot's size in bytes and the extents of it
// that hold data, sorted and merged; the rest reads as zeros. On a
// filesystem that cannot tell data from holes, the whole snapshot is one
// extent.
func (s *Store) SnapshotExtents(id string) (int64, []Extent, error) {
	f, snap, err := s.OpenSnapshot(id)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	size := snap.SizeMiB * MiB
	out := []Extent{}
	err = forEachDataExtent(f, size, func(from, to int64) error {
		if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == from {
			out[n-1].Length += to - from
			return nil
		}
		out = append(out, Extent{Offset: from, Length: to - from})
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("extents of snapshot %s: %w", id, err)
	}
	return size, out, nil
}
