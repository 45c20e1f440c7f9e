package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestANewVolumeIsASparseFileOfTheRequestedSize(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "web-1", 64)
	fi, err := os.Stat(v.Path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Size(), int64(64*MiB); got != want {
		t.Errorf("file size = %d, want %d", got, want)
	}
	if got := allocated(t, v.Path); got > 64<<10 {
		t.Errorf("allocated = %d bytes, want a sparse file (at most 64 KiB)", got)
	}
	if got, want := filepath.Dir(v.Path), filepath.Join(s.Dir(), volumesDir); got != want {
		t.Errorf("volume file is in %s, want %s", got, want)
	}
}

func TestVolumesAreListedByNameAndSurviveReopening(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	access := Access{
		Initiators: []string{"iqn.2008-11.org.linux-kvm:vm1"},
		CHAP:       &wire.CHAP{User: "alice", Secret: "twelve-chars", MutualUser: "target", MutualSecret: "another-secret"},
	}
	for _, name := range []string{"b", "a", "c"} {
		if _, err := s.Create(context.Background(), name, 1, access); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openTestStore(t, dir, Options{})
	vols, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	if got, want := names, []string{"a", "b", "c"}; !equalStrings(got, want) {
		t.Errorf("List names = %v, want %v", got, want)
	}
	got, err := s.Get("b")
	if err != nil {
		t.Fatal(err)
	}
	if got.Access.CHAP == nil || *got.Access.CHAP != *access.CHAP || !equalStrings(got.Access.Initiators, access.Initiators) {
		t.Errorf("Get(b).Access = %+v, want %+v", got.Access, access)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCreatingAnExistingNameFailsAndKeepsTheVolume(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "db", 2)
	writeAt(t, v.Path, 0, []byte("keep me"))
	_, err := s.Create(context.Background(), "db", 4, Access{})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Create error = %v, want ErrExists", err)
	}
	if got := string(readAt(t, v.Path, 0, 7)); got != "keep me" {
		t.Errorf("content after failed create = %q, want %q", got, "keep me")
	}
	got, _ := s.Get("db")
	if got.SizeMiB != 2 {
		t.Errorf("size after failed create = %d, want 2", got.SizeMiB)
	}
}

func TestGrowingExtendsTheFileAndKeepsTheData(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "data", 1)
	writeAt(t, v.Path, 100, []byte("hello"))
	v, err := s.Grow(context.Background(), "data", 3)
	if err != nil {
		t.Fatal(err)
	}
	if v.SizeMiB != 3 {
		t.Errorf("SizeMiB = %d, want 3", v.SizeMiB)
	}
	fi, _ := os.Stat(v.Path)
	if fi.Size() != 3*MiB {
		t.Errorf("file size = %d, want %d", fi.Size(), 3*MiB)
	}
	if got := string(readAt(t, v.Path, 100, 5)); got != "hello" {
		t.Errorf("data after grow = %q, want hello", got)
	}
}

func TestShrinkingIsRefusedAndChangesNothing(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "data", 4)
	before := describe(t, s)
	_, err := s.Grow(context.Background(), "data", 2)
	if !errors.Is(err, ErrShrink) {
		t.Fatalf("Grow to smaller error = %v, want ErrShrink", err)
	}
	if after := describe(t, s); after != before {
		t.Errorf("store changed by a refused shrink:\n got %s\nwant %s", after, before)
	}
}

func TestASizeAboveTheFreeSpaceIsRefused(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	free, err := s.Free()
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(context.Background(), "huge", free/MiB+1024, Access{})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Create above free space error = %v, want ErrNoSpace", err)
	}
	if got := describe(t, s); got != "" {
		t.Errorf("store after refused create = %q, want empty", got)
	}
}

func TestDeletingRemovesRecordAndFileButKeepsSnapshots(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "old", 1)
	snap := mustSnapshot(t, s, "old")
	if err := s.Delete(context.Background(), "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete error = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(v.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backing file after Delete: stat error = %v, want not-exist", err)
	}
	if _, err := s.GetSnapshot(snap.ID); err != nil {
		t.Errorf("snapshot %s after deleting its volume: %v, want it kept", snap.ID, err)
	}
	if err := s.Delete(context.Background(), "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete error = %v, want ErrNotFound", err)
	}
}

