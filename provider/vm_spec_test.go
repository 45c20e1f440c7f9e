package provider

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

func testVMModel() vmModel {
	disk := func(v string) attr.Value {
		return types.ObjectValueMust(diskAttrTypes, map[string]attr.Value{"volume_id": types.StringValue(v)})
	}
	return vmModel{
		ID: types.StringValue("0b7c6f6e-1111-2222-3333-444455556666"), Name: types.StringValue("web1"),
		Host: types.StringValue("alpha"), VCPUs: types.Int64Value(2), MemoryMiB: types.Int64Value(512),
		MaxMemoryMiB: types.Int64Value(1024),
		Disks:        types.ListValueMust(types.ObjectType{AttrTypes: diskAttrTypes}, []attr.Value{disk("web1-root"), disk("web1-data")}),
		NetworkInterfaces: types.ListValueMust(types.ObjectType{AttrTypes: nicAttrTypes}, []attr.Value{
			types.ObjectValueMust(nicAttrTypes, map[string]attr.Value{
				"network": types.StringValue("default"), "bridge": types.StringNull(), "mac": types.StringValue("52:54:00:aa:bb:cc"),
			}),
		}),
		CloudInit: types.ObjectValueMust(cloudInitAttrTypes, map[string]attr.Value{
			"user_data": types.StringNull(), "meta_data": types.StringValue("instance-id: web1\n"), "network_config": types.StringNull(),
		}),
		Kernel: types.StringValue("/boot/vmlinuz"), Initrd: types.StringNull(), Cmdline: types.StringValue("console=ttyS0"),
		Firmware: types.StringValue("bios"), Running: types.BoolValue(true), AllowRestart: types.BoolValue(false),
		Placement: types.ObjectValueMust(placementAttrTypes, map[string]attr.Value{
			"host": types.StringNull(), "preferred_hosts": types.ListValueMust(types.StringType, []attr.Value{types.StringValue("alpha")}),
			"spread_group": types.StringValue("web"),
		}),
	}
}

func TestModelConvertsToOneSpec(t *testing.T) {
	t.Parallel()
	s, diags := testVMModel().spec(context.Background())
	if diags.HasError() {
		t.Fatal(diags)
	}
	vm := s.VM
	checks := []struct {
		what      string
		got, want any
	}{
		{"name", vm.Name, "web1"},
		{"uuid", vm.UUID, "0b7c6f6e-1111-2222-3333-444455556666"},
		{"memory", vm.MemoryMiB, int64(512)},
		{"max memory", vm.MaxMemoryMiB, int64(1024)},
		{"vcpus", vm.VCPUs, 2},
		{"max vcpus equal vcpus", vm.MaxVCPUs, 2},
		{"disks", strings.Join(volumes(vm.Disks), ","), "web1-root,web1-data"},
		{"nic", vm.NICs[0], hypervisor.NIC{Network: "default", MAC: "52:54:00:aa:bb:cc"}},
		{"seed volume", vm.CloudInit.Volume, "web1-seed"},
		{"seed", *s.Seed, cloudinit.Seed{MetaData: "instance-id: web1\n"}},
		{"boot", vm.Boot, hypervisor.Boot{Firmware: "bios", Kernel: "/boot/vmlinuz", Cmdline: "console=ttyS0"}},
		{"console log", vm.ConsoleLog, "/var/log/libvirt/qemu/web1-console.log"},
		{"spread group", vm.Placement.SpreadGroup, "web"},
		{"preferred", strings.Join(vm.Placement.PreferredHosts, ","), "alpha"},
		{"running", s.Running, true},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}
}

func TestStateFromTruthRoundTrips(t *testing.T) {
	t.Parallel()
	m := testVMModel()
	s, _ := m.spec(context.Background())
	s.VM.Disks[0].Target, s.VM.Disks[1].Target = "vda", "vdb"
	got, diags := vmFromTruth(s.VM, hypervisor.Domain{State: hypervisor.StateRunning}, "alpha", m)
	if diags.HasError() {
		t.Fatal(diags)
	}
	for _, c := range []struct {
		what      string
		got, want attr.Value
	}{
		{"disks", got.Disks, m.Disks}, {"nics", got.NetworkInterfaces, m.NetworkInterfaces},
		{"cloud_init", got.CloudInit, m.CloudInit}, {"placement", got.Placement, m.Placement},
		{"memory", got.MaxMemoryMiB, m.MaxMemoryMiB}, {"initrd", got.Initrd, m.Initrd}, {"host", got.Host, m.Host},
		{"running", got.Running, m.Running},
	} {
		if !c.got.Equal(c.want) {
			t.Errorf("%s: got %s, want %s", c.what, c.got, c.want)
		}
	}
}

func TestStateFromTruthRefusesDisksWithoutVolumes(t *testing.T) {
	t.Parallel()
	vm := hypervisor.VM{Name: "foreign", Disks: []hypervisor.Disk{{Target: "vda", IQN: "iqn.2026-11.io.drover:x"}}}
	if _, diags := vmFromTruth(vm, hypervisor.Domain{}, "alpha", vmModel{}); !diags.HasError() {
		t.Error("a disk without a Drover volume read without error")
	}
}

