package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Copy-before-write snapshots, for filesystems without reflinks. The cut
// only publishes a copy job on the volume's WriteGuard while the volume's
// writes are held; a background copier then fills the snapshot file chunk
// by chunk, and every write to the volume first has the old contents of the
// chunks it touches copied (BeforeWrite). The invariant that makes it
// correct: while a chunk is not marked copied, the volume holds in it what
// it held at the cut, because a write marks it copied (after copying it)
// before changing it.

// cbwChunk is the unit of copying and of tracking: a 4 KiB write to a chunk
// not yet copied waits for one chunk's copy.
const cbwChunk = 64 << 10

// WriteGuard is told of every change to one volume's data before the
// change is made (the iSCSI engine calls it from the one place where
// commands write to or punch holes in the volume's file). BeforeWrite
// returns once [off, off+length) is safe to change: the old contents are
// in every snapshot of the volume still being copied. Without a copy
// running it costs one atomic load.
type WriteGuard interface {
	BeforeWrite(off, length int64)
}

// WriteGuard returns the guard of the named volume; the engine asks for it
// when it exports the volume. The same guard serves a volume of that name
// for the store's lifetime.
func (s *Store) WriteGuard(volume string) WriteGuard { return s.copies.guard(volume) }

// volumeGuard is the WriteGuard of one volume.
type volumeGuard struct {
	jobs atomic.Pointer[[]*copyJob] // nil while no copy runs; replaced, never changed in place
	mu   sync.Mutex                 // serialises publish and unpublish
}

func (g *volumeGuard) BeforeWrite(off, length int64) {
	p := g.jobs.Load()
	if p == nil {
		return
	}
	for _, j := range *p {
		j.preserve(off, length)
	}
}

func (g *volumeGuard) publish(j *copyJob) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var next []*copyJob
	if p := g.jobs.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, j)
	g.jobs.Store(&next)
}

func (g *volumeGuard) unpublish(j *copyJob) {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.jobs.Load()
	if p == nil {
		return
	}
	var next []*copyJob
	for _, x := range *p {
		if x != j {
			next = append(next, x)
		}
	}
	if len(next) == 0 {
		g.jobs.Store(nil)
		return
	}
	g.jobs.Store(&next)
}

// copyJob fills one snapshot file from its volume.
type copyJob struct {
	snapshot string
	guard    *volumeGuard
	src, dst *os.File // src: the volume's file as opened before the cut
	size     int64
	chunks   int64

	done   []atomic.Uint64 // bitmap: chunk i is in the snapshot (or needs nothing)
	copied atomic.Int64    // bytes of the chunks done

	// mu guards inflight: the chunks being copied, each with a channel
	// closed when its copy ends; whoever wants a chunk in flight waits on it.
	mu       sync.Mutex
	inflight map[int64]chan struct{}

	// err is the first failure; once set the job copies nothing more and
	// its snapshot is dropped. A guest write is never failed by it.
	err atomic.Pointer[error]
}

func newCopyJob(snapshot string, g *volumeGuard, src, dst *os.File, size int64) *copyJob {
	n := (size + cbwChunk - 1) / cbwChunk
	return &copyJob{
		snapshot: snapshot, guard: g, src: src, dst: dst, size: size, chunks: n,
		done:     make([]atomic.Uint64, (n+63)/64),
		inflight: map[int64]chan struct{}{},
	}
}

func (j *copyJob) isDone(c int64) bool { return j.done[c/64].Load()&(1<<(c%64)) != 0 }

