package provider

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/boolplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/listplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// Default timeouts of drover_backup; an export of large disks takes the
// longest.
const (
	defaultBackupCreateTimeout = 60 * time.Minute
	defaultBackupDeleteTimeout = 5 * time.Minute
)

var (
	_ resource.Resource                = (*backupResource)(nil)
	_ resource.ResourceWithConfigure   = (*backupResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*backupResource)(nil)
	_ resource.ResourceWithImportState = (*backupResource)(nil)
)

// NewBackupResource returns the drover_backup resource.
func NewBackupResource() resource.Resource { return &backupResource{} }

type backupResource struct {
	data *providerData
}

type backupModel struct {
	ID          types.String   `tfsdk:"id"`
	VMID        types.String   `tfsdk:"vm_id"`
	VMName      types.String   `tfsdk:"vm_name"`
	Quiesce     types.Bool     `tfsdk:"quiesce"`
	ExportPath  types.String   `tfsdk:"export_path"`
	Disks       types.List     `tfsdk:"disks"` // of backupDiskModel
	CreatedAt   types.String   `tfsdk:"created_at"`
	Consistency types.String   `tfsdk:"consistency"`
	PauseMS     types.Int64    `tfsdk:"pause_ms"`
	Timeouts    timeouts.Value `tfsdk:"timeouts"`
}

var backupDiskAttrTypes = map[string]attr.Type{
	"volume_id": types.StringType, "snapshot_id": types.StringType, "size_mib": types.Int64Type,
}

func (r *backupResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backup"
}

func (r *backupResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A backup of a whole VM: every disk cut at one instant, plus the VM's " +
			"definition, kept on the storage box as snapshots that outlive the VM and its volumes. " +
			"A running VM's filesystems are frozen through the QEMU guest agent when one answers " +
			"(`consistency = \"filesystem\"`); otherwise the VM is paused for the instant of the cut " +
			"(`consistency = \"crash\"`, as after a power cut; `pause_ms` says how long). Destroying " +
			"the resource deletes its snapshots and nothing else. Restore with a `drover_volume` per " +
			"disk whose `source.snapshot_id` is the disk's `snapshot_id` (or `source.file`, an exported " +
			"image) and a new `drover_vm` using them.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The backup's id: its snapshot set on the target.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"vm_id": schema.StringAttribute{
				MarkdownDescription: "The `id` of the `drover_vm` to back up (its domain UUID). " +
					"Changing it makes a new backup.",
				Required:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"vm_name": schema.StringAttribute{
				MarkdownDescription: "The VM's name when it was backed up.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"quiesce": schema.BoolAttribute{
				MarkdownDescription: "Freeze the guest's filesystems with the QEMU guest agent when " +
					"one answers, so that the backup is filesystem-consistent; without an agent (or " +
					"with `false`) the VM is paused briefly instead. Defaults to `true`.",
				Optional:      true,
				Computed:      true,
				Default:       booldefault.StaticBool(true),
				PlanModifiers: []planmodifier.Bool{boolplanmodifier.RequiresReplace()},
			},
			"export_path": schema.StringAttribute{
				MarkdownDescription: "A folder on the machine running Terraform to copy the backup " +
					"into: the domain XML (`domain.xml`), each disk as a sparse raw image " +
					"(`<volume>.raw`) and `manifest.json` with the SHA-256 of every file. It must not " +
					"exist or be empty. Destroying the backup leaves the export where it is.",
				Optional:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"disks": schema.ListNestedAttribute{
				MarkdownDescription: "The VM's disks, in its order: the volume, its snapshot in this " +
					"backup, and its size.",
				Computed:      true,
				PlanModifiers: []planmodifier.List{listplanmodifier.UseStateForUnknown()},
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"volume_id":   schema.StringAttribute{MarkdownDescription: "The disk's volume.", Computed: true},
					"snapshot_id": schema.StringAttribute{MarkdownDescription: "The snapshot of it.", Computed: true},
					"size_mib":    schema.Int64Attribute{MarkdownDescription: "Its size in MiB.", Computed: true},
				}},
			},
			"created_at": schema.StringAttribute{
				MarkdownDescription: "When the disks were cut (RFC 3339).",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"consistency": schema.StringAttribute{
				MarkdownDescription: "`filesystem` (the guest agent froze the filesystems, or the VM " +
					"was shut down cleanly) or `crash` (the VM was paused, or had been powered off: the " +
					"disks are as after a power cut, all at the same instant).",
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"pause_ms": schema.Int64Attribute{
				MarkdownDescription: "How long the guest stood still (paused or frozen), in " +
					"milliseconds; 0 for a VM that was not running.",
				Computed:      true,
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
		},
		Blocks: map[string]schema.Block{"timeouts": backupTimeouts(ctx)},
	}
}

func backupTimeouts(ctx context.Context) schema.Block {
	b := timeouts.Block(ctx, timeouts.Opts{Create: true, Delete: true})
	if nested, ok := b.(schema.SingleNestedBlock); ok {
		nested.MarkdownDescription = fmt.Sprintf("How long making the backup (with its export) and deleting "+
			"it may take. Defaults: create %s, delete %s.", defaultBackupCreateTimeout, defaultBackupDeleteTimeout)
		return nested
	}
	return b
}

