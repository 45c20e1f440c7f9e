package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
)

// How the VM operations wait for the storage box to notice that a stopped
// guest's iSCSI sessions are gone.
const (
	sessionsGonePoll    = 500 * time.Millisecond
	sessionsGoneTimeout = 30 * time.Second
)

// locate finds the VM (by UUID or name) on every host (see locateVM).
func (r *vmResource) locate(ctx context.Context, vm string) (loc hypervisor.Location, found bool, warning string, err error) {
	return locateVM(ctx, r.hosts, r.hostURIs(), vm)
}

// vmLocator finds VMs on hosts; *hypervisor.Pool is the real one.
type vmLocator interface {
	Locate(ctx context.Context, hosts map[string]string, vm string) ([]hypervisor.Location, error)
}

// locateVM finds the VM (by UUID or name) on every host (name → URI). A VM
// defined on two hosts is an error that names both, and nothing is
// touched. A VM missing from every host that answered is not found, unless
// a host did not answer: then nobody can tell, and that is an error.
// warning names hosts that did not answer when the VM was found elsewhere.
func locateVM(ctx context.Context, hv vmLocator, hosts map[string]string, vm string) (loc hypervisor.Location, found bool, warning string, err error) {
	locs, lerr := hv.Locate(ctx, hosts, vm)
	switch {
	case len(locs) > 1:
		names := make([]string, len(locs))
		for i, l := range locs {
			names[i] = l.Host
		}
		return loc, false, "", fmt.Errorf("VM %s is defined on %s: a VM may be defined on one host only. "+
			"Drover does not guess which one is right; undefine the wrong copy by hand (virsh undefine) and refresh",
			vm, joinNames(names))
	case len(locs) == 1 && lerr != nil:
		return locs[0], true, lerr.Error(), nil
	case len(locs) == 1:
		return locs[0], true, "", nil
	case lerr != nil:
		return loc, false, "", fmt.Errorf("VM %s is on no host that answered, and some did not, so it may be there: %w", vm, lerr)
	}
	return loc, false, "", nil
}

// create puts a new VM on the host placement chooses and starts it when it
// should run.
func (r *vmResource) create(ctx context.Context, spec vmSpec) (hypervisor.Location, error) {
	var loc hypervisor.Location
	if (len(spec.VM.Disks) > 0 || spec.Seed != nil) && r.storage == nil {
		return loc, errNoStorage
	}
	// Invariant: one VM, one host. A VM of this name anywhere, or being
	// made by this apply, is a conflict, not something to adopt silently.
	var host hostView
	done, err := r.placer.decide(func(booked map[string]booking) (*booking, error) {
		if _, ok := booked[spec.VM.Name]; ok {
			return nil, fmt.Errorf("another VM named %s is being created or changed by this apply: VM names are unique", spec.VM.Name)
		}
		locs, err := r.hosts.Locate(ctx, r.hostURIs(), spec.VM.Name)
		if err != nil {
			return nil, err
		}
		if len(locs) > 0 {
			return nil, fmt.Errorf("a VM named %s is already defined on %s: import it (terraform import) or choose another name",
				spec.VM.Name, locs[0].Host)
		}
		view := surveyHosts(ctx, r.cfg, r.hosts)
		view.Booked = booked
		name, err := chooseHost(view, spec.VM, r.cfg.Placement.Strategy)
		if err != nil {
			return nil, err
		}
		host, _ = view.host(name)
		return &booking{VM: placementVM(spec.VM), Host: name}, nil
	})
	if err != nil {
		return loc, err
	}
	defer done()
	hostName := host.Config.Name
	tflog.Info(ctx, "placing VM", map[string]any{"vm": spec.VM.Name, "host": hostName})

	if err := r.resolve(ctx, &spec, host, true); err != nil {
		return loc, err
	}
	var dom hypervisor.Domain
	if spec.Running {
		dom, err = r.hosts.CreateVM(ctx, host.Config.URI, spec.VM)
	} else {
		dom, err = r.hosts.DefineVM(ctx, host.Config.URI, spec.VM)
	}
	if err != nil {
		return loc, err
	}
	return hypervisor.Location{Host: hostName, URI: host.Config.URI, Domain: dom}, nil
}

