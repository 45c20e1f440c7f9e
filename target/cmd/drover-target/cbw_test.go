package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// TestKillNineMidCopyDropsOnlyTheSetBeingCopied: the daemon is killed
// while a copy-before-write snapshot set is still being copied. After the
// restart that set is gone (with a log line saying why) and its file too;
// the volume's data, the other volume and a set made before are as they
// were, and a new set of the volume copies to the end.
func TestKillNineMidCopyDropsOnlyTheSetBeingCopied(t *testing.T) {
	requireTools(t, "qemu-io")
	d := newDaemon(t)
	c := d.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, v := range []wire.CreateVolumeRequest{
		{Name: "big", SizeMiB: 160, Initiators: []string{crashInitiator}},
		{Name: "keep", SizeMiB: 4, Initiators: []string{crashInitiator}},
	} {
		if _, err := c.CreateVolume(ctx, v); err != nil {
			t.Fatalf("create volume %s: %v", v.Name, err)
		}
	}
	// 150 MiB of data: the copy takes far longer than the kill.
	mustQemuIO(t, d, "big", []string{"write -P 0x5a 0 50M", "write -P 0x5b 50M 50M", "write -P 0x5c 100M 50M", "flush"})
	mustQemuIO(t, d, "keep", []string{"write -P 0x11 0 1M", "flush"})
	kept, err := c.CreateSnapshotSetReady(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"keep", "big"}})
	if err != nil {
		t.Fatalf("set before the kill: %v", err)
	}
	mustQemuIO(t, d, "keep", []string{"write -P 0x22 0 1M", "flush"})

	cut, err := c.CreateSnapshotSet(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"big"}})
	if err != nil {
		t.Fatalf("set to be cut short: %v", err)
	}
	d.kill(t)
	if cut.State != wire.StateCopying {
		t.Fatalf("the set was %q when the daemon was killed; want copying (is the data directory on a filesystem with reflinks?)", cut.State)
	}

	c = d.start(t)
	if _, err := c.GetSnapshotSet(ctx, cut.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("set cut short by the kill, after the restart: %v; want it gone", err)
	}
	if log, _ := os.ReadFile(d.log); !strings.Contains(string(log), "dropping snapshot set whose copy was cut short") {
		t.Errorf("the restart logged nothing about the set it dropped:\n%s", d.logTail())
	}
	got, err := c.GetSnapshotSet(ctx, kept.ID)
	if err != nil || got.State != wire.StateReady || len(got.Snapshots) != 2 {
		t.Fatalf("set made before the kill, after the restart: %+v, %v", got, err)
	}
	var files []string
	entries, _ := os.ReadDir(filepath.Join(d.data, "snapshots"))
	for _, e := range entries {
		files = append(files, e.Name())
	}
	want := []string{got.Snapshots[0].ID + ".raw", got.Snapshots[1].ID + ".raw"}
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("snapshot files after the restart: %v, want %v", files, want)
	}
	mustQemuIO(t, d, "big", []string{"read -P 0x5a 0 50M", "read -P 0x5b 50M 50M", "read -P 0x5c 100M 50M", "read -P 0 150M 10M"})
	mustQemuIO(t, d, "keep", []string{"read -P 0x22 0 1M"})
	keepSnap, err := os.ReadFile(filepath.Join(d.data, "snapshots", got.Snapshots[0].ID+".raw"))
	if err != nil || len(keepSnap) != 4<<20 || keepSnap[0] != 0x11 || keepSnap[1<<20-1] != 0x11 || keepSnap[1<<20] != 0 {
		t.Errorf("snapshot of keep made before the kill no longer holds its data (err %v)", err)
	}

	again, err := c.CreateSnapshotSetReady(ctx, wire.CreateSnapshotSetRequest{Volumes: []string{"big"}})
	if err != nil || again.State != wire.StateReady {
		t.Fatalf("a new set after the restart: %+v, %v", again, err)
	}
	d.stop(t)
}
