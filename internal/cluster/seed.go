package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// How long an operation waits for the storage box to notice that a stopped
// guest's iSCSI sessions are gone.
const (
	sessionsGonePoll    = 500 * time.Millisecond
	sessionsGoneTimeout = 30 * time.Second
)

// maxSeedImage bounds how much of a seed volume ReadSeed reads: Drover's
// seeds are a few KiB at its start, and the rest of the volume is zeros.
const maxSeedImage = 16 << 20

// snapshotCleanupTimeout bounds deleting ReadSeed's snapshot, which runs
// even when the operation's own deadline has passed.
const snapshotCleanupTimeout = 30 * time.Second

// SeedVolumeName is the name of the volume that holds a VM's cloud-init
// seed.
func SeedVolumeName(vm string) string { return vm + "-seed" }

// ensureSeed makes the VM's cloud-init seed volume exist, with the seed in
// it when it is new or write is set, and lets the host in.
func (c *Cluster) ensureSeed(ctx context.Context, spec *VMSpec, initiator string, write bool) (wire.Volume, error) {
	name := SeedVolumeName(spec.VM.Name)
	image, err := spec.Seed.Image()
	if err != nil {
		return wire.Volume{}, err
	}
	sizeMiB := max(1, (int64(len(image))+1<<20-1)>>20)
	seeds := c.storage.Seeds
	vol, err := c.storage.Volumes.GetVolume(ctx, name)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		vol, err = seeds.CreateVolume(ctx, wire.CreateVolumeRequest{
			Name: name, SizeMiB: sizeMiB, Initiators: c.access.Initiators,
			CHAP: &wire.CHAP{User: c.access.CHAPUser, Secret: c.access.CHAPSecret},
		})
		if err != nil {
			return vol, fmt.Errorf("create cloud-init volume %q: %w", name, err)
		}
		write = true
	case err != nil:
		return vol, fmt.Errorf("cloud-init volume %q: %w", name, err)
	}
	if write {
		if vol.SizeMiB < sizeMiB {
			if vol, err = seeds.GrowVolume(ctx, name, sizeMiB); err != nil {
				return vol, fmt.Errorf("grow cloud-init volume %q: %w", name, err)
			}
		}
		c.log.Info(ctx, "writing cloud-init seed", map[string]any{"volume": name, "bytes": len(image)})
		err := WhileInUse(ctx, func() error {
			return seeds.UploadVolume(ctx, name, bytes.NewReader(image), "raw")
		})
		if err != nil {
			return vol, fmt.Errorf("write cloud-init seed to volume %q: %w", name, err)
		}
	}
	return c.ensureAccess(ctx, name, initiator)
}

// ReadSeed reads the cloud-init seed back from its volume, through a
// snapshot: the volume stays attached to a running guest, and a snapshot is
// the target's way to read a volume's content. The snapshot is deleted in
// every case.
func (c *Cluster) ReadSeed(ctx context.Context, volume string) (cloudinit.Seed, error) {
	if !c.HasStorage() {
		return cloudinit.Seed{}, ErrNoStorage
	}
	return readSeed(ctx, c.storage.Seeds, volume)
}

func readSeed(ctx context.Context, seeds SeedStore, volume string) (seed cloudinit.Seed, err error) {
	snap, err := seeds.CreateSnapshot(ctx, volume)
	if err != nil {
		return seed, fmt.Errorf("snapshot cloud-init volume %q: %w", volume, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotCleanupTimeout)
		defer cancel()
		if derr := seeds.DeleteSnapshot(ctx, snap.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete snapshot %s of cloud-init volume %q: %w", snap.ID, volume, derr))
		}
	}()
	if snap.State == wire.StateCopying {
		if _, err := seeds.WaitSnapshot(ctx, snap.ID); err != nil {
			return seed, fmt.Errorf("read cloud-init volume %q: %w", volume, err)
		}
	}
	body, err := seeds.DownloadSnapshot(ctx, snap.ID)
	if err != nil {
		return seed, fmt.Errorf("download snapshot %s of cloud-init volume %q: %w", snap.ID, volume, err)
	}
	defer body.Close()
	image, err := io.ReadAll(io.LimitReader(body, maxSeedImage))
	if err != nil {
		return seed, fmt.Errorf("download snapshot %s of cloud-init volume %q: %w", snap.ID, volume, err)
	}
	seed, err = cloudinit.Read(bytes.NewReader(image))
	if err != nil {
		return seed, fmt.Errorf("cloud-init volume %q: %w", volume, err)
	}
	return seed, nil
}

// WhileInUse runs fn again while the storage box refuses it because the
// volume is in use: a guest that just stopped leaves its iSCSI sessions
// behind for a moment.
func WhileInUse(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(sessionsGoneTimeout)
	for {
		err := fn()
		if !errors.Is(err, storage.ErrConflict) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(sessionsGonePoll):
		}
	}
}
