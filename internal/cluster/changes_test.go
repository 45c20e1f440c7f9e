package cluster

import (
	"slices"
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

func TestRestartReasons(t *testing.T) {
	t.Parallel()
	base := func() VMSpec {
		return VMSpec{Running: true, VM: hypervisor.VM{
			Name: "web1", MemoryMiB: 512, MaxMemoryMiB: 1024, VCPUs: 2, MaxVCPUs: 2,
			Boot:  hypervisor.Boot{Firmware: hypervisor.FirmwareBIOS},
			Disks: []hypervisor.Disk{{Volume: "web1-root"}, {Volume: "web1-data"}},
		}, Seed: &cloudinit.Seed{MetaData: "instance-id: web1\n"}}
	}
	tests := []struct {
		name   string
		change func(*VMSpec)
		want   string // substring of the only reason; empty: none
	}{
		{"memory within the maximum is live", func(s *VMSpec) { s.VM.MemoryMiB = 1024 }, ""},
		{"a new disk at the end is live", func(s *VMSpec) {
			s.VM.Disks = append(s.VM.Disks, hypervisor.Disk{Volume: "web1-logs"})
		}, ""},
		{"removing a data disk is live", func(s *VMSpec) { s.VM.Disks = s.VM.Disks[:1] }, ""},
		{"placement and allow_restart are live", func(s *VMSpec) {
			s.VM.Placement.SpreadGroup, s.VM.AllowRestart = "db", true
		}, ""},
		{"more vcpus restart", func(s *VMSpec) { s.VM.VCPUs, s.VM.MaxVCPUs = 3, 3 }, "vcpus 2 → 3"},
		{"a larger maximum restarts", func(s *VMSpec) { s.VM.MaxMemoryMiB = 2048 }, "max_memory_mib 1024 → 2048"},
		{"a new boot disk restarts", func(s *VMSpec) { s.VM.Disks[0].Volume = "other" }, "boot disk"},
		{"reordered disks restart", func(s *VMSpec) {
			s.VM.Disks = append(s.VM.Disks, hypervisor.Disk{Volume: "web1-logs"})
			s.VM.Disks[1], s.VM.Disks[2] = s.VM.Disks[2], s.VM.Disks[1]
		}, "order"},
		{"new cloud-init restarts", func(s *VMSpec) { s.Seed = &cloudinit.Seed{MetaData: "instance-id: 2"} }, "cloud_init"},
		{"a new kernel restarts", func(s *VMSpec) { s.VM.Boot.Kernel = "/boot/other" }, "kernel"},
		{"firmware restarts", func(s *VMSpec) { s.VM.Boot.Firmware = "uefi" }, "firmware bios → uefi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			old, new := base(), base()
			tt.change(&new)
			got := RestartReasons(old, new)
			switch {
			case tt.want == "" && len(got) > 0:
				t.Errorf("got restart reasons %q, want none", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("got restart reasons %q, want one with %q", got, tt.want)
			}
		})
	}
}

func TestDiskAndNICChanges(t *testing.T) {
	t.Parallel()
	cur := []hypervisor.Disk{{Volume: "root", Target: "vda"}, {Volume: "old", Target: "vdb"}, {Volume: "keep", Target: "vdc"}}
	detach, attach := DiskChanges(cur, []string{"root", "keep", "new"})
	if !slices.Equal(detach, []string{"vdb"}) || !slices.Equal(attach, []string{"new"}) {
		t.Errorf("disks: got detach %v attach %v, want [vdb] and [new]", detach, attach)
	}

	nics := []hypervisor.NIC{{Network: "default", MAC: "52:54:00:00:00:01"}, {Bridge: "br0", MAC: "52:54:00:00:00:02"}}
	want := []hypervisor.NIC{{Network: "default", MAC: "52:54:00:00:00:01"}, {Bridge: "br1"}}
	gone, added := NICChanges(nics, want)
	if !slices.Equal(gone, []string{"52:54:00:00:00:02"}) || len(added) != 1 || added[0].Bridge != "br1" {
		t.Errorf("nics: got detach %v attach %v, want the br0 one out and br1 in", gone, added)
	}
}
