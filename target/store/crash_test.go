package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

type crashed struct{ step string }

// TestACrashAtAnyStepLeavesTheOldOrTheNewState runs every change, crashing
// it at each of its steps: the hook panics, the store is dropped without
// any cleanup, and a fresh Open must show either the state before the
// change or the state after it, with no orphan file.
func TestACrashAtAnyStepLeavesTheOldOrTheNewState(t *testing.T) {
	t.Parallel()
	ops := []struct {
		name  string
		steps []string
		run   func(s *Store) error
	}{
		{"create a volume", []string{"create/recorded", "create/file", "create/ready"}, func(s *Store) error {
			_, err := s.Create(context.Background(), "new", 2, Access{})
			return err
		}},
		{"clone a volume", []string{"create/recorded", "create/file", "create/ready"}, func(s *Store) error {
			_, err := s.Clone(context.Background(), "copy", Source{Volume: "base"}, 0, Access{})
			return err
		}},
		{"clone a snapshot", []string{"create/recorded", "create/file", "create/ready"}, func(s *Store) error {
			_, err := s.Clone(context.Background(), "restored", Source{Snapshot: "base.1"}, 8, Access{})
			return err
		}},
		{"grow a volume", []string{"grow/file"}, func(s *Store) error {
			_, err := s.Grow(context.Background(), "base", 6)
			return err
		}},
		{"delete a volume", []string{"delete/unrecorded"}, func(s *Store) error {
			return s.Delete(context.Background(), "base")
		}},
		{"take a snapshot", []string{"snapshot/recorded", "snapshot/file"}, func(s *Store) error {
			_, err := s.CreateSnapshot(context.Background(), "base", nil)
			return err
		}},
		{"take a snapshot under a freeze", []string{"snapshot/recorded", "snapshot/frozen", "snapshot/file"}, func(s *Store) error {
			_, err := s.CreateSnapshot(context.Background(), "base", noopFreeze)
			return err
		}},
		{"delete a snapshot", []string{"snapshot-delete/unrecorded"}, func(s *Store) error {
			return s.DeleteSnapshot(context.Background(), "base.1")
		}},
		{"take a snapshot set", []string{"set/recorded", "set/frozen", "set/cut", "set/files", "set/ready"}, func(s *Store) error {
			_, err := s.CreateSnapshotSet(context.Background(), SetRequest{
				Volumes:     []string{"data", "base"},
				Labels:      map[string]string{"vm": "web"},
				Attachments: map[string][]byte{"domain.xml": []byte("<domain/>")},
				Freeze:      noopFreeze,
			})
			return err
		}},
		{"delete a snapshot set", []string{"set-delete/unrecorded"}, func(s *Store) error {
			return s.DeleteSnapshotSet(context.Background(), "set-1")
		}},
		{"relabel a snapshot set", []string{"set-labels/recorded"}, func(s *Store) error {
			_, err := s.SetSnapshotSetLabels(context.Background(), "set-1", map[string]string{"vm": "web", "kind": "backup"})
			return err
		}},
		{"keep reservations", []string{"reservations/put", "reservations/kept"}, func(s *Store) error {
			return s.PutReservations("base", Reservations{Generation: 3, Registrations: []Registration{{Port: "iqn.2026-11.io.drover.test:a,i,0x1", Key: 7}}, Holder: "iqn.2026-11.io.drover.test:a,i,0x1", Type: 1})
		}},
		{"fence an initiator", []string{"fence/put", "fence/kept"}, func(s *Store) error {
			_, _, err := s.PutFence("iqn.2026-11.io.drover.test:a", "host a declared failed")
			return err
		}},
		{"give a fence a new reason", []string{"fence/put", "fence/kept"}, func(s *Store) error {
			_, _, err := s.PutFence("iqn.2026-11.io.drover.test:b", "still down")
			return err
		}},
		{"lift a fence", []string{"fence-delete/deleted", "fence-delete/unrecorded"}, func(s *Store) error {
			return s.DeleteFence("iqn.2026-11.io.drover.test:b")
		}},
		{"make a schedule", []string{"schedule-create/put", "schedule-create/kept"}, func(s *Store) error {
			_, err := s.CreateSchedule(Schedule{VM: "vm-web", Volumes: []string{"base"}, Cron: "0 3 * * *", Keep: wire.Keep{Daily: 7}, DomainXML: "<domain/>"})
			return err
		}},
		{"change a schedule", []string{"schedule-replace/put"}, func(s *Store) error {
			_, err := s.ReplaceSchedule("sched-1", Schedule{VM: "vm-seed", Volumes: []string{"base"}, Cron: "*/5 * * * *", Keep: wire.Keep{Last: 9}})
			return err
		}},
		{"record a schedule's run", []string{"schedule-run/put"}, func(s *Store) error {
			return s.RecordScheduleRun("sched-1", wire.ScheduleRun{At: time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC), Status: "ok", SetID: "set-1"})
		}},
		{"delete a schedule", []string{"schedule-delete/deleted"}, func(s *Store) error {
			return s.DeleteSchedule("sched-1")
		}},
		{"upload an image", []string{"image/written"}, func(s *Store) error {
			return s.WriteImage(context.Background(), "base", bytes.NewReader(bytes.Repeat([]byte("img"), 1000)), FormatRaw)
		}},
	}
	for _, op := range ops {
		for _, step := range op.steps {
			t.Run(fmt.Sprintf("%s, crash after %s", op.name, step), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				oldState, newState := seedAndRun(t, dir, op.run)
				s := openBase(t, dir)
				s.crash = func(at string) {
					if at == step {
						panic(crashed{at})
					}
				}
				func() {
					defer func() {
						r := recover()
						if _, ok := r.(crashed); !ok {
							t.Fatalf("the operation did not reach step %s (recovered %v)", step, r)
						}
					}()
					op.run(s)
				}()
				s.Close() // the crash: no cleanup ran; only the fds went away

				after := describe(t, openTestStore(t, dir, Options{}))
				if after != oldState && after != newState {
					t.Errorf("state after crash and reopen:\n%s\nwant the old state:\n%s\nor the new state:\n%s", after, oldState, newState)
				}
			})
		}
	}
}

