package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// A host declared failed (HostConfig.Failed) is never trusted again until
// it is back and its stale copies are gone. The order is the invariant
// (DESIGN.md invariants 1 and 5):
//
//  1. fence: the storage box shuts the host's initiator out of every
//     volume, and no session of it is left (fenceHost);
//  2. only then does a VM last seen there start elsewhere, cold, from its
//     shared disks (restartElsewhere); its copy on the failed host, if the
//     host still answers, is destroyed first;
//  3. when the host is back in service (failed = false and it answers),
//     its copies of VMs that now run elsewhere are destroyed and undefined,
//     and only then is its fence lifted (readmit); nothing starts on or
//     moves to a fenced host before that.

// keyedMutex is one mutex per key, made when first used.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex // guarded by mu
}

// lock locks the key's mutex and returns its unlock.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*sync.Mutex{}
	}
	m, ok := k.m[key]
	if !ok {
		m = &sync.Mutex{}
		k.m[key] = m
	}
	k.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// fenced asks the storage box which configured hosts are fenced, by host
// name; none without storage.
func (c *Cluster) fenced(ctx context.Context) (map[string]bool, error) {
	if c.storage.Fences == nil {
		return nil, nil
	}
	fences, err := c.storage.Fences.Fences(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask the storage box which hosts are fenced: %w", err)
	}
	byInitiator := map[string]bool{}
	for _, f := range fences {
		byInitiator[f.Initiator] = true
	}
	out := map[string]bool{}
	for _, h := range c.cfg.Hosts {
		if byInitiator[hypervisor.HostInitiator(h.Name)] {
			out[h.Name] = true
		}
	}
	return out, nil
}

// fenceHost shuts the failed host out of every volume at the storage box,
// then checks that the fence holds: no session of its initiator is left.
// Fencing a fenced host again is harmless.
func (c *Cluster) fenceHost(ctx context.Context, host string) error {
	if c.storage.Fences == nil {
		return fmt.Errorf("host %s is declared failed, but its VMs' disks cannot be fenced without a storage box: "+
			"Drover does not start a VM elsewhere while its host may still write to its disks", host)
	}
	unlock := c.fencing.lock(host)
	defer unlock()
	initiator := hypervisor.HostInitiator(host)
	start := time.Now()
	if _, err := c.storage.Fences.Fence(ctx, initiator, "host "+host+" is declared failed in the provider block"); err != nil {
		return fmt.Errorf("fence host %s (initiator %s) at the storage box: %w", host, initiator, err)
	}
	sessions, err := c.storage.Fences.Sessions(ctx)
	if err != nil {
		return fmt.Errorf("check the fence of host %s: list the storage box's sessions: %w", host, err)
	}
	for _, s := range sessions {
		if s.Initiator == initiator {
			return fmt.Errorf("the fence of host %s does not hold: its initiator %s still has a session to volume %s "+
				"(from %s). Nothing was started elsewhere", host, initiator, s.Volume, s.RemoteAddr)
		}
	}
	c.log.Info(ctx, "fenced host", map[string]any{"host": host, "initiator": initiator,
		"duration": time.Since(start).Round(time.Millisecond).String()})
	return nil
}

// restartElsewhere starts the VM want, last seen on the failed host from
// (at loc there, when the host still answers and has it), on the host that
// placement picks, cold, from its shared disks: the failed host is fenced
// first, and its copy destroyed when it answers. It returns where the VM
// is after.
func (c *Cluster) restartElsewhere(ctx context.Context, want VMSpec, from string, loc *hypervisor.Location) (out hypervisor.Location, err error) {
	if err := c.fenceHost(ctx, from); err != nil {
		return out, fmt.Errorf("restart VM %s elsewhere: %w", want.VM.Name, err)
	}
	if loc != nil {
		// The host answers, but it is declared failed: never trusted, its
		// copy is destroyed. Fenced, that copy cannot reach the disks any
		// more, so it is destroyed while the VM starts elsewhere (a QEMU
		// whose disks were cut off takes seconds to stop); the restart
		// returns once it is gone.
		removed := make(chan error, 1)
		go func() { removed <- c.hosts.Remover.Remove(ctx, loc.URI, loc.Domain.UUID) }()
		defer func() {
			if rerr := <-removed; rerr != nil && err == nil {
				err = fmt.Errorf("VM %s runs on %s, but destroying its copy on the failed host %s failed: %w (the host "+
					"stays fenced; it is removed when the host is back)", want.VM.Name, out.Host, from, rerr)
			}
		}()
	}
	var dst HostView
	next := PlacementVM(want.VM)
	next.Current = from
	done, err := c.placer.Decide(func(booked map[string]Booking) (*Booking, error) {
		view := c.Survey(ctx)
		view.Booked = booked
		view.Planned = c.placer.plannedLocked()
		m, _, err := view.planMove(next, c.placementOptions())
		switch {
		case err != nil:
			return nil, fmt.Errorf("place VM %s: %s%s", want.VM.Name, ExplainPlacement(err, want.VM.Name), view.UnreachableNote())
		case !m.Found || !m.Moves():
			return nil, fmt.Errorf("VM %s was on the failed host %s and placement finds no other host for it "+
				"(pinned there?): it stays down", want.VM.Name, from)
		}
		dst, _ = view.Host(m.Host)
		return &Booking{VM: next, Host: m.Host, From: from}, nil
	})
	if err != nil {
		return out, err
	}
	defer done()
	if err := c.readmit(ctx, dst.Config.Name); err != nil {
		return out, err
	}
	fields := map[string]any{"vm": want.VM.Name, "from": from, "to": dst.Config.Name, "reason": string(placement.HostFailed)}
	c.log.Info(ctx, "restarting VM elsewhere", fields)
	if err := c.resolve(ctx, &want, dst, false); err != nil {
		return out, fmt.Errorf("restart VM %s on %s: %w", want.VM.Name, dst.Config.Name, err)
	}
	if out, err = c.put(ctx, dst, want); err != nil {
		return out, fmt.Errorf("restart VM %s on %s: %w", want.VM.Name, dst.Config.Name, err)
	}
	return out, nil
}

