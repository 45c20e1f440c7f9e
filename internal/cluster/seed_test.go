package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// seedStorage is a storage box with one volume's content, for readSeed. The
// embedded SeedStore is nil: other calls panic.
type seedStorage struct {
	SeedStore
	content     []byte
	downloadErr error
	snapshots   map[string]bool // live snapshots by ID
	taken       int
	// copying makes snapshots copy-before-write ones, copied only once
	// they are waited for (waitErr: never).
	copying bool
	waitErr error
	copied  map[string]bool
}

func (s *seedStorage) CreateSnapshot(_ context.Context, volume string) (wire.Snapshot, error) {
	s.taken++
	id := volume + "@" + strings.Repeat("i", s.taken)
	s.snapshots[id] = true
	snap := wire.Snapshot{ID: id, Volume: volume, State: wire.StateReady}
	if s.copying {
		snap.State = wire.StateCopying
	}
	return snap, nil
}

func (s *seedStorage) WaitSnapshot(_ context.Context, id string) (wire.Snapshot, error) {
	if s.waitErr != nil {
		return wire.Snapshot{}, s.waitErr
	}
	s.copied[id] = true
	return wire.Snapshot{ID: id, State: wire.StateReady}, nil
}

func (s *seedStorage) DownloadSnapshot(_ context.Context, id string) (io.ReadCloser, error) {
	if s.copying && !s.copied[id] {
		return nil, errors.New("snapshot is still being copied (HTTP 409)")
	}
	if s.downloadErr != nil {
		return nil, s.downloadErr
	}
	return io.NopCloser(bytes.NewReader(s.content)), nil
}

func (s *seedStorage) DeleteSnapshot(_ context.Context, id string) error {
	delete(s.snapshots, id)
	return nil
}

func TestReadSeedDeletesItsSnapshot(t *testing.T) {
	t.Parallel()
	seed := cloudinit.Seed{MetaData: "instance-id: web1\n", NetworkConfig: "version: 2\n"}
	image, err := seed.Image()
	if err != nil {
		t.Fatal(err)
	}
	// The volume is larger than the image, as seed volumes are.
	volume := append(image, make([]byte, 1<<20-len(image))...)
	tests := []struct {
		name        string
		content     []byte
		downloadErr error
		copying     bool
		waitErr     error
		want        cloudinit.Seed
		wantErr     string
	}{
		{name: "a snapshot cut by copy-before-write is read once it is copied", content: volume, copying: true, want: seed},
		{name: "a copy that does not finish leaves no snapshot", content: volume, copying: true,
			waitErr: errors.New("wait for snapshot web1-seed@i to be copied: context deadline exceeded"), wantErr: "context deadline exceeded"},
		{name: "a seed volume reads back as its seed", content: volume, want: seed},
		{name: "a failed download leaves no snapshot", downloadErr: errors.New("connection reset"), wantErr: "connection reset"},
		{name: "a volume without a seed leaves no snapshot", content: make([]byte, 1<<20), wantErr: "not an ISO 9660 image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &seedStorage{content: tt.content, downloadErr: tt.downloadErr, snapshots: map[string]bool{},
				copying: tt.copying, waitErr: tt.waitErr, copied: map[string]bool{}}
			got, err := readSeed(context.Background(), s, "web1-seed")
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("readSeed: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("readSeed error = %v, want one containing %q", err, tt.wantErr)
			case got != tt.want:
				t.Errorf("readSeed = %+v, want %+v", got, tt.want)
			}
			if s.taken != 1 || len(s.snapshots) != 0 {
				t.Errorf("took %d snapshots and left %v, want 1 taken and none left", s.taken, s.snapshots)
			}
		})
	}
}
