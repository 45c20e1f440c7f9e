package cluster

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// What the cluster needs of the hypervisor hosts, one interface per use;
// *hypervisor.Pool is every one of them.
type (
	// HostReader answers a survey: a host's facts and its VMs.
	HostReader interface {
		Host(ctx context.Context, uri string) (hypervisor.Host, error)
		ReadVM(ctx context.Context, uri, vm string) (hypervisor.VM, hypervisor.Domain, error)
	}
	// Locator finds a VM on the hosts (name → URI).
	Locator interface {
		Locate(ctx context.Context, hosts map[string]string, vm string) ([]hypervisor.Location, error)
	}
	// HostPrep makes a host ready to run a VM: its networks are there and
	// it has Drover's CHAP secret.
	HostPrep interface {
		CheckNetworks(ctx context.Context, uri string, nics []hypervisor.NIC) error
		EnsureCHAPSecret(ctx context.Context, uri, value string) error
	}
	// Runner defines, starts, stops and removes VMs.
	Runner interface {
		DefineVM(ctx context.Context, uri string, vm hypervisor.VM) (hypervisor.Domain, error)
		CreateVM(ctx context.Context, uri string, vm hypervisor.VM) (hypervisor.Domain, error)
		Start(ctx context.Context, uri, vm string) (hypervisor.Domain, error)
		Shutdown(ctx context.Context, uri, vm string, grace time.Duration) (forced bool, err error)
		Undefine(ctx context.Context, uri, vm string) error
	}
	// LiveChanger changes a running VM without a restart.
	LiveChanger interface {
		SetMemory(ctx context.Context, uri, vm string, memoryMiB int64) error
		SetMetadata(ctx context.Context, uri string, vm hypervisor.VM) error
		AttachDisk(ctx context.Context, uri, vm string, s hypervisor.Storage, d hypervisor.Disk) (hypervisor.Disk, error)
		DetachDisk(ctx context.Context, uri, vm, target string) error
		AttachNIC(ctx context.Context, uri, vm string, n hypervisor.NIC) (hypervisor.NIC, error)
		DetachNIC(ctx context.Context, uri, vm, mac string) error
	}
	// Migrator moves a VM between hosts and tells where it is after.
	Migrator interface {
		Move(ctx context.Context, vm, from, to string, opts hypervisor.MigrateOptions) (live bool, err error)
		Domain(ctx context.Context, uri, vm string) (hypervisor.Domain, bool, error)
	}
	// Remover stops a VM at once, without asking its guest, and
	// undefines it: for stale copies on a fenced host, which must never run
	// again.
	Remover interface {
		Remove(ctx context.Context, uri, vm string) error
	}
	// Quiescer stills a VM for a backup and gives its definition.
	Quiescer interface {
		DomainXML(ctx context.Context, uri, vm string) (string, error)
		Quiesce(ctx context.Context, uri, vm string, useAgent bool) (hypervisor.Quiesced, func(context.Context) (time.Duration, error), error)
	}
)

// What the cluster needs of the storage box, one interface per use;
// *storage.Client is every one of them.
type (
	// VolumeAccess reads volumes and changes who may log in to them.
	VolumeAccess interface {
		GetVolume(ctx context.Context, name string) (wire.Volume, error)
		UpdateVolume(ctx context.Context, name string, req storage.UpdateVolumeRequest) (wire.Volume, error)
	}
	// SeedStore keeps the VMs' cloud-init seed volumes.
	SeedStore interface {
		CreateVolume(ctx context.Context, req wire.CreateVolumeRequest) (wire.Volume, error)
		GrowVolume(ctx context.Context, name string, sizeMiB int64) (wire.Volume, error)
		UploadVolume(ctx context.Context, name string, image io.Reader, format string) error
		DeleteVolume(ctx context.Context, name string, force bool) error
		CreateSnapshot(ctx context.Context, volume string) (wire.Snapshot, error)
		// WaitSnapshot waits until a snapshot cut by copy-before-write is
		// copied (a cut is instant; its copy is not).
		WaitSnapshot(ctx context.Context, id string) (wire.Snapshot, error)
		DownloadSnapshot(ctx context.Context, id string) (io.ReadCloser, error)
		DeleteSnapshot(ctx context.Context, id string) error
	}
	// Fencer shuts a host's initiator out of every volume, and lets it
	// back in (invariant 5).
	Fencer interface {
		Fences(ctx context.Context) ([]wire.Fence, error)
		// Fence returns once no session of the initiator is left.
		Fence(ctx context.Context, initiator, reason string) (wire.Fence, error)
		Unfence(ctx context.Context, initiator string) error
		Sessions(ctx context.Context) ([]wire.Session, error)
	}
	// SetStore cuts and keeps snapshot sets, the backups.
	SetStore interface {
		CreateSnapshotSet(ctx context.Context, req wire.CreateSnapshotSetRequest) (wire.SnapshotSet, error)
		// WaitSnapshotSet waits until every snapshot of a set is copied.
		WaitSnapshotSet(ctx context.Context, id string) (wire.SnapshotSet, error)
		SetSnapshotSetLabels(ctx context.Context, id string, labels map[string]string) (wire.SnapshotSet, error)
		DownloadSnapshotSparse(ctx context.Context, id string, f *os.File) (string, error)
		DeleteSnapshotSet(ctx context.Context, id string) error
	}
)

