package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// gate stands in for the iSCSI engine's write gate: writers hold it for
// reading around BeforeWrite and the write, and its Freeze holds it for
// writing, so the cut sees the volume quiet, as under Engine.Hold.
type gate struct{ mu sync.RWMutex }

func (g *gate) freeze(atCut func()) Freeze {
	return func(ctx context.Context) (context.Context, func() error, error) {
		g.mu.Lock()
		if atCut != nil {
			atCut()
		}
		return ctx, func() error { g.mu.Unlock(); return nil }, nil
	}
}

// guardedFile writes to a volume's file the way the iSCSI engine does:
// through the store's WriteGuard first.
type guardedFile struct {
	f     *os.File
	guard WriteGuard
	gate  *gate
}

func openGuarded(t *testing.T, s *Store, v Volume, g *gate) *guardedFile {
	t.Helper()
	f, err := os.OpenFile(v.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &guardedFile{f: f, guard: s.WriteGuard(v.Name), gate: g}
}

func (w *guardedFile) write(p []byte, off int64) error {
	w.gate.mu.RLock()
	defer w.gate.mu.RUnlock()
	w.guard.BeforeWrite(off, int64(len(p)))
	_, err := w.f.WriteAt(p, off)
	return err
}

func (w *guardedFile) punch(off, n int64) error {
	w.gate.mu.RLock()
	defer w.gate.mu.RUnlock()
	w.guard.BeforeWrite(off, n)
	return syscall.Fallocate(int(w.f.Fd()), 0x02|0x01, off, n)
}

func openCBW(t *testing.T, dir string, rate int64) *Store {
	t.Helper()
	return openTestStore(t, dir, Options{CopyBeforeWrite: true, NoReflink: true, CopyRate: rate})
}

func waitCopied(t *testing.T, s *Store, id string) Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snap, err := s.WaitCopied(ctx, id)
	if err != nil {
		t.Fatalf("WaitCopied(%s): %v", id, err)
	}
	if snap.Copying || snap.CopiedBytes != snap.TotalBytes {
		t.Fatalf("snapshot %s after its copy: copying %v, %d of %d bytes", id, snap.Copying, snap.CopiedBytes, snap.TotalBytes)
	}
	return snap
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s: differs first at byte %d (chunk %d): got %#x, want %#x", what, i, i/cbwChunk, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func TestBitmapClaimsEachChunkOnce(t *testing.T) {
	t.Parallel()
	j := newCopyJob("v.1", &volumeGuard{}, nil, nil, 10*cbwChunk+100)
	if j.chunks != 11 || len(j.done) != 1 {
		t.Fatalf("chunks %d, bitmap words %d; want 11 and 1", j.chunks, len(j.done))
	}
	if !j.claim(3) {
		t.Fatal("first claim of chunk 3 refused")
	}
	var second atomic.Bool
	released := make(chan struct{})
	go func() {
		second.Store(j.claim(3)) // waits for the first claim to end
		close(released)
	}()
	time.Sleep(10 * time.Millisecond)
	select {
	case <-released:
		t.Fatal("a second claim of a chunk in flight did not wait")
	default:
	}
	j.finish(3, true)
	<-released
	if second.Load() {
		t.Error("a chunk copied was claimed again")
	}
	if !j.isDone(3) || j.isDone(2) || j.isDone(4) {
		t.Errorf("done bits: 2 %v 3 %v 4 %v; want only 3", j.isDone(2), j.isDone(3), j.isDone(4))
	}
	if got := j.copied.Load(); got != cbwChunk {
		t.Errorf("copied %d bytes, want %d", got, cbwChunk)
	}
	j.claim(10)
	j.finish(10, true)
	if got := j.copied.Load(); got != cbwChunk+100 {
		t.Errorf("copied %d bytes after the short last chunk, want %d", got, cbwChunk+100)
	}
}

