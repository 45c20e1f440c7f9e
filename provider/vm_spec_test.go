package provider

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
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
		{"disks", strings.Join(cluster.Volumes(vm.Disks), ","), "web1-root,web1-data"},
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
	vm := hypervisor.VM{Name: "foreign", Disks: []hypervisor.Disk{
		{Target: "vda", Volume: "foreign-root"},
		{Target: "vdb", IQN: "iqn.2026-11.io.drover:x"},
	}}
	_, diags := vmFromTruth(vm, hypervisor.Domain{}, "alpha", vmModel{})
	if len(diags) != 1 || !diags.HasError() {
		t.Fatalf("got %v, want one error", diags)
	}
	d := diags[0]
	if want := "Disk 2 (vdb) of VM foreign has no Drover volume in its metadata"; d.Summary() != "Unable to read VM" ||
		!strings.Contains(d.Detail(), want) {
		t.Errorf("got %q: %q, want %q", d.Summary(), d.Detail(), want)
	}
	if at, want := diagPath(d), path.Root("disks").AtListIndex(1).AtName("volume_id"); !at.Equal(want) {
		t.Errorf("the error points at %q, want %q", at, want)
	}
}

func TestSeedReadsAsCloudInit(t *testing.T) {
	t.Parallel()
	got := cloudInitFromSeed(cloudinit.Seed{MetaData: "instance-id: web1\n"})
	want := testVMModel().CloudInit // user_data and network_config null
	if !got.Equal(want) {
		t.Errorf("cloudInitFromSeed = %v, want %v (empty files null)", got, want)
	}
}