// seedAndRun builds the base state in a scratch directory, runs op there
// without crashing, and returns the descriptions before and after.
func seedAndRun(t *testing.T, dir string, op func(*Store) error) (oldState, newState string) {
	t.Helper()
	scratch := filepath.Join(t.TempDir(), "scratch")
	s := openBase(t, scratch)
	oldState = describe(t, s)
	if err := op(s); err != nil {
		t.Fatalf("operation without crash: %v", err)
	}
	newState = describe(t, s)
	s.Close()
	if oldState == newState {
		t.Fatalf("operation changed nothing; the test would prove nothing")
	}
	seed(t, dir)
	return oldState, newState
}

func openBase(t *testing.T, dir string) *Store {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, dbFile)); err != nil {
		seed(t, dir)
	}
	s := openTestStore(t, dir, Options{})
	return s
}

// seed makes the base state: volume "base" (4 MiB, some data), its
// snapshot "base.1", volume "data" (2 MiB), snapshot set "set-1" of both
// (snapshots base.2 and data.3), a fence of initiator b and schedule
// sched-1 of both.
func seed(t *testing.T, dir string) {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := mustCreate(t, s, "base", 4)
	writeAt(t, v.Path, 0, []byte("base data"))
	mustSnapshot(t, s, "base")
	writeAt(t, v.Path, 0, []byte("BASE DATA"))
	d := mustCreate(t, s, "data", 2)
	writeAt(t, d.Path, MiB, []byte("data data"))
	mustCreateSet(t, s, SetRequest{Volumes: []string{"base", "data"}, Labels: map[string]string{"vm": "seed"}, Attachments: map[string][]byte{"notes.txt": []byte("seed")}})
	writeAt(t, d.Path, MiB, []byte("DATA DATA"))
	if err := s.PutReservations("base", Reservations{Generation: 1, Registrations: []Registration{{Port: "iqn.2026-11.io.drover.test:b,i,0x1", Key: 9}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PutFence("iqn.2026-11.io.drover.test:b", "host b declared failed"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSchedule(Schedule{VM: "vm-seed", Volumes: []string{"base", "data"}, Cron: "* * * * *", Keep: wire.Keep{Last: 2}, Labels: map[string]string{"drover.vm-name": "seed"}}); err != nil {
		t.Fatal(err)
	}
}

// noopFreeze is a Freeze that holds nothing.
func noopFreeze(ctx context.Context) (context.Context, func() error, error) {
	return ctx, func() error { return nil }, nil
}

func TestOpenRepairsWhatACrashLeft(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"a creating record with its file is rolled back", func(t *testing.T, dir string) {
			putRawRecord(t, dir, bucketVolumes, "half", volumeRecord{Name: "half", SizeMiB: 1, State: stateCreating, File: "volumes/half.raw"})
			touch(t, filepath.Join(dir, "volumes", "half.raw"), MiB)
		}},
		{"a creating record without a file is rolled back", func(t *testing.T, dir string) {
			putRawRecord(t, dir, bucketVolumes, "half", volumeRecord{Name: "half", SizeMiB: 1, State: stateCreating, File: "volumes/half.raw"})
		}},
		{"a creating snapshot set is rolled back with its snapshots and attachments", func(t *testing.T, dir string) {
			putRawRecord(t, dir, bucketSets, "set-9", setRecord{ID: "set-9", Seq: 9, State: stateCreating, Attachments: []string{"a.xml"}, Snapshots: []string{"base.8", "data.9"}})
			putRawRecord(t, dir, bucketSnapshots, "base.8", snapshotRecord{ID: "base.8", Seq: 8, Volume: "base", SizeMiB: 4, State: stateCreating, File: "snapshots/base.8.raw", Set: "set-9"})
			putRawRecord(t, dir, bucketSnapshots, "data.9", snapshotRecord{ID: "data.9", Seq: 9, Volume: "data", SizeMiB: 2, State: stateCreating, File: "snapshots/data.9.raw", Set: "set-9"})
			putRawRecord(t, dir, bucketAttachments, "set-9/a.xml", []byte("<a/>"))
			touch(t, filepath.Join(dir, "snapshots", "base.8.raw"), 4*MiB)
		}},
		{"a creating snapshot record is rolled back", func(t *testing.T, dir string) {
			putRawRecord(t, dir, bucketSnapshots, "base.9", snapshotRecord{ID: "base.9", Seq: 9, Volume: "base", SizeMiB: 4, State: stateCreating, File: "snapshots/base.9.raw"})
			touch(t, filepath.Join(dir, "snapshots", "base.9.raw"), 10)
		}},
		{"an orphan volume file is removed and not counted", func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "volumes", "stray.raw"), MiB)
		}},
		{"an orphan snapshot file is removed", func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "snapshots", "base.77.raw"), MiB)
		}},
		{"a leftover upload is removed", func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "tmp", "base-123.raw"), MiB)
		}},
		{"a file grown before its record is cut back", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "volumes", "base.raw"), 9*MiB); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			seed(t, dir)
			want := describeAndClose(t, dir)
			tc.damage(t, dir)
			if got := describe(t, openTestStore(t, dir, Options{})); got != want {
				t.Errorf("state after repair:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestOpenRefusesAVolumeWhoseFileIsGone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed(t, dir)
	if err := os.Remove(filepath.Join(dir, "volumes", "base.raw")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("backing file missing")) {
		t.Errorf("Open error = %v, want one naming the missing backing file", err)
	}
}

func describeAndClose(t *testing.T, dir string) string {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return describe(t, s)
}

func putRawRecord(t *testing.T, dir string, bucket []byte, key string, rec any) {
	t.Helper()
	// Write straight into the (closed) store's database, as a crashed
	// daemon would have left it.
	db, err := bolt.Open(filepath.Join(dir, dbFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		switch r := rec.(type) {
		case volumeRecord:
			return putVolume(tx.Bucket(bucket), r)
		case snapshotRecord:
			return putSnapshot(tx.Bucket(bucket), r)
		case setRecord:
			return putSet(tx.Bucket(bucket), r)
		case []byte:
			return tx.Bucket(bucket).Put([]byte(key), r)
		}
		return fmt.Errorf("unknown record %T", rec)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func touch(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}
