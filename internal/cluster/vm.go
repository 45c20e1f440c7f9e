package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// VMSpec is a VM as the user declared it. Its VM has the volume names of
// its disks and seed but not where they are on the storage box nor how a
// host reaches them: that is filled in when the VM is put on a host (see
// resolve).
type VMSpec struct {
	VM      hypervisor.VM
	Running bool
	Seed    *cloudinit.Seed // nil without cloud-init
}

// Create puts a new VM on the host placement chooses and starts it when it
// should run.
func (c *Cluster) Create(ctx context.Context, spec VMSpec) (hypervisor.Location, error) {
	var loc hypervisor.Location
	if (len(spec.VM.Disks) > 0 || spec.Seed != nil) && !c.HasStorage() {
		return loc, ErrNoStorage
	}
	// Invariant: one VM, one host. A VM of this name anywhere, or being
	// made by this apply, is a conflict, not something to adopt silently.
	var host HostView
	done, err := c.placer.Decide(func(booked map[string]Booking) (*Booking, error) {
		if _, ok := booked[spec.VM.Name]; ok {
			return nil, fmt.Errorf("another VM named %s is being created or changed by this apply: VM names are unique", spec.VM.Name)
		}
		locs, err := c.hosts.Locator.Locate(ctx, c.cfg.HostURIs(), spec.VM.Name)
		if err != nil && len(locs) == 0 {
			// A host that does not answer blocks no other host: names
			// are checked again on it when it is back (CheckDefinedOnce).
			c.log.Warn(ctx, "creating a VM while some hosts do not answer", map[string]any{"vm": spec.VM.Name, "error": err.Error()})
		}
		if len(locs) > 0 {
			return nil, fmt.Errorf("a VM named %s is already defined on %s: import it (terraform import) or choose another name",
				spec.VM.Name, locs[0].Host)
		}
		view := c.Survey(ctx)
		view.Booked = booked
		view.Planned = c.placer.plannedLocked()
		name, err := view.ChooseHost(spec.VM, c.placementOptions())
		if err != nil {
			return nil, err
		}
		host, _ = view.Host(name)
		return &Booking{VM: PlacementVM(spec.VM), Host: name}, nil
	})
	if err != nil {
		return loc, err
	}
	defer done()
	hostName := host.Config.Name
	c.log.Info(ctx, "placing VM", map[string]any{"vm": spec.VM.Name, "host": hostName})
	if err := c.readmit(ctx, hostName); err != nil {
		return loc, err
	}

	if err := c.resolve(ctx, &spec, host, true); err != nil {
		return loc, err
	}
	return c.put(ctx, host, spec)
}

// put defines the resolved VM of spec on host, and starts it when it
// should run.
func (c *Cluster) put(ctx context.Context, host HostView, spec VMSpec) (hypervisor.Location, error) {
	define := c.hosts.Runner.DefineVM
	if spec.Running {
		define = c.hosts.Runner.CreateVM
	}
	dom, err := define(ctx, host.Config.URI, spec.VM)
	if err != nil {
		return hypervisor.Location{}, err
	}
	return hypervisor.Location{Host: host.Config.Name, URI: host.Config.URI, Domain: dom}, nil
}

// resolve fills in how the VM's host reaches its volumes: the domain type,
// the portal, the host's initiator and CHAP secret, and each volume's IQN
// and LUN, making sure every volume lets the host in. It creates the
// cloud-init seed volume when missing; writeSeed writes the seed into it
// also when it exists (the VM must not run then).
func (c *Cluster) resolve(ctx context.Context, spec *VMSpec, host HostView, writeSeed bool) error {
	spec.VM.Type = host.Config.DomainTypeOn(host.Facts)
	if err := c.hosts.Prep.CheckNetworks(ctx, host.Config.URI, spec.VM.NICs); err != nil {
		return err
	}
	if len(spec.VM.Disks) == 0 && spec.Seed == nil {
		return nil
	}
	if !c.HasStorage() {
		return ErrNoStorage
	}
	initiator := hypervisor.HostInitiator(host.Config.Name)
	spec.VM.Storage = hypervisor.Storage{Portal: c.cfg.Portal, Initiator: initiator, CHAP: true}
	if err := c.hosts.Prep.EnsureCHAPSecret(ctx, host.Config.URI, c.access.CHAPSecret); err != nil {
		return err
	}
	for i, d := range spec.VM.Disks {
		vol, err := c.ensureAccess(ctx, d.Volume, initiator)
		if err != nil {
			return fmt.Errorf("disk %d: %w", i+1, err)
		}
		spec.VM.Disks[i].IQN, spec.VM.Disks[i].LUN = vol.IQN, vol.LUN
	}
	if spec.Seed != nil {
		vol, err := c.ensureSeed(ctx, spec, initiator, writeSeed)
		if err != nil {
			return err
		}
		spec.VM.CloudInit.IQN, spec.VM.CloudInit.LUN = vol.IQN, vol.LUN
	}
	return nil
}