func (r *backupResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unable to configure drover_backup",
			fmt.Sprintf("Unexpected provider data %T: this is a bug in the provider.", req.ProviderData))
		return
	}
	if !data.cluster.Hosts().BacksUp() {
		resp.Diagnostics.AddError("Unable to configure drover_backup",
			fmt.Sprintf("The provider's hypervisor %T cannot back up VMs: this is a bug in the provider.", data.hosts))
		return
	}
	r.data = data
}

// ModifyPlan checks a new backup before anything is done: the VM exists,
// its volumes are on the target, and the export folder is free.
func (r *backupResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if r.data == nil || req.Plan.Raw.IsNull() || !req.State.Raw.IsNull() {
		return // not configured, a destroy, or an existing backup
	}
	var plan backupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !plan.ExportPath.IsNull() && !plan.ExportPath.IsUnknown() {
		if err := cluster.CheckExportPath(plan.ExportPath.ValueString()); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("export_path"), "Export folder not usable", err.Error())
		}
	}
	if !known(plan.VMID) || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, planLookupTimeout)
	defer cancel()
	if _, _, err := r.data.cluster.BackupSource(ctx, plan.VMID.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("vm_id"), "Unable to back up VM", err.Error())
	}
}

func (r *backupResource) hasStorage(diags *diag.Diagnostics) bool {
	if r.data.storage == nil {
		diags.AddError("No storage configured", cluster.ErrNoStorage.Error())
		return false
	}
	return true
}

func (r *backupResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan backupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	timeout, diags := plan.Timeouts.Create(ctx, defaultBackupCreateTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	exportPath := plan.ExportPath.ValueString()
	if exportPath != "" {
		if err := cluster.CheckExportPath(exportPath); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("export_path"), "Export folder not usable", err.Error())
			return
		}
	}
	b, err := r.data.cluster.Cut(ctx, plan.VMID.ValueString(), plan.Quiesce.ValueBool())
	if err != nil {
		resp.Diagnostics.AddError("Unable to back up VM", err.Error())
		return
	}
	if b.Unreleased != "" {
		// The backup exists; the guest may not run. Keep the backup in the
		// state and say loudly what to do.
		resp.Diagnostics.AddError("VM not resumed after its backup", b.Unreleased)
	}
	if exportPath != "" && b.Unreleased == "" {
		if err := r.data.cluster.Export(ctx, b, exportPath); err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("export_path"), "Unable to export backup", err.Error())
			return
		}
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, backupFromSet(b.Set, plan))...)
}

// backupFromSet is the state of a backup from its snapshot set on the
// target; what the set does not hold (quiesce, export_path, timeouts) comes
// from prior.
func backupFromSet(set wire.SnapshotSet, prior backupModel) backupModel {
	out := prior
	out.ID = types.StringValue(set.ID)
	if out.VMID.IsNull() || out.VMID.IsUnknown() { // imported: vm_id as the set knows it
		out.VMID = types.StringValue(set.Labels[cluster.LabelVMID])
	}
	out.VMName = types.StringValue(set.Labels[cluster.LabelVMName])
	out.CreatedAt = types.StringValue(set.CreatedAt.UTC().Format(time.RFC3339Nano))
	out.Consistency = types.StringValue(set.Labels[cluster.LabelConsistency])
	pause, _ := strconv.ParseInt(set.Labels[cluster.LabelPauseMS], 10, 64)
	out.PauseMS = types.Int64Value(pause)
	if out.Quiesce.IsNull() || out.Quiesce.IsUnknown() {
		out.Quiesce = types.BoolValue(true)
	}
	out.Disks = backupDisks(set)
	return out
}

// backupDisks is the disks attribute of a backup: its snapshots, in the
// VM's disk order.
func backupDisks(set wire.SnapshotSet) types.List {
	disks := make([]attr.Value, len(set.Snapshots))
	for i, s := range set.Snapshots {
		disks[i] = types.ObjectValueMust(backupDiskAttrTypes, map[string]attr.Value{
			"volume_id": types.StringValue(s.Volume), "snapshot_id": types.StringValue(s.ID),
			"size_mib": types.Int64Value(s.SizeMiB),
		})
	}
	return types.ListValueMust(types.ObjectType{AttrTypes: backupDiskAttrTypes}, disks)
}

func (r *backupResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state backupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	set, err := r.data.storage.GetSnapshotSet(ctx, state.ID.ValueString())
	if errors.Is(err, storage.ErrNotFound) {
		tflog.Warn(ctx, "backup is gone from the target; removing it from the state", map[string]any{"backup": state.ID.ValueString()})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to read backup", err.Error())
		return
	}
	if set.Labels[cluster.LabelVMID] == "" {
		resp.Diagnostics.AddError("Not a Drover backup",
			fmt.Sprintf("Snapshot set %s on the target has no %s label: it was not made by drover_backup.", set.ID, cluster.LabelVMID))
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, backupFromSet(set, state))...)
}

// Update has nothing to do: every setting of a backup replaces it.
func (r *backupResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan backupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *backupResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state backupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	timeout, diags := state.Timeouts.Delete(ctx, defaultBackupDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := r.data.storage.DeleteSnapshotSet(ctx, state.ID.ValueString())
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		resp.Diagnostics.AddError("Unable to delete backup", err.Error())
	}
}

func (r *backupResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
