package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// Create makes an empty (sparse) volume of sizeMiB.
func (s *Store) Create(ctx context.Context, name string, sizeMiB int64, access Access) (Volume, error) {
	if err := CheckSize(sizeMiB); err != nil {
		return Volume{}, err
	}
	unlock, err := s.locks.lock(ctx, "volume/"+name)
	if err != nil {
		return Volume{}, err
	}
	defer unlock()
	return s.create(ctx, name, sizeMiB, access, nil, nil)
}

// Clone makes a new volume with the content of a volume or snapshot. A
// sizeMiB of 0 keeps the source's size; a larger size grows the clone.
func (s *Store) Clone(ctx context.Context, name string, src Source, sizeMiB int64, access Access) (Volume, error) {
	if (src.Volume == "") == (src.Snapshot == "") {
		return Volume{}, errorf(ErrInvalid, "source: set exactly one of volume and snapshot")
	}
	if sizeMiB != 0 {
		if err := CheckSize(sizeMiB); err != nil {
			return Volume{}, err
		}
	}
	srcKey := "volume/" + src.Volume
	if src.Snapshot != "" {
		if err := CheckSnapshotID(src.Snapshot); err != nil {
			return Volume{}, errorf(ErrInvalid, "source.snapshot: %v", err)
		}
		srcKey = "snapshot/" + src.Snapshot
	} else if err := CheckName(src.Volume); err != nil {
		return Volume{}, errorf(ErrInvalid, "source.volume: %v", err)
	}
	if src.Volume == name {
		return Volume{}, errorf(ErrInvalid, "source.volume is the volume being created (%q): clone from another volume", name)
	}
	unlock, err := s.locks.lock(ctx, "volume/"+name, srcKey)
	if err != nil {
		return Volume{}, err
	}
	defer unlock()

	var srcPath string
	var srcSize int64
	if src.Snapshot != "" {
		r, err := s.readySnapshot(src.Snapshot)
		if errors.Is(err, ErrConflict) {
			return Volume{}, fmt.Errorf("source.snapshot: %w", err) // still copying
		}
		if err != nil {
			return Volume{}, errorf(ErrNotFound, "source.snapshot: snapshot %q does not exist", src.Snapshot)
		}
		srcPath, srcSize = s.abs(r.File), r.SizeMiB
	} else {
		r, err := s.readyVolume(src.Volume)
		if err != nil {
			return Volume{}, errorf(ErrNotFound, "source.volume: volume %q does not exist", src.Volume)
		}
		srcPath, srcSize = s.abs(r.File), r.SizeMiB
	}
	if sizeMiB == 0 {
		sizeMiB = srcSize
	}
	if sizeMiB < srcSize {
		return Volume{}, errorf(ErrInvalid, "size_mib %d is smaller than the source's %d MiB: give at least %d or leave size_mib out", sizeMiB, srcSize, srcSize)
	}
	fill := func(ctx context.Context, dst *os.File) error {
		in, err := os.Open(srcPath)
		if err != nil {
			return fmt.Errorf("open source: %w", err)
		}
		defer in.Close()
		_, err = s.cloneInto(ctx, dst, in)
		return err
	}
	return s.create(ctx, name, sizeMiB, access, &src, fill)
}

