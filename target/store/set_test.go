package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// recordingFreeze is a Freeze that notes its calls; thaw runs then before
// it returns, standing in for the writes the hold kept back.
type recordingFreeze struct {
	froze, thawed int
	then          func()
	freezeErr     error
	thawErr       error
	expire        bool // the freeze's context ends at once, as at its time limit
}

func (f *recordingFreeze) freeze(ctx context.Context) (context.Context, func() error, error) {
	f.froze++
	if f.freezeErr != nil {
		return nil, nil, f.freezeErr
	}
	cut, cancel := context.WithCancel(ctx)
	if f.expire {
		cancel()
	}
	return cut, func() error {
		defer cancel()
		f.thawed++
		time.Sleep(time.Millisecond) // a measurable hold
		if f.then != nil {
			f.then()
		}
		return f.thawErr
	}, nil
}

func TestASnapshotSetCutsEveryVolumeWhileTheyAreFrozen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		opts       Options
		fakeClone  bool
		wantMethod string
	}{
		{name: "a filesystem without reflinks copies", wantMethod: MethodCopy},
		{name: "NoReflink copies", opts: Options{NoReflink: true}, wantMethod: MethodCopy},
		{name: "a filesystem that clones reflinks", fakeClone: true, wantMethod: MethodReflink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openTestStore(t, t.TempDir(), tc.opts)
			if tc.fakeClone {
				s.reflink = func(dst, src *os.File) error {
					fi, _ := src.Stat()
					return sparseCopy(context.Background(), dst, src, fi.Size())
				}
			}
			boot, data := mustCreate(t, s, "boot", 8), mustCreate(t, s, "data", 4)
			writeAt(t, boot.Path, 0, []byte("boot before"))
			writeAt(t, data.Path, 3*MiB, []byte("data before"))
			f := &recordingFreeze{then: func() {
				writeAt(t, boot.Path, 0, []byte("BOOT AFTER!"))
				writeAt(t, data.Path, 3*MiB, []byte("DATA AFTER!"))
			}}
			set, err := s.CreateSnapshotSet(context.Background(), SetRequest{
				Volumes:     []string{"data", "boot"},
				Labels:      map[string]string{"drover.io/vm": "web-1", "kind": "backup"},
				Attachments: map[string][]byte{"domain.xml": []byte("<domain type='kvm'/>"), "a.txt": nil},
				Freeze:      f.freeze,
			})
			if err != nil {
				t.Fatalf("CreateSnapshotSet: %v", err)
			}
			if f.froze != 1 || f.thawed != 1 {
				t.Errorf("freeze called %d times, thaw %d times; want 1 and 1", f.froze, f.thawed)
			}
			if !strings.HasPrefix(set.ID, "set-") || CheckSetID(set.ID) != nil {
				t.Errorf("ID = %q, want set-<number>", set.ID)
			}
			if set.Method != tc.wantMethod || set.Hold <= 0 {
				t.Errorf("Method = %q, Hold = %s; want %q and a positive hold", set.Method, set.Hold, tc.wantMethod)
			}
			if want := []string{"a.txt", "domain.xml"}; !reflect.DeepEqual(set.Attachments, want) {
				t.Errorf("Attachments = %v, want %v", set.Attachments, want)
			}
			if len(set.Snapshots) != 2 || set.Snapshots[0].Volume != "data" || set.Snapshots[1].Volume != "boot" {
				t.Fatalf("Snapshots = %+v, want data's then boot's", set.Snapshots)
			}
			for _, sn := range set.Snapshots {
				if sn.Set != set.ID || sn.Method != tc.wantMethod {
					t.Errorf("snapshot %s: Set %q Method %q, want %q and %q", sn.ID, sn.Set, sn.Method, set.ID, tc.wantMethod)
				}
			}
			if got := string(readAt(t, set.Snapshots[1].Path, 0, 11)); got != "boot before" {
				t.Errorf("boot's snapshot = %q, want the content from before the thaw", got)
			}
			if got := string(readAt(t, set.Snapshots[0].Path, 3*MiB, 11)); got != "data before" {
				t.Errorf("data's snapshot = %q, want the content from before the thaw", got)
			}
			if got := allocated(t, set.Snapshots[1].Path); got > MiB {
				t.Errorf("boot's snapshot allocates %d bytes, want holes kept", got)
			}
			got, err := s.GetSnapshotSet(set.ID)
			if err != nil || !reflect.DeepEqual(got, set) {
				t.Errorf("GetSnapshotSet = %+v, %v; want %+v", got, err, set)
			}
			b, err := s.SnapshotSetAttachment(set.ID, "domain.xml")
			if err != nil || string(b) != "<domain type='kvm'/>" {
				t.Errorf("attachment domain.xml = %q, %v", b, err)
			}
		})
	}
}