func TestUpdatingAccessReplacesInitiatorsAndCHAP(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "v", 1)
	want := Access{Initiators: []string{"iqn.2026-11.io.drover:host-a", "iqn.2026-11.io.drover:host-b"}, CHAP: &wire.CHAP{User: "u", Secret: "0123456789ab"}}
	got, err := s.SetAccess(context.Background(), "v", want)
	if err != nil {
		t.Fatal(err)
	}
	if !equalStrings(got.Access.Initiators, want.Initiators) || *got.Access.CHAP != *want.CHAP {
		t.Errorf("Access = %+v, want %+v", got.Access, want)
	}
	bad := Access{CHAP: &wire.CHAP{User: "u", Secret: "short"}}
	if _, err := s.SetAccess(context.Background(), "v", bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetAccess with a 5-character secret error = %v, want ErrInvalid", err)
	}
}

func TestSnapshotsAreFrozenCopiesWhetherReflinkedOrCopied(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		opts       Options
		fakeClone  bool
		wantMethod string
	}{
		// /work and /tmp are ext4 here: FICLONE fails with EOPNOTSUPP and
		// the store falls back to copying.
		{name: "reflink attempt on a filesystem without reflinks falls back to a copy", wantMethod: MethodCopy},
		{name: "NoReflink forces the copy path", opts: Options{NoReflink: true}, wantMethod: MethodCopy},
		{name: "a filesystem that clones takes the reflink path", fakeClone: true, wantMethod: MethodReflink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTestStore(t, t.TempDir(), tc.opts)
			if tc.fakeClone {
				// Stands in for FICLONE: same observable result, a full copy.
				s.reflink = func(dst, src *os.File) error {
					fi, _ := src.Stat()
					return sparseCopy(context.Background(), dst, src, fi.Size())
				}
			}
			v := mustCreate(t, s, "vm", 8)
			writeAt(t, v.Path, 0, []byte("before"))
			writeAt(t, v.Path, 5*MiB, []byte("far away"))
			snap := mustSnapshot(t, s, "vm")
			writeAt(t, v.Path, 0, []byte("AFTER!"))

			if snap.Method != tc.wantMethod {
				t.Errorf("Method = %q, want %q", snap.Method, tc.wantMethod)
			}
			if got := string(readAt(t, snap.Path, 0, 6)); got != "before" {
				t.Errorf("snapshot at 0 = %q, want %q", got, "before")
			}
			if got := string(readAt(t, snap.Path, 5*MiB, 8)); got != "far away" {
				t.Errorf("snapshot at 5 MiB = %q, want %q", got, "far away")
			}
			if got := allocated(t, snap.Path); got > 1*MiB {
				t.Errorf("snapshot allocates %d bytes, want holes kept (at most 1 MiB)", got)
			}
			list, err := s.ListSnapshots("vm")
			if err != nil || len(list) != 1 || list[0].ID != snap.ID {
				t.Errorf("ListSnapshots(vm) = %v, %v; want [%s]", list, err, snap.ID)
			}
		})
	}
}

// TestReflinkOnARealReflinkFilesystem takes a snapshot on XFS with reflinks:
// in DROVER_REFLINK_DIR when set, otherwise, with DROVER_REFLINK=1 (make
// test sets it), on an XFS image it makes and loop-mounts itself.
func TestReflinkOnARealReflinkFilesystem(t *testing.T) {
	s := openTestStore(t, reflinkDir(t), Options{})
	v := mustCreate(t, s, "vm", 8)
	path := v.Path
	before := bytes.Repeat([]byte("before-snapshot!"), 4096)
	if err := os.WriteFile(path, before, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 8<<20); err != nil {
		t.Fatal(err)
	}
	snap := mustSnapshot(t, s, "vm")
	if snap.Method != MethodReflink {
		t.Errorf("Method = %q, want %q", snap.Method, MethodReflink)
	}
	// Writing to the volume after the snapshot must not show in the snapshot.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("X"), 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, _, err := s.OpenSnapshot(snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, len(before))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, before) {
		t.Errorf("snapshot changed after a write to its volume: first bytes %q, want %q", got[:32], before[:32])
	}
}

