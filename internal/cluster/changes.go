package cluster

import (
	"fmt"
	"slices"
	"strings"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// RestartReasons lists the changes from old to new that a running VM can
// only take by restarting, as "vcpus 1 → 2". Empty means every change is
// live.
func RestartReasons(old, new VMSpec) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	o, n := old.VM, new.VM
	if n.VCPUs != o.VCPUs {
		add("vcpus %d → %d (vCPUs change only at boot)", o.VCPUs, n.VCPUs)
	}
	if n.MaxMemoryMiB != o.MaxMemoryMiB {
		add("max_memory_mib %d → %d (memory grows live only up to max_memory_mib %d)", o.MaxMemoryMiB, n.MaxMemoryMiB, o.MaxMemoryMiB)
	}
	if n.Boot.Firmware != o.Boot.Firmware {
		add("firmware %s → %s", o.Boot.Firmware, n.Boot.Firmware)
	}
	if n.Boot.Kernel != o.Boot.Kernel || n.Boot.Initrd != o.Boot.Initrd || n.Boot.Cmdline != o.Boot.Cmdline {
		add("kernel, initrd or cmdline (read only at boot)")
	}
	if (old.Seed == nil) != (new.Seed == nil) || (old.Seed != nil && *old.Seed != *new.Seed) {
		add("cloud_init (the seed is read at boot)")
	}
	if !liveDiskChange(Volumes(o.Disks), Volumes(n.Disks)) {
		add("disks (the boot disk or the order of the disks changes)")
	}
	return out
}

// Volumes are the volume names of the disks, in order.
func Volumes(disks []hypervisor.Disk) []string {
	out := make([]string, len(disks))
	for i, d := range disks {
		out[i] = d.Volume
	}
	return out
}

// liveDiskChange tells whether the disks can go from old to new by attaching
// and detaching alone: the boot disk stays, and the disks that stay keep
// their order with the new ones after them.
func liveDiskChange(old, new []string) bool {
	if len(old) > 0 && len(new) > 0 && old[0] != new[0] {
		return false
	}
	var kept []string
	for _, v := range old {
		if slices.Contains(new, v) {
			kept = append(kept, v)
		}
	}
	return slices.Equal(kept, new[:len(kept)])
}

// DiskChanges returns the guest devices of the disks of cur to detach and
// the volumes of want to attach, in order.
func DiskChanges(cur []hypervisor.Disk, want []string) (detach []string, attach []string) {
	have := map[string]bool{}
	for _, d := range cur {
		have[d.Volume] = true
		if !slices.Contains(want, d.Volume) {
			detach = append(detach, d.Target)
		}
	}
	for _, v := range want {
		if !have[v] {
			attach = append(attach, v)
		}
	}
	return detach, attach
}

// NICChanges returns the MACs of the interfaces of cur to detach and the
// interfaces of want to attach. An interface with a MAC that cur has stays.
func NICChanges(cur, want []hypervisor.NIC) (detach []string, attach []hypervisor.NIC) {
	wanted := map[string]hypervisor.NIC{}
	for _, n := range want {
		if n.MAC != "" {
			wanted[normalMAC(n.MAC)] = n
		}
	}
	have := map[string]bool{}
	for _, n := range cur {
		w, ok := wanted[normalMAC(n.MAC)]
		if ok && w.Network == n.Network && w.Bridge == n.Bridge {
			have[normalMAC(n.MAC)] = true
			continue
		}
		detach = append(detach, n.MAC)
	}
	for _, n := range want {
		if n.MAC == "" || !have[normalMAC(n.MAC)] {
			attach = append(attach, n)
		}
	}
	return detach, attach
}

func normalMAC(mac string) string { return strings.ToLower(mac) }
