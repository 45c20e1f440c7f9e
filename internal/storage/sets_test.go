package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// writeVolume writes p into a volume's backing file, as an initiator would.
func writeVolume(t *testing.T, srv *apitest.Server, name string, off int64, p []byte) {
	t.Helper()
	v, err := srv.Store.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(v.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

func TestTheClientDrivesSnapshotSets(t *testing.T) {
	t.Parallel()
	c, srv := newClient(t)
	ctx := context.Background()
	for _, name := range []string{"web-boot", "web-data", "db"} {
		if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: name, SizeMiB: 2}); err != nil {
			t.Fatal(err)
		}
	}
	domain := "<domain type='kvm'><name>web</name>" + strings.Repeat("<disk/>", 20000) + "</domain>" // 140 KiB of '<'
	set, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{
		Volumes:     []string{"web-boot", "web-data"},
		Labels:      map[string]string{"drover.io/vm": "web", "drover.io/kind": "backup"},
		Attachments: map[string]string{"domain.xml": domain},
	})
	if err != nil {
		t.Fatalf("CreateSnapshotSet: %v", err)
	}
	if len(set.Snapshots) != 2 || set.Snapshots[0].Volume != "web-boot" || set.Snapshots[0].Set != set.ID || set.HoldMS < 0 || set.Method == "" {
		t.Errorf("set = %+v, want snapshots of web-boot and web-data belonging to it", set)
	}
	if !reflect.DeepEqual(set.Attachments, []string{"domain.xml"}) {
		t.Errorf("attachments = %v, want [domain.xml]", set.Attachments)
	}
	other, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"db"}, Labels: map[string]string{"drover.io/vm": "db"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		labels map[string]string
		want   []string
	}{
		{nil, []string{other.ID, set.ID}},
		{map[string]string{"drover.io/vm": "web"}, []string{set.ID}},
		{map[string]string{"drover.io/vm": "web", "drover.io/kind": "backup"}, []string{set.ID}},
		{map[string]string{"drover.io/vm": "web & db"}, nil},
	} {
		sets, err := c.ListSnapshotSets(ctx, tc.labels)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range sets {
			got = append(got, s.ID)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListSnapshotSets(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got, err := c.GetSnapshotSet(ctx, set.ID); err != nil || !reflect.DeepEqual(got, set) {
		t.Errorf("GetSnapshotSet = %+v, %v; want %+v", got, err, set)
	}
	if b, err := c.SnapshotSetAttachment(ctx, set.ID, "domain.xml"); err != nil || string(b) != domain {
		t.Errorf("SnapshotSetAttachment = %d bytes, %v; want the domain XML", len(b), err)
	}
	if err := c.DeleteSnapshot(ctx, set.Snapshots[0].ID); !errors.Is(err, storage.ErrConflict) {
		t.Errorf("DeleteSnapshot of a set's snapshot = %v, want ErrConflict", err)
	}
	if _, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"db", "ghost"}}); !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("CreateSnapshotSet with a missing volume = %v, want ErrNotFound naming it", err)
	}
	if err := c.DeleteSnapshotSet(ctx, set.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSnapshotSet(ctx, set.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetSnapshotSet after delete = %v, want ErrNotFound", err)
	}
	if err := c.DeleteSnapshotSet(ctx, set.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("second DeleteSnapshotSet = %v, want ErrNotFound", err)
	}
	if holds := srv.Exporter.Holds(); len(holds) != 2 || !holds[0].Released() {
		t.Errorf("holds = %+v, want two released ones", holds)
	}
}

func TestTheClientReplacesASetsLabels(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "web", SizeMiB: 1}); err != nil {
		t.Fatal(err)
	}
	set, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"web"}, Labels: map[string]string{"drover.io/vm": "web", "drover.io/kind": "nightly"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"web"}, Labels: map[string]string{"drover.io/vm": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(labels map[string]string) []string {
		t.Helper()
		sets, err := c.ListSnapshotSets(ctx, labels)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range sets {
			out = append(out, s.ID)
		}
		return out
	}

	labels := map[string]string{"drover.io/vm": "web", "drover.io/kind": "keep", "note": "<before the upgrade> & after"}
	got, err := c.SetSnapshotSetLabels(ctx, set.ID, labels)
	if err != nil {
		t.Fatalf("SetSnapshotSetLabels: %v", err)
	}
	want := set
	want.Labels = labels
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SetSnapshotSetLabels = %+v, want the set with only its labels replaced: %+v", got, want)
	}
	if again, err := c.GetSnapshotSet(ctx, set.ID); err != nil || !reflect.DeepEqual(again, want) {
		t.Errorf("GetSnapshotSet after SetSnapshotSetLabels = %+v, %v; want %+v", again, err, want)
	}
	for _, tc := range []struct {
		labels map[string]string
		want   []string
	}{
		{map[string]string{"drover.io/kind": "keep"}, []string{set.ID}},
		{map[string]string{"drover.io/kind": "nightly"}, nil},
		{map[string]string{"note": "<before the upgrade> & after"}, []string{set.ID}},
		{map[string]string{"drover.io/vm": "web"}, []string{other.ID, set.ID}},
	} {
		if got := ids(tc.labels); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListSnapshotSets(%v) after SetSnapshotSetLabels = %v, want %v", tc.labels, got, tc.want)
		}
	}

	if got, err := c.SetSnapshotSetLabels(ctx, set.ID, nil); err != nil || got.Labels == nil || len(got.Labels) != 0 {
		t.Errorf("SetSnapshotSetLabels(nil) = %v, %v; want no labels", got.Labels, err)
	}
	if got := ids(map[string]string{"drover.io/vm": "web"}); !reflect.DeepEqual(got, []string{other.ID}) {
		t.Errorf("ListSnapshotSets(drover.io/vm=web) after removing the labels = %v, want [%s]", got, other.ID)
	}

	_, err = c.SetSnapshotSetLabels(ctx, other.ID, map[string]string{"VM": "web"})
	var apiErr *storage.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, `labels: key "VM"`) {
		t.Errorf("SetSnapshotSetLabels with a bad key = %v, want a 400 naming the key", err)
	}
	if got, err := c.GetSnapshotSet(ctx, other.ID); err != nil || !reflect.DeepEqual(got.Labels, map[string]string{"drover.io/vm": "web"}) {
		t.Errorf("labels after a refused change = %v, %v; want them unchanged", got.Labels, err)
	}
	if _, err := c.SetSnapshotSetLabels(ctx, "set-99", map[string]string{"k": "v"}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("SetSnapshotSetLabels of a missing set = %v, want ErrNotFound", err)
	}
}