func TestBadSnapshotSetRequestsAreRefusedAndChangeNothing(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "a", 1)
	mustCreate(t, s, "b", 1)
	before := describe(t, s)
	many := func(n int, f func(i int) string) []string {
		var out []string
		for i := 0; i < n; i++ {
			out = append(out, f(i))
		}
		return out
	}
	manyLabels := map[string]string{}
	for i := 0; i <= MaxLabels; i++ {
		manyLabels[fmt.Sprintf("k%d", i)] = "v"
	}
	manyAttachments := map[string][]byte{}
	for i := 0; i <= MaxAttachments; i++ {
		manyAttachments[fmt.Sprintf("f%d.txt", i)] = nil
	}
	for _, tc := range []struct {
		name   string
		req    SetRequest
		kind   error
		inMsg  string
		froze  bool
		freeze recordingFreeze
	}{
		{name: "no volumes", req: SetRequest{}, kind: ErrInvalid, inMsg: "volumes is empty"},
		{name: "65 volumes", req: SetRequest{Volumes: many(65, func(i int) string { return fmt.Sprintf("v%d", i) })}, kind: ErrInvalid, inMsg: "limit is 64"},
		{name: "a volume listed twice", req: SetRequest{Volumes: []string{"a", "b", "a"}}, kind: ErrInvalid, inMsg: `volumes[2]: "a" is listed twice`},
		{name: "a bad volume name", req: SetRequest{Volumes: []string{"a", "B"}}, kind: ErrInvalid, inMsg: "volumes[1]"},
		{name: "a missing volume", req: SetRequest{Volumes: []string{"a", "ghost", "b"}}, kind: ErrNotFound, inMsg: `volumes[1]: volume "ghost" does not exist`},
		{name: "33 labels", req: SetRequest{Volumes: []string{"a"}, Labels: manyLabels}, kind: ErrInvalid, inMsg: "limit is 32"},
		{name: "an uppercase label key", req: SetRequest{Volumes: []string{"a"}, Labels: map[string]string{"VM": "x"}}, kind: ErrInvalid, inMsg: `labels: key "VM"`},
		{name: "an empty label key", req: SetRequest{Volumes: []string{"a"}, Labels: map[string]string{"": "x"}}, kind: ErrInvalid, inMsg: "labels: key"},
		{name: "a label key of 64 characters", req: SetRequest{Volumes: []string{"a"}, Labels: map[string]string{strings.Repeat("k", 64): "x"}}, kind: ErrInvalid, inMsg: "is 64 characters"},
		{name: "a label value of 257 bytes", req: SetRequest{Volumes: []string{"a"}, Labels: map[string]string{"k": strings.Repeat("v", 257)}}, kind: ErrInvalid, inMsg: "257 bytes"},
		{name: "an attachment name with a slash", req: SetRequest{Volumes: []string{"a"}, Attachments: map[string][]byte{"../x": nil}}, kind: ErrInvalid, inMsg: "attachments: name"},
		{name: "an attachment name starting with a dot", req: SetRequest{Volumes: []string{"a"}, Attachments: map[string][]byte{".x": nil}}, kind: ErrInvalid, inMsg: "attachments: name"},
		{name: "17 attachments", req: SetRequest{Volumes: []string{"a"}, Attachments: manyAttachments}, kind: ErrInvalid, inMsg: "limit is 16"},
		{name: "attachments over 1 MiB", req: SetRequest{Volumes: []string{"a"}, Attachments: map[string][]byte{"x": make([]byte, MiB), "y": {1}}}, kind: ErrInvalid, inMsg: "1048577 bytes"},
		{name: "a freeze that fails", req: SetRequest{Volumes: []string{"a", "b"}}, freeze: recordingFreeze{freezeErr: errors.New("writes still running")}, froze: true, inMsg: "writes still running"},
		{name: "a freeze that runs out during the cut", req: SetRequest{Volumes: []string{"a", "b"}}, freeze: recordingFreeze{expire: true, thawErr: errors.New("held too long")}, froze: true, inMsg: "held too long"},
		{name: "a freeze that did not last", req: SetRequest{Volumes: []string{"a", "b"}}, freeze: recordingFreeze{thawErr: errors.New("held too long")}, froze: true, inMsg: "held too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.freeze
			tc.req.Freeze = f.freeze
			_, err := s.CreateSnapshotSet(context.Background(), tc.req)
			if err == nil || (tc.kind != nil && !errors.Is(err, tc.kind)) || !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("error = %v, want %v containing %q", err, tc.kind, tc.inMsg)
			}
			if tc.froze != (f.froze > 0) {
				t.Errorf("froze %d times, want froze=%v", f.froze, tc.froze)
			}
			if f.froze > 0 && f.freezeErr == nil && f.thawed != 1 {
				t.Errorf("thawed %d times after freezing, want 1", f.thawed)
			}
			if after := describe(t, s); after != before {
				t.Errorf("store changed:\n got %s\nwant %s", after, before)
			}
		})
	}
}