// ensureAccess makes sure the host with initiator may log in to the volume
// with Drover's CHAP credentials, and returns the volume.
func (c *Cluster) ensureAccess(ctx context.Context, name, initiator string) (wire.Volume, error) {
	vol, err := c.storage.Volumes.GetVolume(ctx, name)
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
	if vol.CHAP == nil || vol.CHAP.User != c.access.CHAPUser {
		update.CHAP = &wire.CHAP{User: c.access.CHAPUser, Secret: c.access.CHAPSecret}
	}
	if update.Initiators == nil && update.CHAP == nil {
		return vol, nil
	}
	c.log.Info(ctx, "letting host in to volume", map[string]any{"volume": name, "initiator": initiator})
	vol, err = c.storage.Volumes.UpdateVolume(ctx, name, update)
	if err != nil {
		return vol, fmt.Errorf("let %s in to volume %q: %w", initiator, name, err)
	}
	return vol, nil
}

// Update brings the VM from had (its state) to want (the plan). A running VM
// takes what it can live; other changes redefine it, with a graceful
// restart when it runs (the plan has checked that it may restart).
//
// Where the VM belongs is decided again first, under the placement lock
// (see decideMove); it moves there first, so that a VM outgrowing its host
// moves before it grows, and the changes are made on the destination.
// planned is the host the plan showed ("" when known after apply);
// lastHost is where the state last saw the VM.
//
// A VM whose host is declared failed restarts elsewhere, cold, after the
// host is fenced (see recover.go); a VM with stale copies on a fenced host
// that is back has them removed, and the host's fence lifted, first.
func (c *Cluster) Update(ctx context.Context, had, want VMSpec, planned, lastHost string, grace time.Duration) (hypervisor.Location, error) {
	loc, found, _, err := c.Locate(ctx, had.VM.UUID)
	var silent *NotAnsweredError
	last, _ := c.cfg.Host(lastHost)
	switch {
	case errors.As(err, &silent) && last.Failed:
		want.VM.UUID = had.VM.UUID
		return c.restartElsewhere(ctx, want, lastHost, nil)
	case err != nil:
		return loc, err
	case !found:
		return loc, fmt.Errorf("VM %s (%s) is on no host any more", had.VM.Name, had.VM.UUID)
	}
	if hc, _ := c.cfg.Host(loc.Host); hc.Failed {
		want.VM.UUID = had.VM.UUID
		return c.restartElsewhere(ctx, want, loc.Host, &loc)
	}
	if err := c.readmitStale(ctx, loc.Domain.UUID); err != nil {
		return loc, err
	}
	cur, dom, err := c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID)
	if err != nil {
		return loc, err
	}
	dst, why, done, err := c.decideMove(ctx, loc, want.VM, planned)
	if err != nil {
		return loc, err
	}
	defer done()
	if dst.Config.Name != "" {
		if loc, err = c.move(ctx, loc, cur, dst, why); err != nil {
			return loc, err
		}
		if cur, dom, err = c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID); err != nil {
			return loc, err
		}
	}
	facts, err := c.hosts.Reader.Host(ctx, loc.URI)
	if err != nil {
		return loc, err
	}
	hc, ok := c.cfg.Host(loc.Host)
	if !ok {
		return loc, fmt.Errorf("VM %s runs on %s, which is not in the provider block", had.VM.Name, loc.Host)
	}
	host := HostView{Config: hc, Facts: facts}
	want.VM.UUID = cur.UUID

	running := dom.State.Active()
	reasons := RestartReasons(had, want)
	if !running || len(reasons) > 0 {
		seedChanged := slices.ContainsFunc(reasons, func(s string) bool { return strings.HasPrefix(s, "cloud_init") })
		return loc, c.redefine(ctx, loc, cur.UUID, want, host, running, seedChanged, reasons, grace)
	}
	if err := c.resolve(ctx, &want, host, false); err != nil {
		return loc, err
	}
	if err := c.updateLive(ctx, loc.URI, cur, want.VM); err != nil {
		return loc, err
	}
	if !want.Running {
		if _, err := c.hosts.Runner.Shutdown(ctx, loc.URI, cur.UUID, grace); err != nil {
			return loc, err
		}
	}
	return loc, nil
}

