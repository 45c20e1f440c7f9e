package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// MiB is the unit of every size in the store's API.
const MiB = 1 << 20

// Layout of the data directory.
const (
	dbFile       = "meta.db"
	volumesDir   = "volumes"
	snapshotsDir = "snapshots"
	tmpDir       = "tmp"
)

var (
	bucketVolumes     = []byte("volumes")
	bucketSnapshots   = []byte("snapshots")
	bucketSets        = []byte("snapshot-sets")
	bucketAttachments = []byte("set-attachments") // key: set ID, '/', name
)

// A record is either being created (its file may be partial; invisible to
// readers and removed by Open) or ready.
type state string

const (
	stateCreating state = "creating"
	stateReady    state = "ready"
	// stateCopying: a snapshot (or set) that is cut, whose file a
	// copy-before-write copier is still filling (see cbw.go). It is shown
	// with its progress but cannot be read yet; Open drops it.
	stateCopying state = "copying"
)

// Volume is a volume as the store describes it.
type Volume struct {
	Name      string
	SizeMiB   int64
	Path      string // absolute path of the sparse raw backing file
	CreatedAt time.Time
	Access    Access
	Source    *Source // what the volume was cloned from, if anything
}

// Access says who may log in to a volume. An empty Initiators list lets
// nobody in.
type Access struct {
	Initiators []string   `json:"initiators"`
	CHAP       *wire.CHAP `json:"chap,omitempty"`
}

// Source names what a clone is made from: exactly one of the fields is set.
type Source struct {
	Volume   string `json:"volume,omitempty"`
	Snapshot string `json:"snapshot,omitempty"`
}

// Snapshot methods.
const (
	MethodReflink = "reflink"
	MethodCopy    = "copy"
)

// Snapshot is a point-in-time copy of a volume. It outlives its volume.
type Snapshot struct {
	ID        string
	Volume    string
	SizeMiB   int64
	Path      string
	CreatedAt time.Time
	Method    string // MethodReflink or MethodCopy
	Set       string // the snapshot set it belongs to, if any
	// Copying is true while a copy-before-write copy fills the snapshot:
	// CopiedBytes of TotalBytes are in (equal once done); it cannot be
	// read until done.
	Copying                 bool
	CopiedBytes, TotalBytes int64
}

type volumeRecord struct {
	Name      string    `json:"name"`
	SizeMiB   int64     `json:"size_mib"`
	State     state     `json:"state"`
	File      string    `json:"file"` // relative to the data directory
	CreatedAt time.Time `json:"created_at"`
	Access    Access    `json:"access"`
	Source    *Source   `json:"source,omitempty"`
}

type snapshotRecord struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq"`
	Volume    string    `json:"volume"`
	SizeMiB   int64     `json:"size_mib"`
	State     state     `json:"state"`
	File      string    `json:"file"`
	CreatedAt time.Time `json:"created_at"`
	Method    string    `json:"method,omitempty"`
	Set       string    `json:"set,omitempty"`
}

// Options tune a Store. The zero value is ready to use.
type Options struct {
	Logger *slog.Logger
	// NoReflink makes snapshots and clones always copy, even where the
	// filesystem could share blocks.
	NoReflink bool
	// QemuImg is the qemu-img binary used to convert qcow2 uploads; default
	// "qemu-img" from PATH.
	QemuImg string
	// VolatileRegistrations makes Open forget the persistent reservations
	// of every volume whose initiators did not set APTPL, as SPC-4 has a
	// power loss do. By default they are kept: a restart of drover-target
	// is not a power loss of the initiators, and fences rely on them.
	VolatileRegistrations bool
	// CopyBeforeWrite makes a snapshot that cannot be a reflink a
	// copy-before-write one: the cut only starts tracking the volume's
	// writes and the copy is made in the background (see cbw.go). Off, the
	// copy is made during the cut, under its freeze.
	CopyBeforeWrite bool
	// CopyRate bounds the background copier of each copy-before-write
	// snapshot, in bytes per second of data copied; 0: as fast as it goes.
	CopyRate int64
}