func TestAPanicDuringTheCutStillThaws(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		step string
		cut  func(s *Store, f Freeze)
	}{
		{"set/frozen", func(s *Store, f Freeze) {
			s.CreateSnapshotSet(context.Background(), SetRequest{Volumes: []string{"a"}, Freeze: f})
		}},
		{"snapshot/frozen", func(s *Store, f Freeze) { s.CreateSnapshot(context.Background(), "a", f) }},
	} {
		s := openTestStore(t, t.TempDir(), Options{})
		mustCreate(t, s, "a", 1)
		s.crash = func(step string) {
			if step == tc.step {
				panic("boom")
			}
		}
		f := &recordingFreeze{}
		func() {
			defer func() { recover() }()
			tc.cut(s, f.freeze)
		}()
		if f.froze != 1 || f.thawed != 1 {
			t.Errorf("after a panic at %s: froze %d, thawed %d; want 1 and 1", tc.step, f.froze, f.thawed)
		}
	}
}

func TestSnapshotSetsAreListedNewestFirstAndFilteredByLabels(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "web", 1)
	mustCreate(t, s, "db", 1)
	s1 := mustCreateSet(t, s, SetRequest{Volumes: []string{"web"}, Labels: map[string]string{"vm": "web", "env": "prod"}})
	s2 := mustCreateSet(t, s, SetRequest{Volumes: []string{"db"}, Labels: map[string]string{"vm": "db", "env": "prod"}})
	s3 := mustCreateSet(t, s, SetRequest{Volumes: []string{"web", "db"}, Labels: map[string]string{"vm": "web"}})
	for _, tc := range []struct {
		match map[string]string
		want  []string
	}{
		{nil, []string{s3.ID, s2.ID, s1.ID}},
		{map[string]string{"vm": "web"}, []string{s3.ID, s1.ID}},
		{map[string]string{"vm": "web", "env": "prod"}, []string{s1.ID}},
		{map[string]string{"env": ""}, nil},
		{map[string]string{"vm": "mail"}, nil},
	} {
		sets, err := s.ListSnapshotSets(tc.match)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, set := range sets {
			got = append(got, set.ID)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListSnapshotSets(%v) = %v, want %v", tc.match, got, tc.want)
		}
	}
	if _, err := s.ListSnapshotSets(map[string]string{"Bad": "x"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ListSnapshotSets with a bad key: %v, want ErrInvalid", err)
	}
}