// create runs the three steps of a new volume: a "creating" record, the
// file (filled by fill, then sized), and the record turned "ready". The
// caller holds the volume's lock.
func (s *Store) create(ctx context.Context, name string, sizeMiB int64, access Access, src *Source, fill func(context.Context, *os.File) error) (Volume, error) {
	if err := CheckName(name); err != nil {
		return Volume{}, err
	}
	if err := CheckAccess(access); err != nil {
		return Volume{}, err
	}
	if err := s.checkFree(fmt.Sprintf("volume %q", name), sizeMiB*MiB); err != nil {
		return Volume{}, err
	}
	rec := volumeRecord{
		Name:      name,
		SizeMiB:   sizeMiB,
		State:     stateCreating,
		File:      filepath.Join(volumesDir, name+".raw"),
		CreatedAt: time.Now().UTC().Truncate(time.Second),
		Access:    cloneAccess(access),
		Source:    src,
	}
	err := s.update(func(vb, _ *bolt.Bucket) error {
		if _, ok, err := getVolume(vb, name); err != nil || ok {
			if err != nil {
				return err
			}
			return errorf(ErrExists, "volume %q already exists: choose another name or delete it first", name)
		}
		return putVolume(vb, rec)
	})
	if err != nil {
		return Volume{}, err
	}
	s.step("create/recorded")

	if err := s.writeNewFile(ctx, rec.File, sizeMiB*MiB, fill); err != nil {
		s.dropCreating(name, rec.File)
		return Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	s.step("create/file")

	rec.State = stateReady
	if err := s.update(func(vb, _ *bolt.Bucket) error { return putVolume(vb, rec) }); err != nil {
		s.dropCreating(name, rec.File)
		return Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	s.step("create/ready")
	return s.volume(rec), nil
}

// writeNewFile creates rel (replacing a leftover no record claims), lets
// fill write its content, sizes it and makes it durable.
func (s *Store) writeNewFile(ctx context.Context, rel string, size int64, fill func(context.Context, *os.File) error) error {
	f, err := s.createFile(rel)
	if err != nil {
		return err
	}
	defer f.Close()
	if fill != nil {
		if err := fill(ctx, f); err != nil {
			return err
		}
	}
	if size >= 0 {
		if err := f.Truncate(size); err != nil {
			return mapNoSpace(err)
		}
	}
	if err := f.Sync(); err != nil {
		return mapNoSpace(err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.abs(rel)))
}

// createFile creates the file at rel for reading and writing, replacing
// one that a crash left behind.
func (s *Store) createFile(rel string) (*os.File, error) {
	p := s.abs(rel)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
}

// dropCreating undoes a creation that failed (not crashed) midway.
func (s *Store) dropCreating(name, rel string) {
	if err := os.Remove(s.abs(rel)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove file of failed volume; it goes at next start", "volume", name, "err", err)
	}
	err := s.update(func(vb, _ *bolt.Bucket) error {
		r, ok, err := getVolume(vb, name)
		if err != nil || !ok || r.State != stateCreating {
			return err
		}
		return vb.Delete([]byte(name))
	})
	if err != nil {
		s.log.Warn("drop record of failed volume; it goes at next start", "volume", name, "err", err)
	}
}

// Get returns a volume or an ErrNotFound error.
func (s *Store) Get(name string) (Volume, error) {
	if err := CheckName(name); err != nil {
		return Volume{}, err
	}
	r, err := s.readyVolume(name)
	if err != nil {
		return Volume{}, err
	}
	return s.volume(r), nil
}

// List returns every ready volume, ordered by name.
func (s *Store) List() ([]Volume, error) {
	var out []Volume
	err := s.view(func(vb, _ *bolt.Bucket) error {
		return vb.ForEach(func(k, _ []byte) error {
			r, _, err := getVolume(vb, string(k))
			if err != nil {
				return err
			}
			if r.State == stateReady {
				out = append(out, s.volume(r))
			}
			return nil
		})
	})
	return out, err
}

// Update changes a volume's size and/or access settings in one step.
// Fields not marked as set stay as they are.
type Update struct {
	SizeMiB       int64 // 0: unchanged; otherwise the new size, not below the current one
	Initiators    []string
	SetInitiators bool
	CHAP          *wire.CHAP // nil with SetCHAP: CHAP no longer required
	SetCHAP       bool
}

// Update applies u to a volume. Growing extends the backing file first and
// commits the new size second; a crash between the two is undone by Open.
func (s *Store) Update(ctx context.Context, name string, u Update) (Volume, error) {
	if err := CheckName(name); err != nil {
		return Volume{}, err
	}
	if u.SizeMiB != 0 {
		if err := CheckSize(u.SizeMiB); err != nil {
			return Volume{}, err
		}
	}
	unlock, err := s.locks.lock(ctx, "volume/"+name)
	if err != nil {
		return Volume{}, err
	}
	defer unlock()
	rec, err := s.readyVolume(name)
	if err != nil {
		return Volume{}, err
	}
	if u.SetInitiators {
		rec.Access.Initiators = append([]string{}, u.Initiators...)
	}
	if u.SetCHAP {
		rec.Access.CHAP = nil
		if u.CHAP != nil {
			c := *u.CHAP
			rec.Access.CHAP = &c
		}
	}
	if err := CheckAccess(rec.Access); err != nil {
		return Volume{}, err
	}
	oldSize := rec.SizeMiB
	if u.SizeMiB != 0 && u.SizeMiB < oldSize {
		return Volume{}, errorf(ErrShrink, "size_mib %d is smaller than the current %d MiB: volumes can only grow (shrinking would cut off data)", u.SizeMiB, oldSize)
	}
	grow := u.SizeMiB > oldSize
	if grow {
		if err := s.checkFree(fmt.Sprintf("growing volume %q", name), (u.SizeMiB-oldSize)*MiB); err != nil {
			return Volume{}, err
		}
		if err := truncateSync(s.abs(rec.File), u.SizeMiB*MiB); err != nil {
			return Volume{}, fmt.Errorf("grow volume %q: %w", name, mapNoSpace(err))
		}
		rec.SizeMiB = u.SizeMiB
	}
	s.step("grow/file")
	if err := s.update(func(vb, _ *bolt.Bucket) error { return putVolume(vb, rec) }); err != nil {
		if grow {
			if terr := truncateSync(s.abs(rec.File), oldSize*MiB); terr != nil {
				s.log.Warn("undo grow; the next start does it", "volume", name, "err", terr)
			}
		}
		return Volume{}, fmt.Errorf("update volume %q: %w", name, err)
	}
	return s.volume(rec), nil
}

// Grow sets a volume's size; it refuses to shrink.
func (s *Store) Grow(ctx context.Context, name string, sizeMiB int64) (Volume, error) {
	if sizeMiB == 0 {
		return Volume{}, CheckSize(0)
	}
	return s.Update(ctx, name, Update{SizeMiB: sizeMiB})
}

// SetAccess replaces a volume's access settings.
func (s *Store) SetAccess(ctx context.Context, name string, a Access) (Volume, error) {
	return s.Update(ctx, name, Update{Initiators: a.Initiators, SetInitiators: true, CHAP: a.CHAP, SetCHAP: true})
}

// Delete removes a volume: its record first, then its file, so a crash in
// between leaves an orphan file that Open removes. Snapshots of the volume
// stay.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	unlock, err := s.locks.lock(ctx, "volume/"+name)
	if err != nil {
		return err
	}
	defer unlock()
	var rec volumeRecord
	err = s.db.Update(func(tx *bolt.Tx) error {
		vb := tx.Bucket(bucketVolumes)
		var ok bool
		var err error
		rec, ok, err = getVolume(vb, name)
		if err != nil {
			return err
		}
		if !ok || rec.State != stateReady {
			return errorf(ErrNotFound, "volume %q does not exist", name)
		}
		if err := tx.Bucket(bucketReservations).Delete([]byte(name)); err != nil {
			return err
		}
		return vb.Delete([]byte(name))
	})
	if err != nil {
		return err
	}
	s.step("delete/unrecorded")
	if err := os.Remove(s.abs(rec.File)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove file of deleted volume; it goes at next start", "volume", name, "err", err)
		return nil
	}
	if err := syncDir(s.abs(volumesDir)); err != nil {
		s.log.Warn("sync volumes directory", "err", err)
	}
	return nil
}