// TestWritesDuringTheCopyNeverReachTheSnapshot: many writers write and
// punch random regions while the copy runs; the snapshot is the volume at
// the cut, byte for byte, and the volume holds the last writes.
func TestWritesDuringTheCopyNeverReachTheSnapshot(t *testing.T) {
	t.Parallel()
	const sizeMiB, writers, stripe = 16, 8, 256 << 10
	s := openCBW(t, t.TempDir(), 8<<20) // most of a second of copying
	v := mustCreate(t, s, "v", sizeMiB)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 6 { // data here and there; the rest are holes
		b := make([]byte, 1<<20)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		writeAt(t, v.Path, rng.Int64N(sizeMiB-1)<<20, b)
	}
	model := mustRead(t, v.Path) // what the volume should hold; writer g owns the stripes i%writers == g
	var atCut []byte
	g := &gate{}
	w := openGuarded(t, s, v, g)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ops atomic.Int64
	errs := make(chan error, writers)
	for gi := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(gi), 7))
			stripes := int64(sizeMiB<<20) / stripe
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := r.Int64N(stripes/writers)*writers + int64(gi)
				n := 512 + r.Int64N(150<<10)
				off := st*stripe + r.Int64N(stripe-n)
				if r.IntN(10) == 0 { // a punch, 4 KiB aligned as UNMAP's would be
					n = (n + 4095) &^ 4095
					off = st*stripe + r.Int64N(stripe-n)&^4095
					if err := w.punch(off, n); err != nil {
						errs <- err
						return
					}
					clear(model[off : off+n])
				} else {
					p := bytes.Repeat([]byte{byte(r.Uint32()) | 1}, int(n))
					binary.LittleEndian.PutUint64(p, r.Uint64())
					if err := w.write(p, off); err != nil {
						errs <- err
						return
					}
					copy(model[off:], p)
				}
				ops.Add(1)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // writers are writing when the cut comes
	snap, err := s.CreateSnapshot(context.Background(), "v", g.freeze(func() { atCut = mustRead(t, v.Path) }))
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if !snap.Copying || snap.Method != MethodCopy {
		t.Fatalf("snapshot right after the cut: copying %v, method %s; want a copy still running", snap.Copying, snap.Method)
	}
	before := ops.Load()
	waitCopied(t, s, snap.ID)
	during := ops.Load() - before
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
	if during < 100 {
		t.Fatalf("only %d writes while the copy ran; the test proves little", during)
	}
	sameBytes(t, "snapshot against the volume at the cut", mustRead(t, snap.Path), atCut)
	sameBytes(t, "volume against the writes made", mustRead(t, v.Path), model)
	t.Logf("%d writes and punches while the copy ran", during)
}