func TestASetsSnapshotsGoOnlyWithTheSetAndOutliveTheirVolumes(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "vm", 2)
	writeAt(t, v.Path, 0, []byte("precious"))
	mustCreate(t, s, "other", 1)
	set := mustCreateSet(t, s, SetRequest{Volumes: []string{"vm", "other"}, Attachments: map[string][]byte{"domain.xml": []byte("<domain/>")}})
	sn := set.Snapshots[0]

	if err := s.DeleteSnapshot(context.Background(), sn.ID); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "delete the set") {
		t.Errorf("DeleteSnapshot of a set's snapshot: %v, want ErrConflict telling to delete the set", err)
	}
	if err := s.Delete(context.Background(), "vm"); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshotSet(set.ID)
	if err != nil || len(got.Snapshots) != 2 {
		t.Fatalf("set after deleting its volume = %+v, %v; want it whole", got, err)
	}
	restored, err := s.Clone(context.Background(), "restored", Source{Snapshot: sn.ID}, 0, Access{})
	if err != nil || string(readAt(t, restored.Path, 0, 8)) != "precious" {
		t.Fatalf("restore from a set's snapshot: %v", err)
	}

	if err := s.DeleteSnapshotSet(context.Background(), set.ID); err != nil {
		t.Fatal(err)
	}
	for _, sn := range set.Snapshots {
		if _, err := s.GetSnapshot(sn.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("snapshot %s after deleting its set: %v, want ErrNotFound", sn.ID, err)
		}
		if _, err := os.Stat(sn.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("file of snapshot %s after deleting its set: %v, want it gone", sn.ID, err)
		}
	}
	if _, err := s.SnapshotSetAttachment(set.ID, "domain.xml"); !errors.Is(err, ErrNotFound) {
		t.Errorf("attachment after deleting the set: %v, want ErrNotFound", err)
	}
	if err := s.DeleteSnapshotSet(context.Background(), set.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteSnapshotSet: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"set-0", "set-x", "set-01", "1", "web.1"} {
		if err := s.DeleteSnapshotSet(context.Background(), id); !errors.Is(err, ErrInvalid) {
			t.Errorf("DeleteSnapshotSet(%q): %v, want ErrInvalid", id, err)
		}
	}
	describe(t, s)
}

func TestSnapshotExtentsListTheDataAndSkipTheHoles(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "vm", 8)
	empty := mustSnapshot(t, s, "vm")
	block := make([]byte, 4096)
	for i := range block {
		block[i] = 1
	}
	writeAt(t, v.Path, 0, block)
	writeAt(t, v.Path, 4096, block) // adjacent: one extent
	writeAt(t, v.Path, 5*MiB, []byte("far"))
	writeAt(t, v.Path, 8*MiB-4096, block)
	snap := mustSnapshot(t, s, "vm")
	for _, tc := range []struct {
		id   string
		want []Extent
	}{
		{empty.ID, []Extent{}},
		{snap.ID, []Extent{{0, 8192}, {5 * MiB, 4096}, {8*MiB - 4096, 4096}}},
	} {
		size, got, err := s.SnapshotExtents(tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if size != 8*MiB || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SnapshotExtents(%s) = %d, %v; want %d, %v", tc.id, size, got, 8*MiB, tc.want)
		}
	}
	if _, _, err := s.SnapshotExtents("vm.99"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SnapshotExtents of a missing snapshot: %v, want ErrNotFound", err)
	}
}