// readmit lets a fenced host back in once it may run VMs again: it is in
// service or in maintenance (not failed) and answers. Its copies of VMs
// that run elsewhere are destroyed and undefined first, their QEMU too;
// the fence is lifted only when none is left. A host that is not fenced is
// left as it is.
func (c *Cluster) readmit(ctx context.Context, host string) error {
	if c.storage.Fences == nil {
		return nil
	}
	unlock := c.fencing.lock(host)
	defer unlock()
	fenced, err := c.fenced(ctx)
	if err != nil {
		// The storage box does not answer: a VM without disks may still
		// go there, and one with disks fails on its own.
		c.log.Warn(ctx, "cannot tell whether the host is fenced", map[string]any{"host": host, "error": err.Error()})
		return nil
	}
	if !fenced[host] {
		return nil // most of the time: nothing to do
	}
	view := c.Survey(ctx)
	if view.FencesErr != nil {
		return view.FencesErr
	}
	h, ok := view.Host(host)
	switch {
	case !ok || !h.Fenced:
		return nil
	case h.Config.Failed:
		return fmt.Errorf("host %s is declared failed: nothing may run there (set failed = false once it is back)", host)
	case h.Err != nil:
		return fmt.Errorf("host %s is fenced at the storage box and cannot be reached, so its stale copies cannot be "+
			"removed: it stays fenced: %w", host, h.Err)
	}
	stale := view.Stale()[host]
	var g errgroup.Group // a QEMU stuck on its fenced disks takes seconds to stop: all at once
	for _, d := range h.Facts.Domains {
		if _, ours := h.VMs[d.Name]; !ours {
			continue
		}
		g.Go(func() error {
			if stale[d.UUID] {
				c.log.Info(ctx, "removing stale copy", map[string]any{"host": host, "vm": d.Name})
				if err := c.hosts.Remover.Remove(ctx, h.Config.URI, d.UUID); err != nil {
					return fmt.Errorf("host %s: remove its stale copy of VM %s (it runs elsewhere): %w; the host stays fenced", host, d.Name, err)
				}
				return nil
			}
			// Its only copy, but it ran while the host was cut off: it
			// is stopped, never trusted, and the next apply starts it.
			if d.State.Active() {
				c.log.Info(ctx, "stopping a VM that ran while its host was fenced", map[string]any{"host": host, "vm": d.Name})
				if _, err := c.hosts.Runner.Shutdown(ctx, h.Config.URI, d.UUID, 0); err != nil {
					return fmt.Errorf("host %s: stop VM %s, which ran while the host was fenced: %w; the host stays fenced", host, d.Name, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	after := c.Survey(ctx)
	if left := after.Stale()[host]; len(left) > 0 {
		return fmt.Errorf("host %s still has %d stale copies of VMs that run elsewhere: it stays fenced", host, len(left))
	}
	if hv, _ := after.Host(host); hv.Err != nil {
		return fmt.Errorf("host %s stopped answering while its stale copies were removed: it stays fenced: %w", host, hv.Err)
	}
	if err := c.storage.Fences.Unfence(ctx, hypervisor.HostInitiator(host)); err != nil {
		return fmt.Errorf("lift the fence of host %s: %w", host, err)
	}
	c.log.Info(ctx, "lifted fence", map[string]any{"host": host})
	return nil
}

// readmitStale lets back in every fenced host, in service, that holds a
// stale copy of the VM with that UUID (see readmit).
func (c *Cluster) readmitStale(ctx context.Context, uuid string) error {
	if fenced, err := c.fenced(ctx); err != nil || len(fenced) == 0 {
		return nil // none, or the storage box cannot say: then no host can be let back in either
	}
	view := c.Survey(ctx)
	var errs []error
	for host, copies := range view.Stale() {
		if h, _ := view.Host(host); copies[uuid] && !h.Config.Failed && h.Err == nil {
			errs = append(errs, c.readmit(ctx, host))
		}
	}
	return errors.Join(errs...)
}

// StaleCopies names the hosts, back in service, whose stale copy of the VM
// with that UUID the next apply removes before it lifts their fence.
func (v View) StaleCopies(uuid string) []string {
	var out []string
	for _, h := range v.Hosts {
		if v.Stale()[h.Config.Name][uuid] && !h.Config.Failed && h.Err == nil {
			out = append(out, h.Config.Name)
		}
	}
	return out
}