func TestASparseDownloadIsTheSnapshotWithItsHoles(t *testing.T) {
	t.Parallel()
	_, srv := newClient(t)
	ranges := &rangeCounter{}
	c, err := storage.New(srv.URL, apitest.Token, storage.WithHTTPClient(&http.Client{Transport: ranges}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const size = 64 << 20
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "vm", SizeMiB: size >> 20}); err != nil {
		t.Fatal(err)
	}
	data := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	writeVolume(t, srv, "vm", 0, data(1, 1<<20))     // a boot area
	writeVolume(t, srv, "vm", 20<<20, data(2, 4096)) // alone
	for off := int64(40 << 20); off < 41<<20; off += 64 << 10 {
		writeVolume(t, srv, "vm", off, data(3, 4096)) // 16 small extents close together: one request
	}
	writeVolume(t, srv, "vm", size-4096, data(4, 4096)) // the last block
	snap, err := c.CreateSnapshot(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}

	ext, err := c.SnapshotExtents(ctx, snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ext.SizeBytes != size || len(ext.Extents) != 19 || ext.Extents[0] != (wire.Extent{Offset: 0, Length: 1 << 20}) {
		t.Errorf("extents = %d bytes, %d extents starting %+v; want %d, 19 starting with 1 MiB at 0", ext.SizeBytes, len(ext.Extents), ext.Extents[:1], size)
	}

	path := filepath.Join(t.TempDir(), "vm.raw")
	// Old content in the file must not survive.
	if err := os.WriteFile(path, data(9, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := c.DownloadSnapshotSparse(ctx, snap.ID, f)
	if err != nil {
		t.Fatalf("DownloadSnapshotSparse: %v", err)
	}
	// The boot area, the lone block, the 16 close ones together, the last.
	if got := ranges.list(); len(got) != 4 || got[0] != "bytes=0-1048575" {
		t.Errorf("Range requests = %v, want 4, the first bytes=0-1048575", got)
	}

	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := srv.Store.GetSnapshot(snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(s.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("downloaded file (%d bytes) differs from the snapshot (%d bytes)", len(got), len(want))
	}
	fileSum := sha256.Sum256(got)
	if sum != hex.EncodeToString(fileSum[:]) {
		t.Errorf("returned SHA-256 %s, want the file's %x", sum, fileSum)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if onDisk := st.Blocks * 512; onDisk > 4<<20 {
		t.Errorf("the downloaded file takes %d bytes on disk for %d bytes of data in %d, want the holes kept", onDisk, 1<<20+18*4096, size)
	}
	t.Logf("%d MiB snapshot, %d KiB on disk after the download", size>>20, st.Blocks*512>>10)
}

func TestASparseDownloadOfAnEmptyOrMissingSnapshot(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "empty", SizeMiB: 8}); err != nil {
		t.Fatal(err)
	}
	snap, err := c.CreateSnapshot(ctx, "empty")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "empty.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum, err := c.DownloadSnapshotSparse(ctx, snap.ID, f)
	zeros := sha256.Sum256(make([]byte, 8<<20))
	if err != nil || sum != hex.EncodeToString(zeros[:]) {
		t.Errorf("download of an empty snapshot = %s, %v; want the hash of 8 MiB of zeros", sum, err)
	}
	if fi, _ := f.Stat(); fi.Size() != 8<<20 {
		t.Errorf("file size = %d, want %d", fi.Size(), 8<<20)
	}
	if _, err := c.DownloadSnapshotSparse(ctx, "empty.99", f); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("download of a missing snapshot = %v, want ErrNotFound", err)
	}
}

// rangeCounter is an http.RoundTripper that notes the Range of every
// request.
type rangeCounter struct {
	mu     sync.Mutex // guards ranges
	ranges []string
}

func (r *rangeCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if h := req.Header.Get("Range"); h != "" {
		r.mu.Lock()
		r.ranges = append(r.ranges, h)
		r.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(req)
}

func (r *rangeCounter) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ranges...)
}