// reflinkDir returns a fresh directory on a filesystem with reflinks:
// under DROVER_REFLINK_DIR when set, otherwise, with DROVER_REFLINK=1, on an
// XFS image loop-mounted for the test. Without either it skips the test.
func reflinkDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("DROVER_REFLINK_DIR")
	if dir == "" {
		if os.Getenv("DROVER_REFLINK") != "1" {
			t.Skip("set DROVER_REFLINK=1 (root, xfsprogs) or DROVER_REFLINK_DIR to a directory on xfs or btrfs to run")
		}
		dir = mountXFS(t, 4<<30) // sparse; room for the benchmark's 2 GiB of volumes
	}
	d, err := os.MkdirTemp(dir, "store-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// mountXFS makes a small XFS filesystem with reflinks in an image file and
// loop-mounts it for the test's lifetime.
func mountXFS(t testing.TB, size int64) string {
	t.Helper()
	tmp := t.TempDir()
	img, mnt := filepath.Join(tmp, "xfs.img"), filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"mkfs.xfs", "-q", "-m", "reflink=1", img},
		{"mount", "-o", "loop", img, mnt},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

func TestSnapshotIDsAreURLSafeAndNeverReused(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "vm", 1)
	a := mustSnapshot(t, s, "vm")
	if err := s.DeleteSnapshot(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	b := mustSnapshot(t, s, "vm")
	if a.ID == b.ID {
		t.Errorf("snapshot id %q was reused after delete", a.ID)
	}
	for _, id := range []string{a.ID, b.ID} {
		if err := CheckSnapshotID(id); err != nil {
			t.Errorf("CheckSnapshotID(%q) = %v, want nil", id, err)
		}
	}
	if _, err := s.GetSnapshot(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSnapshot(deleted) error = %v, want ErrNotFound", err)
	}
}

func TestSnapshotOfAMissingVolumeFails(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	if _, err := s.CreateSnapshot(context.Background(), "ghost", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("CreateSnapshot(ghost) error = %v, want ErrNotFound", err)
	}
	if got := describe(t, s); got != "" {
		t.Errorf("store = %q, want empty", got)
	}
}

func TestASnapshotIsCutWhileItsVolumeIsFrozen(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "vm", 4)
	writeAt(t, v.Path, 0, []byte("before"))
	f := &recordingFreeze{then: func() { writeAt(t, v.Path, 0, []byte("AFTER!")) }}
	snap, err := s.CreateSnapshot(context.Background(), "vm", f.freeze)
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if f.froze != 1 || f.thawed != 1 {
		t.Errorf("freeze called %d times, thaw %d times; want 1 and 1", f.froze, f.thawed)
	}
	if got := string(readAt(t, snap.Path, 0, 6)); got != "before" {
		t.Errorf("snapshot = %q, want the content from before the thaw", got)
	}
	if snap.Set != "" || snap.Method != MethodCopy {
		t.Errorf("snapshot = %+v, want one of no set, copied", snap)
	}

	g := &recordingFreeze{}
	if _, err := s.CreateSnapshot(context.Background(), "ghost", g.freeze); !errors.Is(err, ErrNotFound) || g.froze != 0 {
		t.Errorf("snapshot of a missing volume: error %v after %d freezes, want ErrNotFound before any", err, g.froze)
	}
}