func (j *copyJob) failed() error {
	if p := j.err.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the job's first error and takes it off the volume's guard,
// so that writes no longer wait for it.
func (j *copyJob) fail(err error) {
	if j.err.CompareAndSwap(nil, &err) {
		j.guard.unpublish(j)
	}
}

// claim makes the caller the one to copy chunk c. It returns false once c
// is copied (waiting for a copy in flight to end) or the job has failed.
func (j *copyJob) claim(c int64) bool {
	for {
		if j.isDone(c) || j.failed() != nil {
			return false
		}
		j.mu.Lock()
		if j.isDone(c) {
			j.mu.Unlock()
			return false
		}
		ch, busy := j.inflight[c]
		if !busy {
			j.inflight[c] = make(chan struct{})
			j.mu.Unlock()
			return true
		}
		j.mu.Unlock()
		<-ch
	}
}

// finish ends the claim on chunk c, marking it copied if ok.
func (j *copyJob) finish(c int64, ok bool) {
	if ok {
		j.done[c/64].Or(1 << (c % 64))
		j.copied.Add(min(cbwChunk, j.size-c*cbwChunk))
	}
	j.mu.Lock()
	ch := j.inflight[c]
	delete(j.inflight, c)
	j.mu.Unlock()
	close(ch)
}

// preserve copies the chunks of [off, off+length) not yet in the snapshot.
func (j *copyJob) preserve(off, length int64) {
	if length <= 0 || off >= j.size {
		return
	}
	last := min(off+length, j.size) - 1
	for c := off / cbwChunk; c <= last/cbwChunk; c++ {
		if j.claim(c) {
			err := j.copyChunk(c)
			if err != nil {
				j.fail(fmt.Errorf("copy before write at byte %d: %w", c*cbwChunk, err))
			}
			j.finish(c, err == nil)
		}
	}
}

var chunkBuffers = sync.Pool{New: func() any { b := make([]byte, cbwChunk); return &b }}

// copyChunk copies the data of chunk c (not its holes) from the volume to
// the snapshot. The caller has claimed c.
func (j *copyJob) copyChunk(c int64) error {
	from, to := c*cbwChunk, min((c+1)*cbwChunk, j.size)
	bp := chunkBuffers.Get().(*[]byte)
	defer chunkBuffers.Put(bp)
	for off := from; off < to; {
		data, end, err := nextData(j.src, off, to)
		if err != nil {
			return err
		}
		if data >= to {
			return nil
		}
		buf := (*bp)[:end-data]
		n, err := j.src.ReadAt(buf, data)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read volume: %w", err)
		}
		if n > 0 {
			if _, err := j.dst.WriteAt(buf[:n], data); err != nil {
				return fmt.Errorf("write snapshot: %w", mapNoSpace(err))
			}
		}
		if n < len(buf) {
			return nil // the volume's file ends here (it reads as zeros)
		}
		off = end
	}
	return nil
}

// nextData finds the first data extent of f at or after off, capped at
// limit: [data, end). data == limit when only a hole is left. Where the
// filesystem cannot tell (no SEEK_DATA), everything is data.
func nextData(f *os.File, off, limit int64) (data, end int64, err error) {
	fd := int(f.Fd())
	data, err = unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return limit, limit, nil
	case errors.Is(err, unix.EINVAL):
		return off, limit, nil
	case err != nil:
		return 0, 0, fmt.Errorf("find data: %w", err)
	}
	if data >= limit {
		return limit, limit, nil
	}
	hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
	if err != nil || hole > limit {
		hole = limit
	}
	return data, hole, nil
}

// run is the background copier: it walks the volume's chunks in order,
// skipping runs of holes without reading them, and copies each chunk that
// no write has copied yet. It stops early when ctx ends or the job fails.
func (j *copyJob) run(ctx context.Context, step func(string), rate int64) error {
	start, copied, half := time.Now(), int64(0), false
	halfway := func(c int64) { // a crash step for tests
		if !half && c >= j.chunks/2 && step != nil {
			half = true
			step("copy/half")
		}
	}
	defer func() { halfway(j.chunks) }()
	for c := int64(0); c < j.chunks; {
		halfway(c)
		if err := ctx.Err(); err != nil {
			j.fail(err)
			return err
		}
		if err := j.failed(); err != nil {
			return err
		}
		if j.isDone(c) {
			c++
			continue
		}
		// Chunks before the next data are holes. They still are when
		// claimed: a chunk not marked done has its contents of the cut.
		data, _, err := nextData(j.src, c*cbwChunk, j.size)
		if err != nil {
			j.fail(err)
			return err
		}
		for ; c < data/cbwChunk && c < j.chunks; c++ {
			if j.claim(c) {
				j.finish(c, true)
			}
		}
		if c >= j.chunks {
			break
		}
		if j.claim(c) {
			err := j.copyChunk(c)
			if err != nil {
				j.fail(err)
			}
			j.finish(c, err == nil)
			if err != nil {
				return err
			}
			copied += cbwChunk
			if rate > 0 { // keep to the rate; writes that copy first do not wait for it
				due := start.Add(time.Duration(float64(copied) / float64(rate) * float64(time.Second)))
				t := time.NewTimer(time.Until(due))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
		}
		c++
	}
	return j.failed()
}

// copies is the store's copy-before-write state: the guards of the volumes
// and the copies running.
type copies struct {
	// mu guards everything below.
	mu     sync.Mutex
	guards map[string]*volumeGuard // by volume name
	jobs   map[string]*copyJob     // running, by snapshot ID
	// over has a channel per copying snapshot, closed when its copier has
	// turned it ready or dropped it.
	over   map[string]chan struct{}
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // background copiers
}

func (c *copies) guard(volume string) *volumeGuard {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.guards == nil {
		c.guards = map[string]*volumeGuard{}
	}
	g, ok := c.guards[volume]
	if !ok {
		g = &volumeGuard{}
		c.guards[volume] = g
	}
	return g
}

// progress reports how far the copy of a snapshot has come; ok is false
// if no copy of it runs.
func (c *copies) progress(id string) (copied, total int64, ok bool) {
	c.mu.Lock()
	j, ok := c.jobs[id]
	c.mu.Unlock()
	if !ok {
		return 0, 0, false
	}
	return j.copied.Load(), j.size, true
}

// start publishes a copy job for snapshot id on the volume's guard; from
// then on the volume's writes preserve their chunks in dst.
func (c *copies) start(id, volume string, src, dst *os.File, size int64) (*copyJob, error) {
	g := c.guard(volume)
	j := newCopyJob(id, g, src, dst, size)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	if c.ctx.Err() != nil {
		return nil, errors.New("store closed")
	}
	if c.jobs == nil {
		c.jobs = map[string]*copyJob{}
	}
	c.jobs[id] = j
	g.publish(j)
	return j, nil
}

// watch returns a channel the copier closes when it is over with snaps.
func (c *copies) watch(snaps []snapshotRecord) chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.over == nil {
		c.over = map[string]chan struct{}{}
	}
	for _, r := range snaps {
		c.over[r.ID] = ch
	}
	go func() { // forget it once closed
		<-ch
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, r := range snaps {
			if c.over[r.ID] == ch {
				delete(c.over, r.ID)
			}
		}
	}()
	return ch
}