// redefine gives the VM at loc its new definition: a running one is shut
// down gracefully first (for reasons), and it starts when want runs.
func (c *Cluster) redefine(ctx context.Context, loc hypervisor.Location, id string, want VMSpec, host HostView, running, writeSeed bool, reasons []string, grace time.Duration) error {
	if running {
		c.log.Info(ctx, "restarting VM", map[string]any{"vm": want.VM.Name, "reasons": reasons})
		if _, err := c.hosts.Runner.Shutdown(ctx, loc.URI, id, grace); err != nil {
			return err
		}
	}
	if err := c.resolve(ctx, &want, host, writeSeed); err != nil {
		return err
	}
	if _, err := c.hosts.Runner.DefineVM(ctx, loc.URI, want.VM); err != nil {
		return err
	}
	if want.Running {
		if _, err := c.hosts.Runner.Start(ctx, loc.URI, id); err != nil {
			return err
		}
	}
	return nil
}

// updateLive changes the running VM cur into want without a restart:
// memory within its maximum, disks and network interfaces, metadata.
func (c *Cluster) updateLive(ctx context.Context, uri string, cur, want hypervisor.VM) error {
	id, live := cur.UUID, c.hosts.Changer
	if want.MemoryMiB != cur.MemoryMiB {
		if err := live.SetMemory(ctx, uri, id, want.MemoryMiB); err != nil {
			return err
		}
	}
	detach, attach := DiskChanges(cur.Disks, Volumes(want.Disks))
	for _, target := range detach {
		if err := live.DetachDisk(ctx, uri, id, target); err != nil {
			return err
		}
	}
	for _, v := range attach {
		i := slices.Index(Volumes(want.Disks), v)
		if _, err := live.AttachDisk(ctx, uri, id, want.Storage, want.Disks[i]); err != nil {
			return err
		}
	}
	detachNICs, attachNICs := NICChanges(cur.NICs, want.NICs)
	for _, mac := range detachNICs {
		if err := live.DetachNIC(ctx, uri, id, mac); err != nil {
			return err
		}
	}
	for _, n := range attachNICs {
		if _, err := live.AttachNIC(ctx, uri, id, n); err != nil {
			return err
		}
	}
	// Placement and allow_restart live in the metadata only; the disks'
	// volume names come from the definition as it is now.
	now, _, err := c.hosts.Reader.ReadVM(ctx, uri, id)
	if err != nil {
		return err
	}
	now.Placement, now.AllowRestart = want.Placement, want.AllowRestart
	return live.SetMetadata(ctx, uri, now)
}

// Delete shuts the VM down (gracefully, then hard), undefines it and
// deletes its cloud-init volume. Its disks' volumes stay.
func (c *Cluster) Delete(ctx context.Context, id, name string, grace time.Duration) error {
	loc, found, _, err := c.Locate(ctx, id)
	if err != nil {
		return err
	}
	if found {
		if _, err := c.hosts.Runner.Shutdown(ctx, loc.URI, loc.Domain.UUID, grace); err != nil {
			return err
		}
		if err := c.hosts.Runner.Undefine(ctx, loc.URI, loc.Domain.UUID); err != nil {
			return err
		}
	}
	if !c.HasStorage() {
		return nil
	}
	seed := SeedVolumeName(name)
	err = WhileInUse(ctx, func() error { return c.storage.Seeds.DeleteVolume(ctx, seed, false) })
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("delete cloud-init volume %q: %w", seed, err)
	}
	return nil
}