var (
	_ HostReader  = (*hypervisor.Pool)(nil)
	_ Locator     = (*hypervisor.Pool)(nil)
	_ HostPrep    = (*hypervisor.Pool)(nil)
	_ Runner      = (*hypervisor.Pool)(nil)
	_ LiveChanger = (*hypervisor.Pool)(nil)
	_ Migrator    = (*hypervisor.Pool)(nil)
	_ Quiescer    = (*hypervisor.Pool)(nil)
	_ Remover     = (*hypervisor.Pool)(nil)

	_ VolumeAccess = (*storage.Client)(nil)
	_ SeedStore    = (*storage.Client)(nil)
	_ SetStore     = (*storage.Client)(nil)
	_ Fencer       = (*storage.Client)(nil)
)

// Hosts are the hypervisor sides the cluster works with, each the small
// interface of one use. A nil field is a use the hypervisor cannot serve.
type Hosts struct {
	Reader   HostReader
	Locator  Locator
	Prep     HostPrep
	Runner   Runner
	Changer  LiveChanger
	Migrator Migrator
	Quiescer Quiescer
	Remover  Remover
}

// HostsOf fills every use that hv serves.
func HostsOf(hv any) Hosts {
	var h Hosts
	h.Reader, _ = hv.(HostReader)
	h.Locator, _ = hv.(Locator)
	h.Prep, _ = hv.(HostPrep)
	h.Runner, _ = hv.(Runner)
	h.Changer, _ = hv.(LiveChanger)
	h.Migrator, _ = hv.(Migrator)
	h.Quiescer, _ = hv.(Quiescer)
	h.Remover, _ = hv.(Remover)
	return h
}

// RunsVMs tells whether every use that running VMs needs is served.
func (h Hosts) RunsVMs() bool {
	return h.Reader != nil && h.Locator != nil && h.Prep != nil && h.Runner != nil && h.Changer != nil &&
		h.Migrator != nil && h.Remover != nil
}

// BacksUp tells whether every use that a backup needs is served.
func (h Hosts) BacksUp() bool { return h.Reader != nil && h.Locator != nil && h.Quiescer != nil }

// Storage is the storage box's sides the cluster works with; nil fields
// all, when there is no storage.
type Storage struct {
	Volumes VolumeAccess
	Seeds   SeedStore
	Sets    SetStore
	Fences  Fencer
}

// StorageOf fills every use that st serves; a nil st is no storage.
func StorageOf(st any) Storage {
	var s Storage
	if st == nil {
		return s
	}
	s.Volumes, _ = st.(VolumeAccess)
	s.Seeds, _ = st.(SeedStore)
	s.Sets, _ = st.(SetStore)
	s.Fences, _ = st.(Fencer)
	return s
}

// ErrNoStorage is the error of a VM with disks or a seed in a cluster
// without storage.
var ErrNoStorage = errors.New("the provider block has no storage: VMs with disks or cloud_init need it")

// Logger is where the cluster says what it does; the provider's writes to
// Terraform's log.
type Logger interface {
	Debug(ctx context.Context, msg string, fields map[string]any)
	Info(ctx context.Context, msg string, fields map[string]any)
	Warn(ctx context.Context, msg string, fields map[string]any)
}

type quiet struct{}

func (quiet) Debug(context.Context, string, map[string]any) {}
func (quiet) Info(context.Context, string, map[string]any)  {}
func (quiet) Warn(context.Context, string, map[string]any)  {}

// Cluster is one configured cluster: its hosts, its storage box and the
// placement decisions under way.
type Cluster struct {
	cfg     Config
	access  Access
	hosts   Hosts
	storage Storage
	placer  *Placer
	log     Logger
	// fencing serializes fencing and readmitting, by host name.
	fencing keyedMutex
}

// New returns the cluster of cfg; log may be nil.
func New(cfg Config, access Access, hosts Hosts, st Storage, log Logger) *Cluster {
	if log == nil {
		log = quiet{}
	}
	return &Cluster{cfg: cfg, access: access, hosts: hosts, storage: st,
		placer: NewPlacer(cfg.Placement.MigrationsPerHost), log: log}
}

// Hosts are the hypervisor sides of the cluster.
func (c *Cluster) Hosts() Hosts { return c.hosts }

// HasStorage tells whether the cluster has a storage box.
func (c *Cluster) HasStorage() bool { return c.storage.Volumes != nil }

// placementOptions are the options of every placement decision.
func (c *Cluster) placementOptions() placement.Options {
	return placement.Options{Strategy: c.cfg.Placement.Strategy, StrictSpread: c.cfg.Placement.StrictSpread}
}