// TestACopyLeavesHolesAsHoles: the copier copies only data, also where
// writes during the copy land in holes of the cut.
func TestACopyLeavesHolesAsHoles(t *testing.T) {
	t.Parallel()
	s := openCBW(t, t.TempDir(), 8<<20)
	v := mustCreate(t, s, "v", 64)
	data := bytes.Repeat([]byte("old!"), 1<<18) // 1 MiB
	writeAt(t, v.Path, 0, data)
	writeAt(t, v.Path, 10<<20, data[:100<<10])
	writeAt(t, v.Path, 40<<20+4096, data[:4096])
	g := &gate{}
	w := openGuarded(t, s, v, g)
	var atCut []byte
	snap, err := s.CreateSnapshot(context.Background(), "v", g.freeze(func() { atCut = mustRead(t, v.Path) }))
	if err != nil {
		t.Fatal(err)
	}
	// Into holes of the cut, and over its first data.
	for _, off := range []int64{20 << 20, 33<<20 + 12345, 63 << 20} {
		if err := w.write(bytes.Repeat([]byte{0xee}, 200<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.punch(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	waitCopied(t, s, snap.ID)
	sameBytes(t, "snapshot", mustRead(t, snap.Path), atCut)
	// What the cut held: 1 MiB + 100 KiB + 4 KiB of data, each copied in
	// chunks that cover only the data in them.
	want := int64(1<<20 + 100<<10 + 4096)
	if got := allocated(t, snap.Path); got < want || got > want+64<<10 {
		t.Errorf("snapshot allocates %d bytes; want the cut's %d data bytes (holes stay holes)", got, want)
	}
	f, err := os.Open(snap.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{20 << 20, 33 << 20, 63 << 20} {
		if d, _, err := nextData(f, off, off+256<<10); err != nil || d != off+256<<10 {
			t.Errorf("snapshot at %d MiB: data at %d (%v); want a hole, as the cut had", off>>20, d, err)
		}
	}
}

// TestSnapshotsCopyingAtOnceEachGetTheirCut: a second snapshot cut while
// the first copies; each region goes to each snapshot that lacks it.
func TestSnapshotsCopyingAtOnceEachGetTheirCut(t *testing.T) {
	t.Parallel()
	s := openCBW(t, t.TempDir(), 16<<20)
	v := mustCreate(t, s, "v", 8)
	writeAt(t, v.Path, 0, bytes.Repeat([]byte("A"), 8<<20))
	g := &gate{}
	w := openGuarded(t, s, v, g)
	var cut1, cut2 []byte
	s1, err := s.CreateSnapshot(context.Background(), "v", g.freeze(func() { cut1 = mustRead(t, v.Path) }))
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 8; i++ {
		w.write(bytes.Repeat([]byte("B"), 100<<10), i<<20+5000)
	}
	s2, err := s.CreateSnapshot(context.Background(), "v", g.freeze(func() { cut2 = mustRead(t, v.Path) }))
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Copying {
		t.Fatal("second snapshot is not copying")
	}
	for i := int64(0); i < 8; i++ {
		w.write(bytes.Repeat([]byte("C"), 300<<10), i<<20+3000)
	}
	waitCopied(t, s, s1.ID)
	waitCopied(t, s, s2.ID)
	sameBytes(t, "first snapshot", mustRead(t, s1.Path), cut1)
	sameBytes(t, "second snapshot", mustRead(t, s2.Path), cut2)
	if bytes.Equal(cut1, cut2) {
		t.Fatal("the two cuts are equal; the test proves nothing")
	}
}

// TestASnapshotStillCopyingCannotBeUsedYet: GET shows it with its
// progress; reading, cloning and deleting it are refused with a conflict
// that says to wait; once copied, all work.
func TestASnapshotStillCopyingCannotBeUsedYet(t *testing.T) {
	t.Parallel()
	s := openCBW(t, t.TempDir(), 4<<20)
	v := mustCreate(t, s, "v", 4)
	writeAt(t, v.Path, 0, bytes.Repeat([]byte("x"), 4<<20))
	mustCreate(t, s, "w", 1)
	ctx := context.Background()
	snap, err := s.CreateSnapshot(ctx, "v", noopFreeze)
	if err != nil {
		t.Fatal(err)
	}
	set, err := s.CreateSnapshotSet(ctx, SetRequest{Volumes: []string{"v", "w"}, Freeze: noopFreeze, Labels: map[string]string{"vm": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if !set.Copying || set.TotalBytes != 5<<20 || set.CopiedBytes >= set.TotalBytes {
		t.Fatalf("set right after its cut: copying %v, %d of %d bytes", set.Copying, set.CopiedBytes, set.TotalBytes)
	}
	got, err := s.GetSnapshot(snap.ID)
	if err != nil || !got.Copying || got.TotalBytes != 4<<20 {
		t.Fatalf("GetSnapshot while copying: %+v, %v", got, err)
	}
	if list, _ := s.ListSnapshots("v"); len(list) != 2 {
		t.Errorf("ListSnapshots while copying: %d snapshots, want 2", len(list))
	}
	if sets, _ := s.ListSnapshotSets(nil); len(sets) != 1 || !sets[0].Copying {
		t.Errorf("ListSnapshotSets while copying: %+v", sets)
	}
	// Labels may change meanwhile, and stay after the copy ends.
	if _, err := s.SetSnapshotSetLabels(ctx, set.ID, map[string]string{"vm": "b"}); err != nil {
		t.Errorf("relabel a set while it copies: %v", err)
	}
	for name, op := range map[string]func() error{
		"open":    func() error { _, _, err := s.OpenSnapshot(snap.ID); return err },
		"extents": func() error { _, _, err := s.SnapshotExtents(snap.ID); return err },
		"clone":   func() error { _, err := s.Clone(ctx, "c", Source{Snapshot: snap.ID}, 0, Access{}); return err },
		"clone (set)": func() error {
			_, err := s.Clone(ctx, "d", Source{Snapshot: set.Snapshots[0].ID}, 0, Access{})
			return err
		},
	} {
		err := op()
		if !errors.Is(err, ErrConflict) || !bytes.Contains([]byte(err.Error()), []byte("wait")) {
			t.Errorf("%s while copying: %v; want a conflict that says to wait", name, err)
		}
	}
	if err := s.DeleteSnapshot(ctx, set.Snapshots[0].ID); !errors.Is(err, ErrConflict) {
		t.Errorf("delete a snapshot of a set while it copies: %v; want a conflict (delete the set)", err)
	}
	waitCopied(t, s, snap.ID)
	for _, sn := range set.Snapshots {
		waitCopied(t, s, sn.ID)
	}
	after, err := s.GetSnapshotSet(set.ID)
	if err != nil || after.Copying || after.Labels["vm"] != "b" || after.CopiedBytes != after.TotalBytes {
		t.Fatalf("set after its copy: %+v, %v", after, err)
	}
	if _, err := s.Clone(ctx, "c", Source{Snapshot: snap.ID}, 0, Access{}); err != nil {
		t.Errorf("clone after the copy: %v", err)
	}
	if err := s.DeleteSnapshotSet(ctx, set.ID); err != nil {
		t.Errorf("delete the set after the copy: %v", err)
	}
}

// TestCloseCutsACopyShortAndDropsItsSnapshot: a stop mid-copy leaves
// neither the snapshot nor its file; the volume is untouched.
func TestCloseCutsACopyShortAndDropsItsSnapshot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{CopyBeforeWrite: true, NoReflink: true, CopyRate: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	v := mustCreate(t, s, "v", 8)
	writeAt(t, v.Path, 0, bytes.Repeat([]byte("x"), 8<<20))
	want := fileSum(t, v.Path)
	if _, err := s.CreateSnapshotSet(context.Background(), SetRequest{Volumes: []string{"v"}, Freeze: noopFreeze}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTestStore(t, dir, Options{})
	if sets, _ := s.ListSnapshotSets(nil); len(sets) != 0 {
		t.Errorf("sets after a stop mid-copy: %+v; want none", sets)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, snapshotsDir)); len(entries) != 0 {
		t.Errorf("snapshot files after a stop mid-copy: %v", entries)
	}
	if got := fileSum(t, v.Path); got != want {
		t.Errorf("volume changed by the stop: %s, want %s", got, want)
	}
}

// TestACrashDuringACopyDropsOnlyItsSnapshot crashes a copy-before-write
// snapshot and set at each of their steps, in the caller (a panic) or in
// the background copier (which then never goes on): a fresh Open drops
// what was being copied and shows the state before, volumes' data included.
func TestACrashDuringACopyDropsOnlyItsSnapshot(t *testing.T) {
	t.Parallel()
	ops := []struct {
		name  string
		steps []string
		run   func(s *Store) error
	}{
		{"take a snapshot", []string{"snapshot/copying", "copy/half", "snapshot/copied", "snapshot/ready"}, func(s *Store) error {
			_, err := s.CreateSnapshot(context.Background(), "base", noopFreeze)
			return err
		}},
		{"take a snapshot set", []string{"set/cut", "set/copying", "copy/half", "set/copied", "set/ready"}, func(s *Store) error {
			_, err := s.CreateSnapshotSet(context.Background(), SetRequest{Volumes: []string{"data", "base"}, Labels: map[string]string{"vm": "web"}, Freeze: noopFreeze})
			return err
		}},
	}
	for _, op := range ops {
		for _, step := range op.steps {
			t.Run(op.name+", crash after "+step, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				seed(t, dir)
				before := openTestStore(t, dir, Options{})
				oldState := describe(t, before)
				before.Close()
				s, err := Open(dir, Options{CopyBeforeWrite: true, NoReflink: true})
				if err != nil {
					t.Fatal(err)
				}
				reached := make(chan struct{})
				var once sync.Once
				s.crash = func(at string) {
					if at != step {
						return
					}
					once.Do(func() { close(reached) })
					if at == op.name || at == "snapshot/copying" || at == "set/copying" || at == "set/cut" {
						panic(crashed{at}) // in the caller
					}
					select {} // in the copier: it never goes on, as after a kill
				}
				func() {
					defer func() {
						if r := recover(); r != nil {
							if _, ok := r.(crashed); !ok {
								panic(r)
							}
						}
					}()
					op.run(s)
				}()
				select {
				case <-reached:
				case <-time.After(10 * time.Second):
					t.Fatalf("the operation did not reach step %s", step)
				}
				if step == "snapshot/ready" || step == "set/ready" {
					// The copy is done and recorded: the new state stays.
					s.db.Close()
					after := describe(t, openTestStore(t, dir, Options{}))
					if after == oldState {
						t.Errorf("a crash after the copy was recorded dropped it")
					}
					return
				}
				s.db.Close() // the crash: the copier's files and goroutine are left as they are
				after := describe(t, openTestStore(t, dir, Options{}))
				if after != oldState {
					t.Errorf("state after crash and reopen:\n%s\nwant the state before:\n%s", after, oldState)
				}
			})
		}
	}
}

// TestDeletingASnapshotStillCopyingStopsTheCopy: the delete waits for the
// copier to drop it; nothing is left, and writes go straight on.
func TestDeletingASnapshotStillCopyingStopsTheCopy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openCBW(t, dir, 1<<20) // 8 s of copying
	v := mustCreate(t, s, "v", 8)
	writeAt(t, v.Path, 0, bytes.Repeat([]byte("x"), 8<<20))
	ctx := context.Background()
	snap, err := s.CreateSnapshot(ctx, "v", noopFreeze)
	if err != nil {
		t.Fatal(err)
	}
	set, err := s.CreateSnapshotSet(ctx, SetRequest{Volumes: []string{"v"}, Freeze: noopFreeze})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.DeleteSnapshot(ctx, snap.ID); err != nil {
		t.Fatalf("delete a snapshot while it copies: %v", err)
	}
	if err := s.DeleteSnapshotSet(ctx, set.ID); err != nil {
		t.Fatalf("delete a set while it copies: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the deletes took %s; they should stop the copies, not wait for them", took)
	}
	if _, err := s.GetSnapshot(snap.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("snapshot after its delete: %v", err)
	}
	if _, err := s.GetSnapshotSet(set.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("set after its delete: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, snapshotsDir)); len(entries) != 0 {
		t.Errorf("snapshot files after the deletes: %v", entries)
	}
	if p := s.copies.guard("v").jobs.Load(); p != nil {
		t.Errorf("%d copy jobs still on the volume's guard", len(*p))
	}
}

// TestAVolumeReplacedOrDeletedMidCopyLeavesTheSnapshotItsCut: an upload
// (a new file renamed over the volume's) or a delete while the copy runs;
// the copier reads the file as it was at the cut, so the snapshot is the
// cut all the same.
func TestAVolumeReplacedOrDeletedMidCopyLeavesTheSnapshotItsCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(s *Store) error
	}{
		{"upload", func(s *Store) error {
			return s.WriteImage(context.Background(), "v", bytes.NewReader(bytes.Repeat([]byte("new!"), 1<<20)), FormatRaw)
		}},
		{"delete", func(s *Store) error { return s.Delete(context.Background(), "v") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openCBW(t, t.TempDir(), 8<<20)
			v := mustCreate(t, s, "v", 8)
			writeAt(t, v.Path, 0, bytes.Repeat([]byte("old!"), 2<<20))
			atCut := mustRead(t, v.Path)
			snap, err := s.CreateSnapshot(context.Background(), "v", noopFreeze)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.change(s); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.GetSnapshot(snap.ID); !got.Copying {
				t.Fatal("the copy was over before the change; the test proves nothing")
			}
			waitCopied(t, s, snap.ID)
			sameBytes(t, "snapshot", mustRead(t, snap.Path), atCut)
		})
	}
}
