package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

func openTestStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustCreate(t *testing.T, s *Store, name string, sizeMiB int64) Volume {
	t.Helper()
	v, err := s.Create(context.Background(), name, sizeMiB, Access{})
	if err != nil {
		t.Fatalf("Create(%q, %d): %v", name, sizeMiB, err)
	}
	return v
}

func mustSnapshot(t *testing.T, s *Store, volume string) Snapshot {
	t.Helper()
	snap, err := s.CreateSnapshot(context.Background(), volume, nil)
	if err != nil {
		t.Fatalf("CreateSnapshot(%q): %v", volume, err)
	}
	return snap
}

// writeAt writes p at off into a backing file, as an initiator would.
func writeAt(t *testing.T, path string, off int64, p []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// describe renders everything a client can see of a store, plus the content
// of each backing file, one sorted line per object. It also fails the test
// if a file in the data directory belongs to no listed object, or an
// object's file is missing or of the wrong size.
func describe(t *testing.T, s *Store) string {
	t.Helper()
	vols, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	snaps, err := s.ListSnapshots("")
	if err != nil {
		t.Fatalf("ListSnapshots: %v", err)
	}
	claimed := map[string]bool{}
	var lines []string
	check := func(what, path string, sizeMiB int64) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: backing file: %v", what, err)
			return
		}
		if fi.Size() != sizeMiB*MiB {
			t.Errorf("%s: backing file is %d bytes, want %d", what, fi.Size(), sizeMiB*MiB)
		}
		claimed[path] = true
	}
	for _, v := range vols {
		check("volume "+v.Name, v.Path, v.SizeMiB)
		lines = append(lines, fmt.Sprintf("volume %s %dMiB %s", v.Name, v.SizeMiB, fileSum(t, v.Path)))
		r, err := s.Reservations(v.Name)
		if err != nil {
			t.Fatalf("Reservations(%s): %v", v.Name, err)
		}
		if r.Generation != 0 || len(r.Registrations) != 0 || r.Type != 0 {
			lines = append(lines, fmt.Sprintf("reservations of %s %+v", v.Name, r))
		}
	}
	for _, sn := range snaps {
		check("snapshot "+sn.ID, sn.Path, sn.SizeMiB)
		lines = append(lines, fmt.Sprintf("snapshot %s of %s %dMiB %s set=%q", sn.ID, sn.Volume, sn.SizeMiB, fileSum(t, sn.Path), sn.Set))
	}
	sets, err := s.ListSnapshotSets(nil)
	if err != nil {
		t.Fatalf("ListSnapshotSets: %v", err)
	}
	attached := map[string]bool{}
	for _, set := range sets {
		lines = append(lines, describeSet(t, s, set))
		for _, name := range set.Attachments {
			attached[string(attachmentKey(set.ID, name))] = true
		}
	}
	fences, err := s.Fences()
	if err != nil {
		t.Fatalf("Fences: %v", err)
	}
	for _, f := range fences {
		// Not CreatedAt: the states compared are made at different times.
		lines = append(lines, fmt.Sprintf("fence %s %q", f.Initiator, f.Reason))
	}
	schedules, err := s.Schedules()
	if err != nil {
		t.Fatalf("Schedules: %v", err)
	}
	for _, sc := range schedules {
		// Not CreatedAt: the states compared are made at different times.
		lines = append(lines, fmt.Sprintf("schedule %s vm=%s %v %q %+v %+v %v xml=%q last=%+v", sc.ID, sc.VM, sc.Volumes, sc.Cron, sc.Keep, sc.Restic, sc.Labels, sc.DomainXML, sc.LastRun))
	}
	checkNoStrayRecords(t, s, attached)
	for _, d := range []string{volumesDir, snapshotsDir, tmpDir} {
		entries, err := os.ReadDir(filepath.Join(s.Dir(), d))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if p := filepath.Join(s.Dir(), d, e.Name()); !claimed[p] {
				t.Errorf("orphan file %s is in the data directory", p)
			}
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// describeSet renders a snapshot set: labels, attachments with a hash of
// their content, and its snapshots in order.
func describeSet(t *testing.T, s *Store, set SnapshotSet) string {
	t.Helper()
	var labels, atts, snaps []string
	for k, v := range set.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	for _, name := range set.Attachments {
		b, err := s.SnapshotSetAttachment(set.ID, name)
		if err != nil {
			t.Errorf("set %s: attachment %s: %v", set.ID, name, err)
		}
		sum := sha256.Sum256(b)
		atts = append(atts, name+":"+hex.EncodeToString(sum[:4]))
	}
	for _, sn := range set.Snapshots {
		if sn.Set != set.ID {
			t.Errorf("set %s: snapshot %s says it belongs to set %q", set.ID, sn.ID, sn.Set)
		}
		snaps = append(snaps, sn.ID)
	}
	return fmt.Sprintf("set %s labels=%v attachments=%v snapshots=%v", set.ID, labels, atts, snaps)
}

func mustCreateSet(t *testing.T, s *Store, req SetRequest) SnapshotSet {
	t.Helper()
	set, err := s.CreateSnapshotSet(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateSnapshotSet(%v): %v", req.Volumes, err)
	}
	return set
}

// checkNoStrayRecords fails the test if the database holds a record that
// is not ready or an attachment of no listed set.
func checkNoStrayRecords(t *testing.T, s *Store, attached map[string]bool) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketVolumes, bucketSnapshots, bucketSets} {
			err := tx.Bucket(b).ForEach(func(k, v []byte) error {
				var r struct{ State state }
				if err := json.Unmarshal(v, &r); err != nil {
					return err
				}
				if r.State != stateReady {
					t.Errorf("%s record %s is %q, want only ready records", b, k, r.State)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		err := tx.Bucket(bucketReservations).ForEach(func(k, _ []byte) error {
			if r, ok, _ := getVolume(tx.Bucket(bucketVolumes), string(k)); !ok || r.State != stateReady {
				t.Errorf("reservations of %s belong to no volume", k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketAttachments).ForEach(func(k, _ []byte) error {
			if !attached[string(k)] {
				t.Errorf("attachment %s belongs to no snapshot set", k)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