// Store is the volume store of one data directory. Its methods are safe for
// concurrent use; operations on one volume or snapshot are serialised.
type Store struct {
	dir       string
	db        *bolt.DB
	log       *slog.Logger
	noReflink bool
	qemuImg   string
	// volatileRegistrations: see Options.VolatileRegistrations.
	volatileRegistrations bool
	locks                 keyLocks
	cbw                   bool   // Options.CopyBeforeWrite
	copies                copies // copy-before-write snapshots being copied
	copyRate              int64  // Options.CopyRate
	closeOnce             sync.Once
	closeErr              error

	// reflink shares src's blocks with dst (FICLONE); a field so tests can
	// exercise the reflink branch on filesystems without reflinks.
	reflink func(dst, src *os.File) error
	// crash, when set by tests, is called between the steps of every change;
	// it panics to simulate a crash at that point.
	crash func(step string)
}

// Open opens (creating if needed) the store in dir, then repairs what a
// crash may have left: records that never became ready are dropped with
// their files, files without a record are removed, and backing files are
// brought back to their recorded size.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open store: data directory not set")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	for _, d := range []string{abs, filepath.Join(abs, volumesDir), filepath.Join(abs, snapshotsDir), filepath.Join(abs, tmpDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	db, err := bolt.Open(filepath.Join(abs, dbFile), 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open store: %s is in use by another process (is another drover-target running?)", abs)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	s := &Store{
		dir:                   abs,
		db:                    db,
		log:                   opts.Logger,
		noReflink:             opts.NoReflink,
		qemuImg:               opts.QemuImg,
		volatileRegistrations: opts.VolatileRegistrations,
		cbw:                   opts.CopyBeforeWrite,
		copyRate:              opts.CopyRate,
		reflink:               func(dst, src *os.File) error { return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) },
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.qemuImg == "" {
		s.qemuImg = "qemu-img"
	}
	if err := s.recover(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

// Close closes the metadata database. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.copies.stop() // copies cut short drop their snapshots
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Free returns the bytes available to us on the data directory's filesystem.
func (s *Store) Free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", s.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func (s *Store) checkFree(what string, bytes int64) error {
	free, err := s.Free()
	if err != nil {
		return err
	}
	if bytes > free {
		return errorf(ErrNoSpace, "%s needs %d MiB but the data directory has %d MiB free: free space or choose a smaller size", what, bytes/MiB, free/MiB)
	}
	return nil
}

func (s *Store) step(name string) {
	if s.crash != nil {
		s.crash(name)
	}
}

func (s *Store) abs(rel string) string { return filepath.Join(s.dir, rel) }

// recover repairs what a crash may have left, one kind of record after the
// other in one transaction (sets before the snapshots they own, volumes
// before the reservations that belong to them; fences and schedules on
// their own), then the files.
func (s *Store) recover() error {
	var volumes []volumeRecord
	var snapshots []snapshotRecord
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if err = s.recoverSets(tx); err != nil {
			return err
		}
		if volumes, err = s.recoverVolumes(tx); err != nil {
			return err
		}
		if snapshots, err = s.recoverSnapshots(tx); err != nil {
			return err
		}
		if err = s.recoverFences(tx); err != nil {
			return err
		}
		if err = s.recoverSchedules(tx); err != nil {
			return err
		}
		return s.recoverReservations(tx)
	})
	if err != nil {
		return fmt.Errorf("recover metadata: %w", err)
	}
	keep := map[string]bool{}
	for _, r := range volumes {
		keep[r.File] = true
	}
	for _, r := range snapshots {
		keep[r.File] = true
	}
	if err := s.removeOrphans(keep); err != nil {
		return err
	}
	for _, r := range volumes {
		if err := s.reconcileSize(r.File, r.SizeMiB, "volume "+r.Name); err != nil {
			return err
		}
	}
	for _, r := range snapshots {
		if _, err := os.Stat(s.abs(r.File)); err != nil {
			return fmt.Errorf("snapshot %s: backing file missing (%w): restore it from a backup of the data directory", r.ID, err)
		}
	}
	return nil
}