// errDeletedWhileCopying stops the copy of a snapshot deleted meanwhile.
var errDeletedWhileCopying = errors.New("deleted while it was being copied")

// stopCopies stops the copies of the snapshots ids and waits until their
// copier has dropped them (or, if it was just done, turned them ready).
func (c *copies) stopCopies(ctx context.Context, ids []string) error {
	var wait []chan struct{}
	c.mu.Lock()
	for _, id := range ids {
		if j, ok := c.jobs[id]; ok {
			j.fail(errDeletedWhileCopying)
		}
		if ch, ok := c.over[id]; ok {
			wait = append(wait, ch)
		}
	}
	c.mu.Unlock()
	for _, ch := range wait {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for the copy to stop: %w", ctx.Err())
		}
	}
	return nil
}

// end takes a job off its guard and out of the running ones.
func (c *copies) end(j *copyJob) {
	j.guard.unpublish(j)
	c.mu.Lock()
	delete(c.jobs, j.snapshot)
	c.mu.Unlock()
}

// background runs fn in a copier goroutine with a context that ends at
// stop. It refuses once the store is closing.
func (c *copies) background(fn func(ctx context.Context)) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	if c.ctx.Err() != nil {
		return false
	}
	c.wg.Add(1)
	ctx := c.ctx
	go func() {
		defer c.wg.Done()
		fn(ctx)
	}()
	return true
}

// stop cuts the running copies short and waits for their copiers, which
// drop their snapshots.
func (c *copies) stop() {
	c.mu.Lock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	c.cancel()
	c.mu.Unlock()
	c.wg.Wait()
}

// cutInto cuts one snapshot during a cut: a reflink where the filesystem
// has them; otherwise, with copy-before-write on, it starts a copy job (the
// volume's writes are held, so this is the instant of the snapshot), and
// without it, a full copy.
func (s *Store) cutInto(ctx context.Context, rec snapshotRecord, dst, src *os.File) (string, *copyJob, error) {
	if !s.cbw {
		m, err := s.cloneInto(ctx, dst, src)
		return m, nil, err
	}
	if !s.noReflink {
		err := s.reflink(dst, src)
		if err == nil {
			return MethodReflink, nil, nil
		}
		if !reflinkUnsupported(err) {
			return "", nil, fmt.Errorf("reflink: %w", err)
		}
	}
	fi, err := src.Stat()
	if err != nil {
		return "", nil, err
	}
	if st, ok := fi.Sys().(*unix.Stat_t); ok {
		if err := s.checkFree("a copy of "+fi.Name(), st.Blocks*512); err != nil {
			return "", nil, err
		}
	}
	size := rec.SizeMiB * MiB
	if err := dst.Truncate(size); err != nil {
		return "", nil, mapNoSpace(err)
	}
	j, err := s.copies.start(rec.ID, rec.Volume, src, dst, size)
	if err != nil {
		return "", nil, err
	}
	return MethodCopy, j, nil
}

