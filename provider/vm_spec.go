package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// Attribute types of the nested objects, for building values from the truth.
var (
	diskAttrTypes      = map[string]attr.Type{"volume_id": types.StringType}
	nicAttrTypes       = map[string]attr.Type{"network": types.StringType, "bridge": types.StringType, "mac": types.StringType}
	cloudInitAttrTypes = map[string]attr.Type{
		"user_data": types.StringType, "meta_data": types.StringType, "network_config": types.StringType,
	}
	placementAttrTypes = map[string]attr.Type{
		"host": types.StringType, "preferred_hosts": types.ListType{ElemType: types.StringType}, "spread_group": types.StringType,
	}
)

type vmDiskModel struct {
	VolumeID types.String `tfsdk:"volume_id"`
}

type vmNICModel struct {
	Network types.String `tfsdk:"network"`
	Bridge  types.String `tfsdk:"bridge"`
	MAC     types.String `tfsdk:"mac"`
}

type vmCloudInitModel struct {
	UserData      types.String `tfsdk:"user_data"`
	MetaData      types.String `tfsdk:"meta_data"`
	NetworkConfig types.String `tfsdk:"network_config"`
}

type vmPlacementModel struct {
	Host           types.String `tfsdk:"host"`
	PreferredHosts types.List   `tfsdk:"preferred_hosts"`
	SpreadGroup    types.String `tfsdk:"spread_group"`
}

// consoleLogPath is the file on the host that keeps a VM's serial console.
func consoleLogPath(vm string) string { return "/var/log/libvirt/qemu/" + vm + "-console.log" }

// spec converts the model into the cluster's spec of the VM: the one
// conversion of a drover_vm. Unknown values convert as their zero value: at
// plan time callers look only at what is known.
func (m vmModel) spec(ctx context.Context) (cluster.VMSpec, diag.Diagnostics) {
	var diags diag.Diagnostics
	s := cluster.VMSpec{
		Running: m.Running.IsNull() || m.Running.IsUnknown() || m.Running.ValueBool(),
		VM: hypervisor.VM{
			Name:         m.Name.ValueString(),
			UUID:         m.ID.ValueString(),
			MemoryMiB:    m.MemoryMiB.ValueInt64(),
			MaxMemoryMiB: m.MaxMemoryMiB.ValueInt64(),
			VCPUs:        int(m.VCPUs.ValueInt64()),
			Boot: hypervisor.Boot{
				Firmware: m.Firmware.ValueString(),
				Kernel:   m.Kernel.ValueString(),
				Initrd:   m.Initrd.ValueString(),
				Cmdline:  m.Cmdline.ValueString(),
			},
			ConsoleLog:   consoleLogPath(m.Name.ValueString()),
			AllowRestart: m.AllowRestart.ValueBool(),
		},
	}
	if s.VM.Boot.Firmware == "" {
		s.VM.Boot.Firmware = hypervisor.FirmwareBIOS
	}
	if s.VM.MaxMemoryMiB == 0 {
		s.VM.MaxMemoryMiB = s.VM.MemoryMiB
	}
	// Drover gives a VM no vCPU headroom: its maximum is what it has, so
	// changing vcpus is a restart.
	s.VM.MaxVCPUs = s.VM.VCPUs

	var disks []vmDiskModel
	diags.Append(listAs(ctx, m.Disks, &disks)...)
	for _, d := range disks {
		s.VM.Disks = append(s.VM.Disks, hypervisor.Disk{Volume: d.VolumeID.ValueString()})
	}
	var nics []vmNICModel
	diags.Append(listAs(ctx, m.NetworkInterfaces, &nics)...)
	for _, n := range nics {
		s.VM.NICs = append(s.VM.NICs, hypervisor.NIC{
			Network: n.Network.ValueString(), Bridge: n.Bridge.ValueString(), MAC: n.MAC.ValueString(),
		})
	}
	if !m.CloudInit.IsNull() && !m.CloudInit.IsUnknown() {
		var ci vmCloudInitModel
		diags.Append(m.CloudInit.As(ctx, &ci, basetypes.ObjectAsOptions{})...)
		s.Seed = &cloudinit.Seed{
			UserData: ci.UserData.ValueString(), MetaData: ci.MetaData.ValueString(),
			NetworkConfig: ci.NetworkConfig.ValueString(),
		}
		s.VM.CloudInit = &hypervisor.CDROM{Volume: cluster.SeedVolumeName(s.VM.Name)}
	}
	if !m.Placement.IsNull() && !m.Placement.IsUnknown() {
		var p vmPlacementModel
		diags.Append(m.Placement.As(ctx, &p, basetypes.ObjectAsOptions{})...)
		s.VM.Placement.Host = p.Host.ValueString()
		s.VM.Placement.SpreadGroup = p.SpreadGroup.ValueString()
		diags.Append(listAs(ctx, p.PreferredHosts, &s.VM.Placement.PreferredHosts)...)
	}
	return s, diags
}