// recoverVolumes drops the volume records that never became ready and
// returns the others.
func (s *Store) recoverVolumes(tx *bolt.Tx) ([]volumeRecord, error) {
	vb, err := tx.CreateBucketIfNotExists(bucketVolumes)
	if err != nil {
		return nil, err
	}
	var ready []volumeRecord
	var drop [][]byte
	err = vb.ForEach(func(k, v []byte) error {
		var r volumeRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("volume record %q: %w", k, err)
		}
		if r.State != stateReady {
			s.log.Warn("rolling back volume creation interrupted by a crash", "volume", r.Name)
			drop = append(drop, k)
			return nil
		}
		ready = append(ready, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ready, deleteKeys(vb, drop)
}

// recoverSnapshots drops the snapshot records that never became ready and
// returns the others.
func (s *Store) recoverSnapshots(tx *bolt.Tx) ([]snapshotRecord, error) {
	sb, err := tx.CreateBucketIfNotExists(bucketSnapshots)
	if err != nil {
		return nil, err
	}
	var ready []snapshotRecord
	var drop [][]byte
	err = sb.ForEach(func(k, v []byte) error {
		var r snapshotRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("snapshot record %q: %w", k, err)
		}
		if r.State == stateCopying {
			s.log.Warn("dropping snapshot whose copy was cut short by a crash or a stop", "snapshot", r.ID, "set", r.Set)
			drop = append(drop, k)
			return nil
		}
		if r.State != stateReady {
			s.log.Warn("rolling back snapshot interrupted by a crash", "snapshot", r.ID)
			drop = append(drop, k)
			return nil
		}
		ready = append(ready, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ready, deleteKeys(sb, drop)
}

func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// removeOrphans removes the files under the data directory that no ready
// record claims (keep), and everything in the scratch directory.
func (s *Store) removeOrphans(keep map[string]bool) error {
	for _, d := range []string{volumesDir, snapshotsDir, tmpDir} {
		entries, err := os.ReadDir(s.abs(d))
		if err != nil {
			return err
		}
		for _, e := range entries {
			rel := filepath.Join(d, e.Name())
			if keep[rel] {
				continue
			}
			if d != tmpDir {
				s.log.Warn("removing file that no record claims", "file", s.abs(rel))
			}
			if err := os.RemoveAll(s.abs(rel)); err != nil {
				return fmt.Errorf("remove orphan: %w", err)
			}
		}
		if err := syncDir(s.abs(d)); err != nil {
			return err
		}
	}
	return nil
}

// reconcileSize makes a volume file exactly as large as its record says. A
// larger file is what a crash between growing the file and committing the
// new size leaves; nothing beyond the recorded size was ever exported, so
// cutting it off returns to the old state.
func (s *Store) reconcileSize(rel string, sizeMiB int64, what string) error {
	p := s.abs(rel)
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: backing file missing (%w): restore it from a backup of the data directory, or create an empty one with `truncate -s %dM %s`", what, err, sizeMiB, p)
	}
	if fi.Size() == sizeMiB*MiB {
		return nil
	}
	s.log.Warn("backing file size differs from the record; restoring the recorded size", "what", what, "file_bytes", fi.Size(), "recorded_bytes", sizeMiB*MiB)
	return truncateSync(p, sizeMiB*MiB)
}

// view and update wrap bbolt transactions on both buckets.
func (s *Store) view(fn func(vb, sb *bolt.Bucket) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketVolumes), tx.Bucket(bucketSnapshots)) })
}

func (s *Store) update(fn func(vb, sb *bolt.Bucket) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketVolumes), tx.Bucket(bucketSnapshots)) })
}

func getVolume(vb *bolt.Bucket, name string) (volumeRecord, bool, error) {
	var r volumeRecord
	v := vb.Get([]byte(name))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("volume record %q: %w", name, err)
	}
	return r, true, nil
}

func putVolume(vb *bolt.Bucket, r volumeRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return vb.Put([]byte(r.Name), b)
}

