package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// MigrateOptions tune a move between hosts.
type MigrateOptions struct {
	// Initiator is the destination host's initiator IQN (HostInitiator).
	// When set, the VM's iSCSI disks log in with it on the destination,
	// in the running domain and in the definition kept there; the source's
	// IQN is never used on the destination.
	Initiator string
	// Address, when set, is the destination's migration address: where the
	// source sends the VM's memory, and where the destination listens for
	// it. Without it libvirt uses the destination's hostname, which on
	// many hosts resolves to a loopback address (Debian's 127.0.1.1).
	Address string
	// Progress, when set, is called every ProgressEvery (default 5 s)
	// while a live migration runs, with what libvirt reports of it.
	Progress      func(MigrationProgress)
	ProgressEvery time.Duration
}

// MigrationProgress is how far a live migration has come, as libvirt's job
// information tells it. Byte counts are 0 when libvirt does not know them.
type MigrationProgress struct {
	Elapsed   time.Duration
	Processed uint64 // bytes sent so far
	Remaining uint64 // bytes still to send (memory dirtied again counts anew)
	Total     uint64 // Processed + Remaining, as libvirt estimates it
}

// Migrate moves the running domain named by name or UUID from the host at
// URI from to the host at URI to, live: the guest keeps running while its
// memory is copied, its definition moves with it and is removed from the
// source. Disks are not copied; they must be shared by both hosts.
//
// The migration is managed by this process through its connections to both
// hosts (not peer-to-peer), so it works for any two URIs this process can
// reach, even when the hosts cannot reach each other's libvirt (peer-to-peer
// would need the source host to reach the destination's URI itself).
//
// When ctx ends first, Migrate asks libvirt to abort the migration and
// returns an error. An aborted migration leaves the domain running on the
// source, but one in its last step may still complete: look before acting on
// the error.
func (p *Pool) Migrate(ctx context.Context, vm, from, to string, opts MigrateOptions) error {
	if from == to {
		return fmt.Errorf("migrate %s: source and destination are both %s", vm, from)
	}
	err := p.do(ctx, from, func(src *libvirt.Connect) error {
		dom, err := lookup(src, vm)
		if err != nil {
			return fmt.Errorf("on the source: %s", errorMessage(err))
		}
		defer dom.Free()
		if active, err := dom.IsActive(); err != nil {
			return fmt.Errorf("on the source: %s", errorMessage(err))
		} else if !active {
			return fmt.Errorf("it is not running on the source")
		}
		params, err := migrateParams(dom, opts)
		if err != nil {
			return err
		}
		return p.do(ctx, to, func(dst *libvirt.Connect) error {
			// QEMU on the destination opens the console log too.
			xml := params.DestXML
			if !params.DestXMLSet {
				if xml, err = dom.GetXMLDesc(libvirt.DOMAIN_XML_MIGRATABLE); err != nil {
					return fmt.Errorf("read the running domain's XML: %s", errorMessage(err))
				}
			}
			if err := p.ensureLogDirs(dst, to, xml); err != nil {
				return fmt.Errorf("on the destination: %w", err)
			}
			return migrate(ctx, dom, dst, params, opts)
		})
	})
	if err != nil {
		return fmt.Errorf("migrate %s from %s to %s: %w", vm, from, to, err)
	}
	return nil
}

// migrateParams returns the destination's domain XML (from the running
// domain, as libvirt requires for ABI stability) and its persistent
// definition, both with the destination's initiator.
func migrateParams(dom *libvirt.Domain, opts MigrateOptions) (*libvirt.DomainMigrateParameters, error) {
	params := addressParams(opts.Address)
	if opts.Initiator == "" {
		return params, nil
	}
	live, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_MIGRATABLE)
	if err != nil {
		return nil, fmt.Errorf("read the running domain's XML: %s", errorMessage(err))
	}
	if params.DestXML, err = withInitiator(live, opts.Initiator); err != nil {
		return nil, err
	}
	params.DestXMLSet = true
	if persistent, err := dom.IsPersistent(); err != nil || !persistent {
		return params, nil
	}
	def, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE | libvirt.DOMAIN_XML_MIGRATABLE)
	if err != nil {
		return nil, fmt.Errorf("read the domain's definition: %s", errorMessage(err))
	}
	if params.PersistXML, err = withInitiator(def, opts.Initiator); err != nil {
		return nil, err
	}
	params.PersistXMLSet = true
	return params, nil
}

// addressParams are the migration parameters that send a VM's memory to
// address (a host name or IP, IPv6 without brackets) and make the
// destination listen there; none when address is empty.
func addressParams(address string) *libvirt.DomainMigrateParameters {
	params := &libvirt.DomainMigrateParameters{}
	if address == "" {
		return params
	}
	host := address
	if strings.Contains(address, ":") {
		host = "[" + address + "]"
	}
	params.URI, params.URISet = "tcp://"+host, true
	params.ListenAddress, params.ListenAddressSet = address, true
	return params
}

// withInitiator returns domainXML with every iSCSI disk logging in as iqn.
func withInitiator(domainXML, iqn string) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return "", fmt.Errorf("parse domain XML: %w", err)
	}
	if dom.Devices != nil {
		for i := range dom.Devices.Disks {
			src := dom.Devices.Disks[i].Source
			if src == nil || src.Network == nil || src.Network.Protocol != "iscsi" {
				continue
			}
			src.Network.Initiator = &libvirtxml.DomainDiskSourceNetworkInitiator{
				IQN: &libvirtxml.DomainDiskSourceNetworkIQN{Name: iqn},
			}
		}
	}
	return dom.Marshal()
}

