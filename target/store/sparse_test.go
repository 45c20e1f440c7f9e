package store

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestASnapshotIsStreamedWithItsHolesAsZeros(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir(), Options{})
	v := mustCreate(t, s, "web", 64)
	writeAt(t, v.Path, 5*MiB+3, []byte("first"))
	writeAt(t, v.Path, 63*MiB, bytes.Repeat([]byte("x"), MiB))
	snap := mustSnapshot(t, s, "web")
	want, err := os.ReadFile(snap.Path)
	if err != nil {
		t.Fatal(err)
	}
	rd, size, err := s.SnapshotReader(snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	if size != 64*MiB || !bytes.Equal(got, want) {
		t.Errorf("streamed %d bytes (size %d), want the snapshot's %d bytes exactly", len(got), size, len(want))
	}
}

func TestTheHolesOfAStreamAreNotReadFromTheFile(t *testing.T) {
	t.Parallel()
	// A file full of 0xff whose extents say only [4096, 8192) holds data:
	// everything else must come out as zeros, which it would not if it
	// were read.
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xff}, 3*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	r := &sparseReader{f: f, size: 3 * 4096, extents: []Extent{{Offset: 4096, Length: 4096}}}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 4096), bytes.Repeat([]byte{0xff}, 4096)...), make([]byte, 4096)...)
	if !bytes.Equal(got, want) {
		t.Errorf("stream differs from zeros, the extent's data, zeros (%d bytes)", len(got))
	}
}