func getSnapshot(sb *bolt.Bucket, id string) (snapshotRecord, bool, error) {
	var r snapshotRecord
	v := sb.Get([]byte(id))
	if v == nil {
		return r, false, nil
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("snapshot record %q: %w", id, err)
	}
	return r, true, nil
}

func putSnapshot(sb *bolt.Bucket, r snapshotRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return sb.Put([]byte(r.ID), b)
}

// readyVolume returns the ready record of a volume or an ErrNotFound error.
func (s *Store) readyVolume(name string) (volumeRecord, error) {
	var r volumeRecord
	err := s.view(func(vb, _ *bolt.Bucket) error {
		var ok bool
		var err error
		r, ok, err = getVolume(vb, name)
		if err != nil {
			return err
		}
		if !ok || r.State != stateReady {
			return errorf(ErrNotFound, "volume %q does not exist", name)
		}
		return nil
	})
	return r, err
}

func (s *Store) readySnapshot(id string) (snapshotRecord, error) {
	var r snapshotRecord
	err := s.view(func(_, sb *bolt.Bucket) error {
		var ok bool
		var err error
		r, ok, err = getSnapshot(sb, id)
		if err != nil {
			return err
		}
		if ok && r.State == stateCopying {
			return s.stillCopying(r)
		}
		if !ok || r.State != stateReady {
			return errorf(ErrNotFound, "snapshot %q does not exist", id)
		}
		return nil
	})
	return r, err
}

func (s *Store) volume(r volumeRecord) Volume {
	return Volume{
		Name:      r.Name,
		SizeMiB:   r.SizeMiB,
		Path:      s.abs(r.File),
		CreatedAt: r.CreatedAt,
		Access:    cloneAccess(r.Access),
		Source:    r.Source,
	}
}

func (s *Store) snapshot(r snapshotRecord) Snapshot {
	out := Snapshot{ID: r.ID, Volume: r.Volume, SizeMiB: r.SizeMiB, Path: s.abs(r.File), CreatedAt: r.CreatedAt, Method: r.Method, Set: r.Set}
	out.CopiedBytes, out.TotalBytes = r.SizeMiB*MiB, r.SizeMiB*MiB
	if r.State == stateCopying {
		out.Copying = true
		out.CopiedBytes, _, _ = s.copies.progress(r.ID)
	}
	return out
}

func cloneAccess(a Access) Access {
	out := Access{Initiators: append([]string{}, a.Initiators...)}
	if a.CHAP != nil {
		c := *a.CHAP
		out.CHAP = &c
	}
	return out
}

// keyLocks serialises operations per volume or snapshot; waiting honours
// the caller's context.
type keyLocks struct {
	mu   sync.Mutex // guards held
	held map[string]chan struct{}
}

func (l *keyLocks) lock(ctx context.Context, keys ...string) (unlock func(), err error) {
	keys = append([]string(nil), keys...)
	sort.Strings(keys) // one global order: no deadlock between two multi-key lockers
	var got []chan struct{}
	release := func() {
		for i := len(got) - 1; i >= 0; i-- {
			<-got[i]
		}
	}
	for _, k := range keys {
		l.mu.Lock()
		if l.held == nil {
			l.held = map[string]chan struct{}{}
		}
		ch, ok := l.held[k]
		if !ok {
			ch = make(chan struct{}, 1)
			l.held[k] = ch
		}
		l.mu.Unlock()
		select {
		case ch <- struct{}{}:
			got = append(got, ch)
		case <-ctx.Done():
			release()
			return nil, fmt.Errorf("wait for %s: %w", k, ctx.Err())
		}
	}
	return release, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("resize %s: %w", path, err)
	}
	return f.Sync()
}

// Sync flushes every volume's backing file to disk; the daemon calls it on
// shutdown after the iSCSI engine has stopped writing.
func (s *Store) Sync() error {
	vols, err := s.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vols {
		f, err := os.OpenFile(v.Path, os.O_RDWR, 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("sync volume %s: %w", v.Name, err))
		}
		f.Close()
	}
	return errors.Join(errs...)
}