// copyLater takes over snapshots whose cut started copy jobs (jobs[i] nil
// for those already cut by reflink), with their files: it records them
// (and their set, if any) as copying, then a background copier fills them
// and turns them ready, or drops them if the copy fails or the store
// closes first. op names the crash steps ("snapshot" or "set").
func (s *Store) copyLater(op string, set *setRecord, snaps []snapshotRecord, jobs []*copyJob, dsts, srcs []*os.File) error {
	for i := range snaps {
		snaps[i].State = stateCopying
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range snaps {
			if err := putSnapshot(tx.Bucket(bucketSnapshots), r); err != nil {
				return err
			}
		}
		if set != nil {
			set.State = stateCopying
			return putSet(tx.Bucket(bucketSets), *set)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record snapshot as copying: %w", err)
	}
	s.step(op + "/copying")
	over := s.copies.watch(snaps)
	started := s.copies.background(func(ctx context.Context) {
		defer close(over)
		s.finishCopies(ctx, op, set, snaps, jobs, dsts, srcs)
	})
	if !started {
		return errors.New("the store is closing")
	}
	return nil
}

// finishCopies is the background part of copyLater.
func (s *Store) finishCopies(ctx context.Context, op string, set *setRecord, snaps []snapshotRecord, jobs []*copyJob, dsts, srcs []*os.File) {
	start := time.Now()
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		if j == nil {
			continue
		}
		errs[i] = errors.New("copy cut short")
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = j.run(ctx, s.step, s.copyRate)
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		if j != nil {
			s.copies.end(j) // every chunk is in (or the copy failed): writes go straight on
		}
	}
	err := errors.Join(errs...)
	for _, f := range srcs {
		f.Close()
	}
	if err == nil {
		for i, f := range dsts {
			dsts[i] = nil
			if ferr := s.finishFile(f, snaps[i].SizeMiB*MiB); ferr != nil && err == nil {
				err = ferr
			}
		}
		if err == nil {
			err = syncDir(s.abs(snapshotsDir))
		}
	}
	for _, f := range dsts {
		if f != nil {
			f.Close()
		}
	}
	if err == nil {
		s.step(op + "/copied")
		err = s.markCopied(set, snaps)
	}
	what := []any{"snapshots", snapshotIDs(snaps)}
	if set != nil {
		what = append(what, "set", set.ID)
	}
	if errors.Is(err, errDeletedWhileCopying) {
		s.log.Info("copy-before-write snapshot deleted before its copy was done", what...)
	} else if err != nil {
		s.log.Error("copy-before-write snapshot failed; dropping it", append(what, "err", err)...)
	}
	if err != nil {
		if set != nil {
			s.dropSet(*set, snaps)
		} else {
			for _, r := range snaps {
				s.dropSnapshot(r)
			}
		}
		return
	}
	s.log.Info("copy-before-write snapshot copied", append(what, "took", time.Since(start))...)
	s.step(op + "/ready")
}

// markCopied turns copied snapshots and their set ready, in one
// transaction, keeping what changed meanwhile (a set's labels).
func (s *Store) markCopied(set *setRecord, snaps []snapshotRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketSnapshots)
		for _, r := range snaps {
			cur, ok, err := getSnapshot(sb, r.ID)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("snapshot %s: record gone while copying", r.ID)
			}
			cur.State = stateReady
			if err := putSnapshot(sb, cur); err != nil {
				return err
			}
		}
		if set == nil {
			return nil
		}
		xb := tx.Bucket(bucketSets)
		cur, ok, err := getSet(xb, set.ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("snapshot set %s: record gone while copying", set.ID)
		}
		cur.State = stateReady
		return putSet(xb, cur)
	})
}

func snapshotIDs(snaps []snapshotRecord) string {
	ids := make([]string, len(snaps))
	for i, r := range snaps {
		ids[i] = r.ID
	}
	return strings.Join(ids, ",")
}

// stillCopying is the error for a use of a snapshot whose copy runs.
func (s *Store) stillCopying(r snapshotRecord) error {
	copied, total, _ := s.copies.progress(r.ID)
	if total == 0 {
		total = r.SizeMiB * MiB
	}
	return errorf(ErrConflict, "snapshot %s is still being copied (%d of %d MiB): wait until GET /v1/snapshots/%s shows it ready, then retry", r.ID, copied/MiB, total/MiB, r.ID)
}

// visibleSnapshot returns a snapshot that is ready or copying.
func (s *Store) visibleSnapshot(id string) (snapshotRecord, error) {
	var r snapshotRecord
	err := s.view(func(_, sb *bolt.Bucket) error {
		var ok bool
		var err error
		r, ok, err = getSnapshot(sb, id)
		if err != nil {
			return err
		}
		if !ok || (r.State != stateReady && r.State != stateCopying) {
			return errorf(ErrNotFound, "snapshot %q does not exist", id)
		}
		return nil
	})
	return r, err
}

// WaitCopied waits until the snapshot's copy (if any) is over and returns
// the snapshot: ready, or an ErrNotFound error if the copy failed and it
// was dropped.
func (s *Store) WaitCopied(ctx context.Context, id string) (Snapshot, error) {
	for {
		snap, err := s.GetSnapshot(id)
		if err != nil || !snap.Copying {
			return snap, err
		}
		select {
		case <-ctx.Done():
			return Snapshot{}, fmt.Errorf("wait for snapshot %s: %w", id, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
