package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// CHAP as every host's QEMU logs in to the storage box: the user is fixed,
// the secret lives in a libvirt secret of usage type iscsi that every host
// keeps under the same usage and UUID, so a disk's XML names it the same way
// on every host and needs no change when the VM moves.
const (
	CHAPUser        = "drover"
	CHAPSecretUsage = "drover-chap"
	CHAPSecretUUID  = "3f6d0c9e-2b7a-4c1e-9a5d-6b8e0d7c1a24"
)

// EnsureCHAPSecret makes the host at uri keep value as the CHAP secret its
// disks log in with. It is safe to repeat; domains already running keep the
// secret they logged in with until they log in again. The value never
// appears in an error.
func (p *Pool) EnsureCHAPSecret(ctx context.Context, uri, value string) error {
	if value == "" {
		return fmt.Errorf("set CHAP secret on %s: the secret is empty", uri)
	}
	err := p.do(ctx, uri, func(lv *libvirt.Connect) error {
		sec, err := lv.LookupSecretByUsage(libvirt.SECRET_USAGE_TYPE_ISCSI, CHAPSecretUsage)
		switch {
		case isNoSecret(err):
			sec, err = defineCHAPSecret(lv)
			if err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("look up secret: %s", errorMessage(err))
		default:
			uuid, err := sec.GetUUIDString()
			if err != nil {
				sec.Free()
				return fmt.Errorf("look up secret: %s", errorMessage(err))
			}
			if uuid != CHAPSecretUUID {
				sec.Free()
				return fmt.Errorf("secret %s already has usage iscsi %q; Drover's has UUID %s: undefine the other one",
					uuid, CHAPSecretUsage, CHAPSecretUUID)
			}
		}
		defer sec.Free()
		if err := sec.SetValue([]byte(value), 0); err != nil {
			return fmt.Errorf("set value: %s", errorMessage(err))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set CHAP secret on %s: %w", uri, err)
	}
	return nil
}

func defineCHAPSecret(lv *libvirt.Connect) (*libvirt.Secret, error) {
	def := libvirtxml.Secret{
		Ephemeral:   "no",
		Private:     "yes", // libvirt never hands the value out again
		UUID:        CHAPSecretUUID,
		Description: "CHAP secret of Drover's disks on the storage box",
		Usage:       &libvirtxml.SecretUsage{Type: "iscsi", Target: CHAPSecretUsage},
	}
	xml, err := def.Marshal()
	if err != nil {
		return nil, err
	}
	sec, err := lv.SecretDefineXML(xml, 0)
	if err != nil {
		return nil, fmt.Errorf("define secret: %s", errorMessage(err))
	}
	return sec, nil
}

func isNoSecret(err error) bool {
	var lerr libvirt.Error
	return errors.As(err, &lerr) && lerr.Code == libvirt.ERR_NO_SECRET
}

// Resized is one disk of a running VM that now sees a volume's new size.
type Resized struct {
	Host   string // the host's name, as in the hosts map
	VM     string // domain name
	Target string // guest device, e.g. vdb
}

// ResizeDisks tells every running VM on the hosts (name → URI) that has
// the LUN iqn/lun as a disk that the LUN is now sizeMiB big, so its guest
// sees the new size at once. Grow the volume on the target first: QEMU
// re-reads the LUN's capacity and refuses to go past it. It returns the
// disks it resized, also when some host failed; the error names each host
// and VM that failed.
func (p *Pool) ResizeDisks(ctx context.Context, hosts map[string]string, iqn string, lun uint64, sizeMiB int64) ([]Resized, error) {
	if sizeMiB <= 0 {
		return nil, fmt.Errorf("resize disks on %s/%d: size must be positive, got %d MiB", iqn, lun, sizeMiB)
	}
	source := iqn + "/" + strconv.FormatUint(lun, 10)
	var (
		mu  sync.Mutex // guards out
		out []Resized
	)
	err := eachHost(hosts, func(name, uri string) error {
		err := p.do(ctx, uri, func(lv *libvirt.Connect) error {
			doms, err := lv.ListAllDomains(libvirt.CONNECT_LIST_DOMAINS_ACTIVE)
			if err != nil {
				return fmt.Errorf("list domains: %s", errorMessage(err))
			}
			defer freeAll(doms)
			var errs []error
			for i := range doms {
				resized, err := resizeDomainDisks(&doms[i], source, uint64(sizeMiB)<<20)
				for _, r := range resized {
					r.Host = name
					mu.Lock()
					out = append(out, r)
					mu.Unlock()
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		})
		if err != nil {
			return fmt.Errorf("%s (%s): %w", name, uri, err)
		}
		return nil
	})
	// A host that stopped answering may still report a resize after its
	// call was abandoned: take a copy under the lock.
	mu.Lock()
	out = slices.Clone(out)
	mu.Unlock()
	sortResized(out)
	if err != nil {
		return out, fmt.Errorf("resize disks on %s to %d MiB: %w", source, sizeMiB, err)
	}
	return out, nil
}

// resizeDomainDisks block-resizes every disk of dom whose iSCSI source is
// source.
func resizeDomainDisks(dom *libvirt.Domain, source string, bytes uint64) ([]Resized, error) {
	name, err := dom.GetName()
	if err != nil {
		return nil, nil // gone meanwhile
	}
	xml, err := dom.GetXMLDesc(0)
	if isNoDomain(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vm %s: read XML: %s", name, errorMessage(err))
	}
	var def libvirtxml.Domain
	if err := def.Unmarshal(xml); err != nil {
		return nil, fmt.Errorf("vm %s: parse XML: %w", name, err)
	}
	var (
		out  []Resized
		errs []error
	)
	for _, d := range def.Devices.Disks {
		if d.Device == "cdrom" || d.Source == nil || d.Source.Network == nil ||
			d.Source.Network.Protocol != "iscsi" || d.Source.Network.Name != source || d.Target == nil {
			continue
		}
		if err := dom.BlockResize(d.Target.Dev, bytes, libvirt.DOMAIN_BLOCK_RESIZE_BYTES); err != nil {
			errs = append(errs, fmt.Errorf("vm %s disk %s: %s", name, d.Target.Dev, errorMessage(err)))
			continue
		}
		out = append(out, Resized{VM: name, Target: d.Target.Dev})
	}
	return out, errors.Join(errs...)
}
