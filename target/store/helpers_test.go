package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

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
	snap, err := s.CreateSnapshot(context.Background(), volume)
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
	}
	for _, sn := range snaps {
		check("snapshot "+sn.ID, sn.Path, sn.SizeMiB)
		lines = append(lines, fmt.Sprintf("snapshot %s of %s %dMiB %s", sn.ID, sn.Volume, sn.SizeMiB, fileSum(t, sn.Path)))
	}
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