func TestRestartReasons(t *testing.T) {
	t.Parallel()
	base := func() vmSpec {
		s, _ := testVMModel().spec(context.Background())
		return s
	}
	tests := []struct {
		name   string
		change func(*vmSpec)
		want   string // substring of the only reason; empty: none
	}{
		{"memory within the maximum is live", func(s *vmSpec) { s.VM.MemoryMiB = 1024 }, ""},
		{"a new disk at the end is live", func(s *vmSpec) {
			s.VM.Disks = append(s.VM.Disks, hypervisor.Disk{Volume: "web1-logs"})
		}, ""},
		{"removing a data disk is live", func(s *vmSpec) { s.VM.Disks = s.VM.Disks[:1] }, ""},
		{"placement and allow_restart are live", func(s *vmSpec) {
			s.VM.Placement.SpreadGroup, s.VM.AllowRestart = "db", true
		}, ""},
		{"more vcpus restart", func(s *vmSpec) { s.VM.VCPUs, s.VM.MaxVCPUs = 3, 3 }, "vcpus 2 → 3"},
		{"a larger maximum restarts", func(s *vmSpec) { s.VM.MaxMemoryMiB = 2048 }, "max_memory_mib 1024 → 2048"},
		{"a new boot disk restarts", func(s *vmSpec) { s.VM.Disks[0].Volume = "other" }, "boot disk"},
		{"reordered disks restart", func(s *vmSpec) {
			s.VM.Disks = append(s.VM.Disks, hypervisor.Disk{Volume: "web1-logs"})
			s.VM.Disks[1], s.VM.Disks[2] = s.VM.Disks[2], s.VM.Disks[1]
		}, "order"},
		{"new cloud-init restarts", func(s *vmSpec) { s.Seed = &cloudinit.Seed{MetaData: "instance-id: 2"} }, "cloud_init"},
		{"a new kernel restarts", func(s *vmSpec) { s.VM.Boot.Kernel = "/boot/other" }, "kernel"},
		{"firmware restarts", func(s *vmSpec) { s.VM.Boot.Firmware = "uefi" }, "firmware bios → uefi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			old, new := base(), base()
			tt.change(&new)
			got := restartReasons(old, new)
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
	detach, attach := diskChanges(cur, []string{"root", "keep", "new"})
	if !slices.Equal(detach, []string{"vdb"}) || !slices.Equal(attach, []string{"new"}) {
		t.Errorf("disks: got detach %v attach %v, want [vdb] and [new]", detach, attach)
	}

	nics := []hypervisor.NIC{{Network: "default", MAC: "52:54:00:00:00:01"}, {Bridge: "br0", MAC: "52:54:00:00:00:02"}}
	want := []hypervisor.NIC{{Network: "default", MAC: "52:54:00:00:00:01"}, {Bridge: "br1"}}
	gone, added := nicChanges(nics, want)
	if !slices.Equal(gone, []string{"52:54:00:00:00:02"}) || len(added) != 1 || added[0].Bridge != "br1" {
		t.Errorf("nics: got detach %v attach %v, want the br0 one out and br1 in", gone, added)
	}
}

func TestCheckMemoryFitsNamesWhatEachHostHolds(t *testing.T) {
	t.Parallel()
	view := clusterView{Hosts: []hostView{
		{Config: hostConfig{Name: "alpha", ReservedMemoryMiB: 512, MemoryOvercommit: 1}, Facts: hypervisor.Host{MemoryMiB: 4096}},
		{Config: hostConfig{Name: "beta", ReservedMemoryMiB: 512, MemoryOvercommit: 1.5}, Facts: hypervisor.Host{MemoryMiB: 2048}},
	}}
	if err := view.checkMemoryFits(3584); err != nil {
		t.Errorf("3584 MiB on alpha's 3584: got %v, want it to fit", err)
	}
	err := view.checkMemoryFits(8192)
	want := "8192 MiB is more than any host can hold (alpha: at most 3584 MiB; beta: at most 2304 MiB)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestChooseHostPinsAndSpreads(t *testing.T) {
	t.Parallel()
	host := func(name string, vms ...string) hostView {
		h := hostView{
			Config: hostConfig{Name: name, ReservedMemoryMiB: 512, MemoryOvercommit: 1, CPUOvercommit: 4, DomainType: "qemu"},
			Facts:  hypervisor.Host{MemoryMiB: 4096, CPUs: 2},
			VMs:    map[string]hypervisor.VM{},
		}
		for _, vm := range vms {
			h.Facts.Domains = append(h.Facts.Domains, hypervisor.Domain{Name: vm, MaxMemoryMiB: 1024, VCPUs: 1, State: hypervisor.StateRunning})
			h.VMs[vm] = hypervisor.VM{Name: vm, MemoryMiB: 1024, VCPUs: 1, Managed: true,
				Placement: hypervisor.Placement{SpreadGroup: "web"}}
		}
		return h
	}
	view := clusterView{Hosts: []hostView{host("alpha", "web1"), host("beta")}}
	vm := hypervisor.VM{Name: "web2", MemoryMiB: 512, VCPUs: 1}

	if got, err := chooseHost(view, vm, placement.Spread); err != nil || got != "beta" {
		t.Errorf("unpinned: got %q, %v; want beta, the emptier host", got, err)
	}
	vm.Placement.Host = "alpha"
	if got, err := chooseHost(view, vm, placement.Spread); err != nil || got != "alpha" {
		t.Errorf("pinned to alpha: got %q, %v; want alpha", got, err)
	}
	vm.Placement = hypervisor.Placement{Host: "alpha", SpreadGroup: "web"}
	if _, err := chooseHost(view, vm, placement.Spread); err == nil {
		t.Error("pinned next to a VM of its spread group: got no error")
	}
	vm.Placement = hypervisor.Placement{Host: "gamma"}
	if _, err := chooseHost(view, vm, placement.Spread); err == nil || !strings.Contains(err.Error(), "the hosts are alpha, beta") {
		t.Errorf("pinned to an unknown host: got %v, want the hosts named", err)
	}
}
