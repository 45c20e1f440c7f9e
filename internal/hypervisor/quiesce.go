package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"libvirt.org/go/libvirt"
)

// How a VM's disks were made to stand still for a snapshot.
const (
	QuiescedByAgent = "agent"   // the guest agent froze its filesystems
	QuiescedByPause = "paused"  // the VM was paused (crash-consistent)
	QuiescedStopped = "stopped" // the VM was not running
)

// Consistency of a snapshot of a VM's disks, as DESIGN.md names it.
const (
	ConsistencyFilesystem = "filesystem" // filesystems frozen or cleanly shut down
	ConsistencyCrash      = "crash"      // as after a power cut, at one instant
)

// Quiesced says how a VM's disks were made to stand still.
type Quiesced struct {
	How         string // QuiescedByAgent, QuiescedByPause or QuiescedStopped
	Consistency string // ConsistencyFilesystem or ConsistencyCrash
	// AgentError is why the guest agent was not used when it was asked
	// for, or "".
	AgentError string
}

// Quiesce makes the disks of the VM named by name or UUID on the host at uri
// stand still so that all of them can be cut at one instant: with the QEMU
// guest agent's filesystem freeze when useAgent is set and an agent answers,
// else by pausing the VM. A VM that is not running needs neither; its disks
// are filesystem-consistent unless it was powered off hard or crashed.
//
// release undoes what Quiesce did (thaw or resume) and returns how long the
// guest stood still. It must be called, also when the snapshot fails; it
// uses its own context, so that a caller whose context ended still resumes
// the guest.
func (p *Pool) Quiesce(ctx context.Context, uri, vm string, useAgent bool) (q Quiesced, release func(context.Context) (time.Duration, error), err error) {
	noop := func(context.Context) (time.Duration, error) { return 0, nil }
	var start time.Time // when this call stilled the guest; zero when it did not
	err = p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		state, reason, err := dom.GetState()
		if err != nil {
			return errors.New(errorMessage(err))
		}
		switch state {
		case libvirt.DOMAIN_SHUTOFF:
			// Its disks are as the guest left them: clean unless it was
			// powered off hard or crashed.
			q = Quiesced{How: QuiescedStopped, Consistency: ConsistencyFilesystem}
			switch libvirt.DomainShutoffReason(reason) {
			case libvirt.DOMAIN_SHUTOFF_DESTROYED, libvirt.DOMAIN_SHUTOFF_CRASHED, libvirt.DOMAIN_SHUTOFF_FAILED:
				q.Consistency = ConsistencyCrash
			}
			return nil
		case libvirt.DOMAIN_PAUSED:
			// Already paused by someone else: it stands still, and it stays
			// paused after the snapshot.
			q = Quiesced{How: QuiescedByPause, Consistency: ConsistencyCrash}
			return nil
		}
		if useAgent {
			froze := time.Now()
			err := dom.FSFreeze(nil, 0)
			if err == nil {
				q, start = Quiesced{How: QuiescedByAgent, Consistency: ConsistencyFilesystem}, froze
				return nil
			}
			q.AgentError = errorMessage(err)
		}
		start = time.Now()
		if err := dom.Suspend(); err != nil {
			return fmt.Errorf("pause: %s", errorMessage(err))
		}
		q.How, q.Consistency = QuiescedByPause, ConsistencyCrash
		return nil
	})
	if err != nil {
		return q, noop, fmt.Errorf("quiesce %s on %s: %w", vm, uri, err)
	}
	if start.IsZero() { // stopped, or paused by someone else: nothing to undo
		return q, noop, nil
	}
	release = func(ctx context.Context) (time.Duration, error) {
		err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
			if q.How == QuiescedByAgent {
				if err := dom.FSThaw(nil, 0); err != nil {
					return fmt.Errorf("thaw the guest's filesystems: %s", errorMessage(err))
				}
				return nil
			}
			if err := dom.Resume(); err != nil {
				return fmt.Errorf("resume: %s", errorMessage(err))
			}
			return nil
		})
		held := time.Since(start)
		if err != nil {
			return held, fmt.Errorf("release %s on %s: %w", vm, uri, err)
		}
		return held, nil
	}
	return q, release, nil
}

// DomainXML returns the persistent definition of the VM named by name or
// UUID on the host at uri, as libvirt writes it (secure parts left out).
func (p *Pool) DomainXML(ctx context.Context, uri, vm string) (string, error) {
	var out string
	err := p.onDomain(ctx, uri, vm, func(dom *libvirt.Domain) error {
		x, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE)
		if err != nil {
			return errors.New(errorMessage(err))
		}
		out = x
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read the definition of %s on %s: %w", vm, uri, err)
	}
	return out, nil
}