// migrate runs the blocking migration call and aborts the migration job when
// ctx ends first, then waits for the call to give up.
func migrate(ctx context.Context, dom *libvirt.Domain, dst *libvirt.Connect, params *libvirt.DomainMigrateParameters, opts MigrateOptions) error {
	const flags = libvirt.MIGRATE_LIVE | libvirt.MIGRATE_PERSIST_DEST | libvirt.MIGRATE_UNDEFINE_SOURCE
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		moved, err := dom.Migrate3(dst, params, flags)
		if moved != nil {
			_ = moved.Free()
		}
		done <- err
	}()
	every := opts.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%s", errorMessage(err))
			}
			return nil
		case <-tick.C:
			if opts.Progress != nil {
				opts.Progress(jobProgress(dom, time.Since(start)))
			}
		case <-ctx.Done():
			_ = dom.AbortJob()
			if err := <-done; err == nil {
				return nil // it finished before the abort reached it
			}
			return fmt.Errorf("aborted: %w", context.Cause(ctx))
		}
	}
}

// jobProgress reads the progress of dom's running job; the byte counts stay
// 0 when libvirt cannot tell.
func jobProgress(dom *libvirt.Domain, elapsed time.Duration) MigrationProgress {
	pr := MigrationProgress{Elapsed: elapsed}
	ji, err := dom.GetJobInfo()
	if err != nil {
		return pr
	}
	if ji.DataProcessedSet {
		pr.Processed = ji.DataProcessed
	}
	if ji.DataRemainingSet {
		pr.Remaining = ji.DataRemaining
	}
	if ji.DataTotalSet {
		pr.Total = ji.DataTotal
	}
	return pr
}

// ColdMove moves the stopped VM named by name or UUID from the host at URI
// from to the host at URI to: it defines it on the destination first (with
// the destination's initiator when opts says), then undefines it on the
// source, so it is never defined nowhere; when the source's undefine fails
// the destination's definition is removed again. A running VM is refused:
// migrate it live.
func (p *Pool) ColdMove(ctx context.Context, vm, from, to string, opts MigrateOptions) error {
	if from == to {
		return fmt.Errorf("move %s: source and destination are both %s", vm, from)
	}
	err := p.do(ctx, from, func(src *libvirt.Connect) error {
		dom, err := lookup(src, vm)
		if err != nil {
			return fmt.Errorf("on the source: %s", errorMessage(err))
		}
		defer dom.Free()
		if isActive(dom) {
			return errors.New("it is running on the source: migrate it live")
		}
		def, err := dom.GetXMLDesc(libvirt.DOMAIN_XML_INACTIVE | libvirt.DOMAIN_XML_MIGRATABLE)
		if err != nil {
			return fmt.Errorf("read the definition: %s", errorMessage(err))
		}
		if opts.Initiator != "" {
			if def, err = withInitiator(def, opts.Initiator); err != nil {
				return err
			}
		}
		uuid, err := dom.GetUUIDString()
		if err != nil {
			return fmt.Errorf("on the source: %s", errorMessage(err))
		}
		return p.do(ctx, to, func(dst *libvirt.Connect) error {
			return moveDefinition(dom, dst, uuid, def)
		})
	})
	if err != nil {
		return fmt.Errorf("move stopped %s from %s to %s: %w", vm, from, to, err)
	}
	return nil
}

// moveDefinition defines def on dst, then undefines dom on the source, and
// undoes the first step when the second fails.
func moveDefinition(dom *libvirt.Domain, dst *libvirt.Connect, uuid, def string) error {
	if there, err := dst.LookupDomainByUUIDString(uuid); err == nil {
		there.Free()
		return errors.New("it is already defined on the destination")
	}
	moved, err := dst.DomainDefineXML(def)
	if err != nil {
		return fmt.Errorf("define on the destination: %s", errorMessage(err))
	}
	defer moved.Free()
	undo := func(cause error) error {
		if err := undefineDomain(moved); err != nil {
			return fmt.Errorf("%w; removing it from the destination failed too (%v): it is defined on both", cause, err)
		}
		return fmt.Errorf("%w (removed from the destination again)", cause)
	}
	if isActive(dom) {
		return undo(errors.New("it was started on the source meanwhile"))
	}
	if err := undefineDomain(dom); err != nil {
		return undo(fmt.Errorf("on the source: %w", err))
	}
	return nil
}

// Move moves the VM named by name or UUID from the host at URI from to the
// host at URI to: live when it runs (Migrate), else its definition
// (ColdMove). live tells which.
func (p *Pool) Move(ctx context.Context, vm, from, to string, opts MigrateOptions) (live bool, err error) {
	d, found, err := p.Domain(ctx, from, vm)
	if err != nil {
		return false, fmt.Errorf("move %s from %s to %s: %w", vm, from, to, err)
	}
	if !found {
		return false, fmt.Errorf("move %s from %s to %s: it is not defined on the source", vm, from, to)
	}
	if d.State.Active() {
		return true, p.Migrate(ctx, vm, from, to, opts)
	}
	return false, p.ColdMove(ctx, vm, from, to, opts)
}