// resolve fills in how the VM's host reaches its volumes: the domain type,
// the portal, the host's initiator and CHAP secret, and each volume's IQN
// and LUN, making sure every volume lets the host in. It creates the
// cloud-init seed volume when missing; writeSeed writes the seed into it
// also when it exists (the VM must not run then).
func (r *vmResource) resolve(ctx context.Context, spec *vmSpec, host hostView, writeSeed bool) error {
	spec.VM.Type = host.Config.domainType(host.Facts)
	if err := r.hosts.CheckNetworks(ctx, host.Config.URI, spec.VM.NICs); err != nil {
		return err
	}
	if len(spec.VM.Disks) == 0 && spec.Seed == nil {
		return nil
	}
	if r.storage == nil {
		return errNoStorage
	}
	initiator := hostInitiator(host.Config.Name)
	spec.VM.Storage = hypervisor.Storage{Portal: r.cfg.Storage.Portal, Initiator: initiator, CHAP: true}
	if err := r.hosts.EnsureCHAPSecret(ctx, host.Config.URI, r.access.CHAPSecret); err != nil {
		return err
	}
	for i, d := range spec.VM.Disks {
		vol, err := r.ensureAccess(ctx, d.Volume, initiator)
		if err != nil {
			return fmt.Errorf("disk %d: %w", i+1, err)
		}
		spec.VM.Disks[i].IQN, spec.VM.Disks[i].LUN = vol.IQN, vol.LUN
	}
	if spec.Seed != nil {
		vol, err := r.ensureSeed(ctx, spec.VM.Name, spec, initiator, writeSeed)
		if err != nil {
			return err
		}
		spec.VM.CloudInit.IQN, spec.VM.CloudInit.LUN = vol.IQN, vol.LUN
	}
	return nil
}

// ensureAccess makes sure the host with initiator may log in to the volume
// with Drover's CHAP credentials, and returns the volume.
func (r *vmResource) ensureAccess(ctx context.Context, name, initiator string) (storage.Volume, error) {
	vol, err := r.storage.GetVolume(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return vol, fmt.Errorf("volume %q does not exist on the storage box", name)
	}
	if err != nil {
		return vol, fmt.Errorf("volume %q: %w", name, err)
	}
	var update storage.UpdateVolumeRequest
	if !slices.Contains(vol.Initiators, initiator) {
		initiators := append(slices.Clone(vol.Initiators), initiator)
		update.Initiators = &initiators
	}
	if vol.CHAP == nil || vol.CHAP.User != r.access.CHAPUser {
		update.CHAP = &storage.CHAP{User: r.access.CHAPUser, Secret: r.access.CHAPSecret}
	}
	if update.Initiators == nil && update.CHAP == nil {
		return vol, nil
	}
	tflog.Info(ctx, "letting host in to volume", map[string]any{"volume": name, "initiator": initiator})
	vol, err = r.storage.UpdateVolume(ctx, name, update)
	if err != nil {
		return vol, fmt.Errorf("let %s in to volume %q: %w", initiator, name, err)
	}
	return vol, nil
}

// ensureSeed makes the VM's cloud-init seed volume exist, with the seed in
// it when it is new or write is set, and lets the host in.
func (r *vmResource) ensureSeed(ctx context.Context, vm string, spec *vmSpec, initiator string, write bool) (storage.Volume, error) {
	name := seedVolumeName(vm)
	image, err := spec.Seed.Image()
	if err != nil {
		return storage.Volume{}, err
	}
	sizeMiB := max(1, (int64(len(image))+1<<20-1)>>20)
	vol, err := r.storage.GetVolume(ctx, name)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		vol, err = r.storage.CreateVolume(ctx, storage.CreateVolumeRequest{
			Name: name, SizeMiB: sizeMiB, Initiators: r.access.Initiators,
			CHAP: &storage.CHAP{User: r.access.CHAPUser, Secret: r.access.CHAPSecret},
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
			if vol, err = r.storage.GrowVolume(ctx, name, sizeMiB); err != nil {
				return vol, fmt.Errorf("grow cloud-init volume %q: %w", name, err)
			}
		}
		tflog.Info(ctx, "writing cloud-init seed", map[string]any{"volume": name, "bytes": len(image)})
		err := whileInUse(ctx, func() error {
			return r.storage.UploadVolume(ctx, name, bytes.NewReader(image), "raw")
		})
		if err != nil {
			return vol, fmt.Errorf("write cloud-init seed to volume %q: %w", name, err)
		}
	}
	return r.ensureAccess(ctx, name, initiator)
}