// TestASnapshotSetReflinksOnARealReflinkFilesystem cuts a set on XFS with
// reflinks (see reflinkDir): every snapshot shares blocks, and writes after
// the thaw do not show in them.
func TestASnapshotSetReflinksOnARealReflinkFilesystem(t *testing.T) {
	s := openTestStore(t, reflinkDir(t), Options{})
	a, b := mustCreate(t, s, "a", 8), mustCreate(t, s, "b", 8)
	before := []byte(strings.Repeat("before-the-cut!!", 4096))
	writeAt(t, a.Path, 0, before)
	writeAt(t, b.Path, 4*MiB, before)
	f := &recordingFreeze{then: func() {
		writeAt(t, a.Path, 0, []byte("AFTER"))
		writeAt(t, b.Path, 4*MiB, []byte("AFTER"))
	}}
	set := mustCreateSet(t, s, SetRequest{Volumes: []string{"a", "b"}, Freeze: f.freeze})
	if set.Method != MethodReflink {
		t.Errorf("Method = %q, want %q", set.Method, MethodReflink)
	}
	for i, off := range []int64{0, 4 * MiB} {
		sn := set.Snapshots[i]
		if sn.Method != MethodReflink {
			t.Errorf("snapshot %s: Method = %q, want %q", sn.ID, sn.Method, MethodReflink)
		}
		if got := readAt(t, sn.Path, off, len(before)); string(got) != string(before) {
			t.Errorf("snapshot %s at %d = %q..., want the content from before the thaw", sn.ID, off, got[:16])
		}
	}
}

func TestASetsLabelsAreReplacedAndFoundByTheirNewValues(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "web", 1)
	set := mustCreateSet(t, s, SetRequest{Volumes: []string{"web"}, Labels: map[string]string{"vm": "web", "kind": "nightly"}, Attachments: map[string][]byte{"domain.xml": []byte("<domain/>")}})
	other := mustCreateSet(t, s, SetRequest{Volumes: []string{"web"}, Labels: map[string]string{"vm": "web"}})

	got, err := s.SetSnapshotSetLabels(context.Background(), set.ID, map[string]string{"vm": "web", "kind": "keep", "drover.io/note": "before upgrade"})
	if err != nil {
		t.Fatalf("SetSnapshotSetLabels: %v", err)
	}
	want := set
	want.Labels = map[string]string{"vm": "web", "kind": "keep", "drover.io/note": "before upgrade"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SetSnapshotSetLabels = %+v, want the set with only its labels changed: %+v", got, want)
	}
	if again, err := s.GetSnapshotSet(set.ID); err != nil || !reflect.DeepEqual(again, want) {
		t.Errorf("GetSnapshotSet after relabelling = %+v, %v; want %+v", again, err, want)
	}
	if b, err := s.SnapshotSetAttachment(set.ID, "domain.xml"); err != nil || string(b) != "<domain/>" {
		t.Errorf("attachment after relabelling = %q, %v; want it untouched", b, err)
	}
	for _, tc := range []struct {
		match map[string]string
		want  []string
	}{
		{map[string]string{"kind": "keep"}, []string{set.ID}},
		{map[string]string{"kind": "nightly"}, nil},
		{map[string]string{"vm": "web"}, []string{other.ID, set.ID}},
	} {
		var ids []string
		sets, err := s.ListSnapshotSets(tc.match)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range sets {
			ids = append(ids, x.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("ListSnapshotSets(%v) after relabelling = %v, want %v", tc.match, ids, tc.want)
		}
	}

	got, err = s.SetSnapshotSetLabels(context.Background(), set.ID, nil)
	if err != nil || len(got.Labels) != 0 || got.Labels == nil {
		t.Errorf("SetSnapshotSetLabels(nil) = %v, %v; want an empty, non-nil map", got.Labels, err)
	}
	if sets, _ := s.ListSnapshotSets(map[string]string{"vm": "web"}); len(sets) != 1 || sets[0].ID != other.ID {
		t.Errorf("after removing every label, ListSnapshotSets(vm=web) = %+v, want only %s", sets, other.ID)
	}
}

