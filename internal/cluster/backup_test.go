package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// stiller is a Quiescer that pauses for held and fails to release the guest
// with thawErr.
type stiller struct {
	held    time.Duration
	thawErr error
	asked   []string // the VMs it stilled
}

func (s *stiller) DomainXML(_ context.Context, _, vm string) (string, error) {
	return "<domain><uuid>" + vm + "</uuid></domain>", nil
}

func (s *stiller) Quiesce(_ context.Context, _, vm string, _ bool) (hypervisor.Quiesced, func(context.Context) (time.Duration, error), error) {
	s.asked = append(s.asked, vm)
	q := hypervisor.Quiesced{How: "paused", Consistency: "crash"}
	return q, func(context.Context) (time.Duration, error) { return s.held, s.thawErr }, nil
}

// backupEnv is a cluster with storage, a VM with two disks on alpha, and
// q as its Quiescer.
func backupEnv(t *testing.T, q *stiller) (testEnv, string) {
	t.Helper()
	e := newEnv(t, true)
	ctx := context.Background()
	for _, v := range []string{"db-root", "db-data"} {
		if _, err := e.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: v, SizeMiB: 2}); err != nil {
			t.Fatal(err)
		}
	}
	spec := VMSpec{VM: vm("db", 256), Running: true}
	spec.VM.Placement.Host = "alpha"
	spec.VM.Disks = []hypervisor.Disk{{Volume: "db-root"}, {Volume: "db-data"}}
	loc, err := e.c.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	e.c.hosts.Quiescer = q
	return e, loc.Domain.UUID
}

// cut backs up the VM id of e.
func cut(t *testing.T, e testEnv, id string) Backup {
	t.Helper()
	b, err := e.c.Cut(context.Background(), id, true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestABackupCutsEveryDiskWithTheDefinitionAndThePause(t *testing.T) {
	t.Parallel()
	q := &stiller{held: 42 * time.Millisecond}
	e, id := backupEnv(t, q)
	ctx := context.Background()
	b := cut(t, e, id)
	if b.Unreleased != "" || len(q.asked) != 1 {
		t.Errorf("unreleased %q, stilled %v; want the VM stilled once and released", b.Unreleased, q.asked)
	}
	set, err := e.client.GetSnapshotSet(ctx, b.Set.ID)
	if err != nil {
		t.Fatal(err)
	}
	var vols []string
	for _, s := range set.Snapshots {
		vols = append(vols, s.Volume)
	}
	if strings.Join(vols, ",") != "db-root,db-data" {
		t.Errorf("snapshots of %v, want db-root and db-data in the VM's order", vols)
	}
	want := map[string]string{LabelVMID: id, LabelVMName: "db", LabelConsistency: "crash", LabelQuiesced: "paused", LabelPauseMS: "42"}
	for k, v := range want {
		if set.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, set.Labels[k], v)
		}
	}
	xml, err := e.client.SnapshotSetAttachment(ctx, set.ID, DomainAttachment)
	if err != nil || !strings.Contains(string(xml), id) {
		t.Errorf("domain attachment %q, %v; want the VM's definition", xml, err)
	}
}

func TestABackupWhoseGuestStaysStilledSaysWhatToDo(t *testing.T) {
	t.Parallel()
	q := &stiller{thawErr: errors.New("agent gone")}
	e, id := backupEnv(t, q)
	b := cut(t, e, id)
	for _, w := range []string{"was made", "db on host alpha could not be released", "agent gone", "virsh resume db"} {
		if !strings.Contains(b.Unreleased, w) {
			t.Errorf("unreleased = %q, want it to contain %q", b.Unreleased, w)
		}
	}
}

func TestABackupOfAVMWhoseDiskIsGoneIsRefused(t *testing.T) {
	t.Parallel()
	q := &stiller{}
	e, id := backupEnv(t, q)
	ctx := context.Background()
	if err := e.client.DeleteVolume(ctx, "db-data", true); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.Cut(ctx, id, true)
	if err == nil || !strings.Contains(err.Error(), `disk 2 is volume "db-data", which is gone`) || len(q.asked) != 0 {
		t.Errorf("got %v (stilled %v), want disk 2 named and the guest left alone", err, q.asked)
	}
}