func TestASnapshotWhoseFreezeFailsIsNotKept(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		freeze recordingFreeze
		inMsg  string
	}{
		{"a freeze that fails", recordingFreeze{freezeErr: errors.New("writes still running")}, "writes still running"},
		{"a freeze that runs out during the cut", recordingFreeze{expire: true, thawErr: errors.New("held too long")}, "held too long"},
		{"a freeze that did not last", recordingFreeze{thawErr: errors.New("held too long")}, "held too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTestStore(t, t.TempDir(), Options{})
			mustCreate(t, s, "vm", 1)
			before := describe(t, s)
			f := tc.freeze
			if _, err := s.CreateSnapshot(context.Background(), "vm", f.freeze); err == nil || !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("error = %v, want one containing %q", err, tc.inMsg)
			}
			if f.froze != 1 || (f.freezeErr == nil && f.thawed != 1) {
				t.Errorf("froze %d, thawed %d times; want 1 and, after a freeze, 1", f.froze, f.thawed)
			}
			if after := describe(t, s); after != before {
				t.Errorf("store changed:\n got %s\nwant %s", after, before)
			}
		})
	}
}

func TestCloningCopiesAVolumeOrASnapshotIntoANewVolume(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "gold", 2)
	writeAt(t, v.Path, 4096, []byte("golden"))
	snap := mustSnapshot(t, s, "gold")
	writeAt(t, v.Path, 4096, []byte("edited"))

	for _, tc := range []struct {
		name    string
		src     Source
		size    int64
		want    string
		wantMiB int64
	}{
		{"from-volume", Source{Volume: "gold"}, 0, "edited", 2},
		{"from-snapshot", Source{Snapshot: snap.ID}, 0, "golden", 2},
		{"bigger", Source{Snapshot: snap.ID}, 5, "golden", 5},
	} {
		c, err := s.Clone(context.Background(), tc.name, tc.src, tc.size, Access{})
		if err != nil {
			t.Fatalf("Clone %s: %v", tc.name, err)
		}
		if got := string(readAt(t, c.Path, 4096, 6)); got != tc.want {
			t.Errorf("clone %s content = %q, want %q", tc.name, got, tc.want)
		}
		if c.SizeMiB != tc.wantMiB {
			t.Errorf("clone %s size = %d, want %d", tc.name, c.SizeMiB, tc.wantMiB)
		}
		if c.Source == nil || *c.Source != tc.src {
			t.Errorf("clone %s source = %v, want %v", tc.name, c.Source, tc.src)
		}
	}
	before := describe(t, s)
	for _, tc := range []struct {
		name string
		src  Source
		size int64
		want error
	}{
		{"missing-volume", Source{Volume: "nope"}, 0, ErrNotFound},
		{"missing-snapshot", Source{Snapshot: "nope.1"}, 0, ErrNotFound},
		{"smaller", Source{Volume: "gold"}, 1, ErrInvalid},
		{"both", Source{Volume: "gold", Snapshot: snap.ID}, 0, ErrInvalid},
		{"gold", Source{Volume: "from-volume"}, 0, ErrExists},
	} {
		if _, err := s.Clone(context.Background(), tc.name, tc.src, tc.size, Access{}); !errors.Is(err, tc.want) {
			t.Errorf("Clone %s error = %v, want %v", tc.name, err, tc.want)
		}
	}
	if after := describe(t, s); after != before {
		t.Errorf("refused clones changed the store:\n got %s\nwant %s", after, before)
	}
}

func TestSecondOpenOfADataDirectoryIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openTestStore(t, dir, Options{})
	_, err := Open(dir, Options{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("in use")) {
		t.Errorf("second Open error = %v, want one saying the directory is in use", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "web", 1)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	// The second Close released nothing twice: the store opens again (the
	// database's lock is free) and works.
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after two Closes: got %v, want nil", err)
	}
	defer s.Close()
	if _, err := s.Get("web"); err != nil {
		t.Errorf("Get(web) after reopening: got %v, want the volume", err)
	}
	mustCreate(t, s, "db", 1)
}

func TestConcurrentCreatesOfOneNameLetExactlyOneWin(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	const n = 8
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := s.Create(context.Background(), "race", 1, Access{})
			errs <- err
		}()
	}
	wins := 0
	for i := 0; i < n; i++ {
		err := <-errs
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrExists):
			t.Errorf("Create error = %v, want nil or ErrExists", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d creates succeeded, want exactly 1", wins)
	}
	describe(t, s)
}