// maxSeedImage bounds how much of a seed volume readSeed reads: Drover's
// seeds are a few KiB at its start, and the rest of the volume is zeros.
const maxSeedImage = 16 << 20

// snapshotCleanupTimeout bounds deleting readSeed's snapshot, which runs
// even when the operation's own deadline has passed.
const snapshotCleanupTimeout = 30 * time.Second

// readSeed reads the cloud-init seed back from its volume, through a
// snapshot: the volume stays attached to a running guest, and a snapshot is
// the target's way to read a volume's content. The snapshot is deleted in
// every case.
func (r *vmResource) readSeed(ctx context.Context, volume string) (seed cloudinit.Seed, err error) {
	snap, err := r.storage.CreateSnapshot(ctx, volume)
	if err != nil {
		return seed, fmt.Errorf("snapshot cloud-init volume %q: %w", volume, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), snapshotCleanupTimeout)
		defer cancel()
		if derr := r.storage.DeleteSnapshot(ctx, snap.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete snapshot %s of cloud-init volume %q: %w", snap.ID, volume, derr))
		}
	}()
	body, err := r.storage.DownloadSnapshot(ctx, snap.ID)
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

// whileInUse runs fn again while the storage box refuses it because the
// volume is in use: a guest that just stopped leaves its iSCSI sessions
// behind for a moment.
func whileInUse(ctx context.Context, fn func() error) error {
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

// update brings the VM from had (its state) to want (the plan). A running VM
// takes what it can live; other changes redefine it, with a graceful
// restart when it runs (the plan has checked that it may restart).
//
// It first moves the VM when placement says it must (see relocate): the
// changes are then made on the destination, so a VM that outgrows its host
// moves before it grows. planned is the host the plan showed ("" when known
// after apply).
func (r *vmResource) update(ctx context.Context, had, want vmSpec, planned string, grace time.Duration) (hypervisor.Location, error) {
	loc, found, _, err := r.locate(ctx, had.VM.UUID)
	if err != nil {
		return loc, err
	}
	if !found {
		return loc, fmt.Errorf("VM %s (%s) is on no host any more", had.VM.Name, had.VM.UUID)
	}
	cur, dom, err := r.hosts.ReadVM(ctx, loc.URI, loc.Domain.UUID)
	if err != nil {
		return loc, err
	}
	// Where the VM belongs is decided again, under the placement lock; it
	// moves there first, so that a VM outgrowing its host moves before it
	// grows, and the changes are made on the destination.
	dst, why, done, err := r.decideMove(ctx, loc, want.VM, planned)
	if err != nil {
		return loc, err
	}
	defer done()
	if dst.Config.Name != "" {
		if loc, err = r.move(ctx, loc, cur, dst, why); err != nil {
			return loc, err
		}
		if cur, dom, err = r.hosts.ReadVM(ctx, loc.URI, loc.Domain.UUID); err != nil {
			return loc, err
		}
	}
	facts, err := r.hosts.Host(ctx, loc.URI)
	if err != nil {
		return loc, err
	}
	hc, ok := r.hostConfig(loc.Host)
	if !ok {
		return loc, fmt.Errorf("VM %s runs on %s, which is not in the provider block", had.VM.Name, loc.Host)
	}
	host := hostView{Config: hc, Facts: facts}
	want.VM.UUID = cur.UUID

	running := dom.State.Active()
	reasons := restartReasons(had, want)
	seedChanged := slices.ContainsFunc(reasons, func(s string) bool { return strings.HasPrefix(s, "cloud_init") })
	if !running || len(reasons) > 0 {
		if running {
			tflog.Info(ctx, "restarting VM", map[string]any{"vm": want.VM.Name, "reasons": reasons})
			if _, err := r.hosts.Shutdown(ctx, loc.URI, cur.UUID, grace); err != nil {
				return loc, err
			}
		}
		if err := r.resolve(ctx, &want, host, seedChanged); err != nil {
			return loc, err
		}
		if _, err := r.hosts.DefineVM(ctx, loc.URI, want.VM); err != nil {
			return loc, err
		}
		if want.Running {
			if _, err := r.hosts.Start(ctx, loc.URI, cur.UUID); err != nil {
				return loc, err
			}
		}
		return loc, nil
	}
	if err := r.resolve(ctx, &want, host, false); err != nil {
		return loc, err
	}
	if err := r.updateLive(ctx, loc.URI, cur, want.VM); err != nil {
		return loc, err
	}
	if !want.Running {
		if _, err := r.hosts.Shutdown(ctx, loc.URI, cur.UUID, grace); err != nil {
			return loc, err
		}
	}
	return loc, nil
}

// updateLive changes the running VM cur into want without a restart:
// memory within its maximum, disks and network interfaces, metadata.
func (r *vmResource) updateLive(ctx context.Context, uri string, cur, want hypervisor.VM) error {
	id := cur.UUID
	if want.MemoryMiB != cur.MemoryMiB {
		if err := r.hosts.SetMemory(ctx, uri, id, want.MemoryMiB); err != nil {
			return err
		}
	}
	detach, attach := diskChanges(cur.Disks, volumes(want.Disks))
	for _, target := range detach {
		if err := r.hosts.DetachDisk(ctx, uri, id, target); err != nil {
			return err
		}
	}
	for _, v := range attach {
		i := slices.Index(volumes(want.Disks), v)
		if _, err := r.hosts.AttachDisk(ctx, uri, id, want.Storage, want.Disks[i]); err != nil {
			return err
		}
	}
	detachNICs, attachNICs := nicChanges(cur.NICs, want.NICs)
	for _, mac := range detachNICs {
		if err := r.hosts.DetachNIC(ctx, uri, id, mac); err != nil {
			return err
		}
	}
	for _, n := range attachNICs {
		if _, err := r.hosts.AttachNIC(ctx, uri, id, n); err != nil {
			return err
		}
	}
	// Placement and allow_restart live in the metadata only; the disks'
	// volume names come from the definition as it is now.
	now, _, err := r.hosts.ReadVM(ctx, uri, id)
	if err != nil {
		return err
	}
	now.Placement, now.AllowRestart = want.Placement, want.AllowRestart
	return r.hosts.SetMetadata(ctx, uri, now)
}

// delete shuts the VM down (gracefully, then hard), undefines it and
// deletes its cloud-init volume. Its disks' volumes stay.
func (r *vmResource) delete(ctx context.Context, id, name string, grace time.Duration) error {
	loc, found, _, err := r.locate(ctx, id)
	if err != nil {
		return err
	}
	if found {
		if _, err := r.hosts.Shutdown(ctx, loc.URI, loc.Domain.UUID, grace); err != nil {
			return err
		}
		if err := r.hosts.Undefine(ctx, loc.URI, loc.Domain.UUID); err != nil {
			return err
		}
	}
	if r.storage == nil {
		return nil
	}
	err = whileInUse(ctx, func() error { return r.storage.DeleteVolume(ctx, seedVolumeName(name), false) })
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("delete cloud-init volume %q: %w", seedVolumeName(name), err)
	}
	return nil
}

func (r *vmResource) hostConfig(name string) (hostConfig, bool) {
	for _, h := range r.cfg.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return hostConfig{}, false
}