func TestBadLabelChangesAreRefusedAndChangeNothing(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "a", 1)
	set := mustCreateSet(t, s, SetRequest{Volumes: []string{"a"}, Labels: map[string]string{"vm": "a"}})
	before := describe(t, s)
	manyLabels := map[string]string{}
	for i := 0; i <= MaxLabels; i++ {
		manyLabels[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, tc := range []struct {
		name   string
		id     string
		labels map[string]string
		kind   error
		inMsg  string
	}{
		{"33 labels", set.ID, manyLabels, ErrInvalid, "labels has 33 entries, the limit is 32"},
		{"an uppercase key", set.ID, map[string]string{"VM": "a"}, ErrInvalid, `labels: key "VM"`},
		{"an empty key", set.ID, map[string]string{"": "a"}, ErrInvalid, "labels: key"},
		{"a key of 64 characters", set.ID, map[string]string{strings.Repeat("k", 64): "a"}, ErrInvalid, "is 64 characters"},
		{"a value of 257 bytes", set.ID, map[string]string{"k": strings.Repeat("v", 257)}, ErrInvalid, "257 bytes, the limit is 256"},
		{"a malformed id", "set-01", map[string]string{"k": "v"}, ErrInvalid, "snapshot set id"},
		{"a snapshot id", "a.1", map[string]string{"k": "v"}, ErrInvalid, "snapshot set id"},
		{"a missing set", "set-99", map[string]string{"k": "v"}, ErrNotFound, `snapshot set "set-99" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.SetSnapshotSetLabels(context.Background(), tc.id, tc.labels)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.inMsg) {
				t.Errorf("error = %v, want %v containing %q", err, tc.kind, tc.inMsg)
			}
			if after := describe(t, s); after != before {
				t.Errorf("store changed:\n got %s\nwant %s", after, before)
			}
		})
	}
}

func TestLabelsOfASetBeingCreatedOrDeletedCannotBeChanged(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	mustCreate(t, s, "a", 1)
	first := mustCreateSet(t, s, SetRequest{Volumes: []string{"a"}})

	t.Run("a set still being cut is not found", func(t *testing.T) {
		var relabelErr error
		f := &recordingFreeze{then: func() {
			_, relabelErr = s.SetSnapshotSetLabels(context.Background(), "set-2", map[string]string{"k": "v"})
		}}
		set := mustCreateSet(t, s, SetRequest{Volumes: []string{"a"}, Labels: map[string]string{"k": "old"}, Freeze: f.freeze})
		if set.ID != "set-2" {
			t.Fatalf("set ID = %s, want set-2", set.ID)
		}
		if !errors.Is(relabelErr, ErrNotFound) {
			t.Errorf("relabelling a set during its cut: %v, want ErrNotFound", relabelErr)
		}
		if got, _ := s.GetSnapshotSet(set.ID); got.Labels["k"] != "old" {
			t.Errorf("labels after the cut = %v, want k=old", got.Labels)
		}
	})

	t.Run("a relabelling waits for a delete holding the set and then finds it gone", func(t *testing.T) {
		unlock, err := s.locks.lock(context.Background(), "set/"+first.ID) // as DeleteSnapshotSet does
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := s.SetSnapshotSetLabels(ctx, first.ID, map[string]string{"k": "v"}); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("relabelling a locked set: %v, want it to wait until its context ends", err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := s.SetSnapshotSetLabels(context.Background(), first.ID, map[string]string{"k": "v"})
			done <- err
		}()
		err = s.db.Update(func(tx *bolt.Tx) error {
			r, _, err := s.readySet(tx, first.ID)
			if err != nil {
				return err
			}
			return deleteSet(tx, r)
		})
		if err != nil {
			t.Fatal(err)
		}
		unlock()
		if err := <-done; !errors.Is(err, ErrNotFound) {
			t.Errorf("relabelling after the delete: %v, want ErrNotFound", err)
		}
	})
}