func listAs(ctx context.Context, l types.List, target any) diag.Diagnostics {
	if l.IsNull() || l.IsUnknown() {
		return nil
	}
	return l.ElementsAs(ctx, target, false)
}

// vmFromTruth makes the state of a VM from what its host reports. libvirt
// does not keep the cloud-init seed's text, so cloud_init comes from prior
// (the plan, the state before, or after import what Read found in the seed
// volume) while the VM still has its seed; timeouts
// are Terraform's own. Empty lists and blocks stay null when prior has them
// null, so a configuration that leaves them out shows no change.
func vmFromTruth(vm hypervisor.VM, dom hypervisor.Domain, host string, prior vmModel) (vmModel, diag.Diagnostics) {
	var diags diag.Diagnostics
	m := vmModel{
		ID:           types.StringValue(vm.UUID),
		Name:         types.StringValue(vm.Name),
		Host:         types.StringValue(host),
		VCPUs:        types.Int64Value(int64(vm.VCPUs)),
		MemoryMiB:    types.Int64Value(vm.MemoryMiB),
		MaxMemoryMiB: types.Int64Value(max(vm.MaxMemoryMiB, vm.MemoryMiB)),
		Kernel:       stringOrNull(vm.Boot.Kernel),
		Initrd:       stringOrNull(vm.Boot.Initrd),
		Cmdline:      stringOrNull(vm.Boot.Cmdline),
		Firmware:     types.StringValue(orDefault(vm.Boot.Firmware, hypervisor.FirmwareBIOS)),
		Running:      types.BoolValue(dom.State.Active()),
		AllowRestart: types.BoolValue(vm.AllowRestart),
		Timeouts:     prior.Timeouts,
	}

	disks := make([]attr.Value, 0, len(vm.Disks))
	for i, d := range vm.Disks {
		if d.Volume == "" {
			diags.AddAttributeError(path.Root("disks").AtListIndex(i).AtName("volume_id"), "Unable to read VM",
				fmt.Sprintf("Disk %d (%s) of VM %s has no Drover volume in its metadata: it was not made by Drover.", i+1, d.Target, vm.Name))
			return m, diags
		}
		disks = append(disks, types.ObjectValueMust(diskAttrTypes, map[string]attr.Value{"volume_id": types.StringValue(d.Volume)}))
	}
	m.Disks = listOrNull(types.ObjectType{AttrTypes: diskAttrTypes}, disks, prior.Disks)

	nics := make([]attr.Value, 0, len(vm.NICs))
	for _, n := range vm.NICs {
		nics = append(nics, types.ObjectValueMust(nicAttrTypes, map[string]attr.Value{
			"network": stringOrNull(n.Network), "bridge": stringOrNull(n.Bridge), "mac": types.StringValue(n.MAC),
		}))
	}
	m.NetworkInterfaces = listOrNull(types.ObjectType{AttrTypes: nicAttrTypes}, nics, prior.NetworkInterfaces)

	m.CloudInit = types.ObjectNull(cloudInitAttrTypes)
	if vm.CloudInit != nil && !prior.CloudInit.IsUnknown() {
		m.CloudInit = prior.CloudInit
	}

	m.Placement = types.ObjectNull(placementAttrTypes)
	p := vm.Placement
	if p.Host != "" || p.SpreadGroup != "" || len(p.PreferredHosts) > 0 || !prior.Placement.IsNull() {
		preferred := types.ListNull(types.StringType)
		if len(p.PreferredHosts) > 0 {
			var d diag.Diagnostics
			preferred, d = types.ListValueFrom(context.Background(), types.StringType, p.PreferredHosts)
			diags.Append(d...)
		}
		m.Placement = types.ObjectValueMust(placementAttrTypes, map[string]attr.Value{
			"host": stringOrNull(p.Host), "preferred_hosts": preferred, "spread_group": stringOrNull(p.SpreadGroup),
		})
	}
	return m, diags
}

// cloudInitFromSeed makes cloud_init from a seed read back from its image.
// The image cannot tell an absent file from an empty one (Write writes
// user-data and meta-data even empty, and leaves out an empty
// network-config), so empty reads as null: what a configuration that leaves
// the attribute out has.
func cloudInitFromSeed(s cloudinit.Seed) types.Object {
	return types.ObjectValueMust(cloudInitAttrTypes, map[string]attr.Value{
		"user_data":      stringOrNull(s.UserData),
		"meta_data":      stringOrNull(s.MetaData),
		"network_config": stringOrNull(s.NetworkConfig),
	})
}

func stringOrNull(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// listOrNull returns the list of elems, or null when it is empty and prior
// is null.
func listOrNull(elem attr.Type, elems []attr.Value, prior types.List) types.List {
	if len(elems) == 0 && (prior.IsNull() || prior.IsUnknown()) {
		return types.ListNull(elem)
	}
	return types.ListValueMust(elem, elems)
}