func TestAnExportHasEveryFileWithItsChecksum(t *testing.T) {
	t.Parallel()
	e, id := backupEnv(t, &stiller{})
	ctx := context.Background()
	b := cut(t, e, id)
	dir := filepath.Join(t.TempDir(), "export")
	if err := CheckExportPath(dir); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Export(ctx, b, dir); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.Backup != b.Set.ID || m.VMID != id || m.VMName != "db" || len(m.Files) != 3 {
		t.Fatalf("manifest %+v: want backup %s of db with three files", m, b.Set.ID)
	}
	for _, f := range m.Files {
		body, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(body)) != f.SizeBytes {
			t.Errorf("%s: sha256 or size does not match the manifest", f.Name)
		}
	}
	wantErr(t, CheckExportPath(dir), "is not empty")
}

func TestAFailedExportLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	e, id := backupEnv(t, &stiller{})
	ctx := context.Background()
	b := cut(t, e, id)
	dir := filepath.Join(t.TempDir(), "export")
	bad := b
	bad.Set.Snapshots = append(bad.Set.Snapshots, wire.Snapshot{ID: "no-such-snapshot", Volume: "ghost"})
	wantErr(t, e.c.Export(ctx, bad, dir), "export disk ghost")
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the export folder is left: %v", err)
	}
	if _, err := e.client.GetSnapshotSet(ctx, b.Set.ID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the backup is left: %v", err)
	}
}

// failingMigrator fails every move; the VM stays where it was.
type failingMigrator struct{ Migrator }

func (f failingMigrator) Move(context.Context, string, string, string, hypervisor.MigrateOptions) (bool, error) {
	return false, errors.New("connection to beta lost")
}

func TestAFailedMoveSaysTheVMIsStillOnItsSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	spec := e.pinned(t, VMSpec{VM: vm("web", 256), Running: true}, "alpha", true)
	want := spec
	want.VM.Placement.Host = "beta"
	e.c.hosts.Migrator = failingMigrator{e.hosts}
	_, err := e.c.Update(ctx, spec, want, "beta", "alpha", time.Second)
	wantErr(t, err, "move VM web from alpha to beta (pin changed)", "connection to beta lost",
		"It is still running on alpha; nothing was moved")
	e.wantOn(t, "web", "alpha")
}

// recordingMigrator records the options of every move and then fails it,
// as failingMigrator does: the test driver cannot migrate to an address.
type recordingMigrator struct {
	Migrator
	mu   sync.Mutex
	opts map[string]hypervisor.MigrateOptions // by destination URI; guarded by mu
}

func (r *recordingMigrator) Move(_ context.Context, _, _, to string, opts hypervisor.MigrateOptions) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opts[to] = opts
	return false, errors.New("recorded")
}

func TestAMoveSendsTheVMToItsDestinationsMigrationAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, address string
	}{
		{"a destination with a migration address gets it", "192.0.2.7"},
		{"a destination without one leaves it to libvirt", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, false, func(c *Config) {
				for i := range c.Hosts {
					if c.Hosts[i].Name == "beta" {
						c.Hosts[i].MigrationAddress = tt.address
					} else {
						c.Hosts[i].MigrationAddress = "192.0.2.1"
					}
				}
			})
			ctx := context.Background()
			spec := e.pinned(t, VMSpec{VM: vm("web", 256), Running: true}, "alpha", true)
			want := spec
			want.VM.Placement.Host = "beta"
			rec := &recordingMigrator{Migrator: e.hosts, opts: map[string]hypervisor.MigrateOptions{}}
			e.c.hosts.Migrator = rec
			_, err := e.c.Update(ctx, spec, want, "beta", "alpha", time.Second)
			wantErr(t, err, "move VM web from alpha to beta", "recorded")
			rec.mu.Lock()
			defer rec.mu.Unlock()
			opts, ok := rec.opts[e.uri["beta"]]
			if !ok {
				t.Fatalf("no move to beta was asked for (moves: %v)", rec.opts)
			}
			if opts.Address != tt.address {
				t.Errorf("the move to beta was sent to address %q, want %q", opts.Address, tt.address)
			}
		})
	}
}
