package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// Default timeouts of drover_volume; an upload of a large image takes the
// longest.
const (
	defaultVolumeCreateTimeout = 30 * time.Minute
	defaultVolumeUpdateTimeout = 10 * time.Minute
	defaultVolumeDeleteTimeout = 5 * time.Minute
)

// planLookupTimeout bounds what planning asks the target.
const planLookupTimeout = 30 * time.Second

// uploadLogInterval is how often an upload logs its progress.
const uploadLogInterval = 5 * time.Second

// importedKey marks, in private state, a volume that was imported: its
// source is not known, so setting one in the configuration afterwards must
// not replace it.
const importedKey = "imported"

var (
	_ resource.Resource                   = (*volumeResource)(nil)
	_ resource.ResourceWithConfigure      = (*volumeResource)(nil)
	_ resource.ResourceWithValidateConfig = (*volumeResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*volumeResource)(nil)
	_ resource.ResourceWithImportState    = (*volumeResource)(nil)
)

// NewVolumeResource returns the drover_volume resource.
func NewVolumeResource() resource.Resource {
	return &volumeResource{}
}

type volumeResource struct {
	data *providerData
}

// volumeModel is a drover_volume as Terraform sends it.
type volumeModel struct {
	ID         types.String   `tfsdk:"id"`
	Name       types.String   `tfsdk:"name"`
	SizeMiB    types.Int64    `tfsdk:"size_mib"`
	Source     types.Object   `tfsdk:"source"` // volumeSourceModel
	IQN        types.String   `tfsdk:"iqn"`
	LUN        types.Int64    `tfsdk:"lun"`
	Initiators types.List     `tfsdk:"initiators"` // of string
	CHAPUser   types.String   `tfsdk:"chap_user"`
	Timeouts   timeouts.Value `tfsdk:"timeouts"`
}

type volumeSourceModel struct {
	VolumeID   types.String `tfsdk:"volume_id"`
	SnapshotID types.String `tfsdk:"snapshot_id"`
	File       types.String `tfsdk:"file"`
}

var volumeSourceTypes = map[string]attr.Type{
	"volume_id":   types.StringType,
	"snapshot_id": types.StringType,
	"file":        types.StringType,
}

// volumeSpec is a drover_volume in plain Go: what to create.
type volumeSpec struct {
	Name    string
	SizeMiB int64 // 0: the size of the source
	Source  volumeSource
}

// volumeSource is what a new volume starts from; at most one field is set.
type volumeSource struct {
	Volume   string // clone of this volume
	Snapshot string // restore of this snapshot
	File     string // upload of this raw or qcow2 image
}

func (r *volumeResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_volume"
}

func (r *volumeResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A volume (iSCSI LUN) on the storage box, drover-target: empty, a clone " +
			"of another volume, a restore of a snapshot, or an uploaded raw or qcow2 image. Every " +
			"configured host may log in to it (its initiator `iqn.2026-11.io.drover.host:<host>`, " +
			"with CHAP), so a VM using it can run on and move to any host. A volume grows in place, " +
			"online: running VMs that use it see the new size at once. It never shrinks.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The volume's name, which identifies it on the target. " +
					"`drover_vm` disks refer to volumes by it.",
				Computed: true,
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "The volume's name on the target: 1 to 63 lowercase letters, " +
					"digits and `-`, not starting or ending with `-`. Changing it replaces the volume.",
				Required:      true,
				Validators:    []validator.String{volumeName{}},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"size_mib": schema.Int64Attribute{
				MarkdownDescription: "The size in MiB. Required for an empty volume; with a `source` " +
					"it defaults to the source's size and may be larger. Growing it is done in place " +
					"while VMs run, and they see the new size; making it smaller is refused: create " +
					"a new volume instead.",
				Optional:   true,
				Computed:   true,
				Validators: []validator.Int64{int64validator.AtLeast(1)},
			},
			"source": schema.SingleNestedAttribute{
				MarkdownDescription: "What the volume starts with; set exactly one of its attributes. " +
					"Without it the volume is empty (all zeros). Changing it replaces the volume.",
				Optional: true,
				Attributes: map[string]schema.Attribute{
					"volume_id": schema.StringAttribute{
						MarkdownDescription: "Clone this volume (the `id` of a `drover_volume`). " +
							"A clone of a volume in use is crash-consistent.",
						Optional: true,
					},
					"snapshot_id": schema.StringAttribute{
						MarkdownDescription: "Restore this snapshot, such as one of a `drover_backup`'s " +
							"`disks[*].snapshot_id`. A snapshot the storage box is still copying (copy-before-write, " +
							"on a filesystem without reflinks) is waited for, within the create timeout.",
						Optional: true,
					},
					"file": schema.StringAttribute{
						MarkdownDescription: "Upload this raw or qcow2 image, a path on the machine " +
							"running Terraform. The format is detected from the file's first bytes; " +
							"only the path is tracked, not the file's content.",
						Optional: true,
					},
				},
			},
			"iqn": schema.StringAttribute{
				MarkdownDescription: "The iSCSI qualified name of the volume's target, such as " +
					"`iqn.2026-11.io.drover:data`.",
				Computed: true,
			},
			"lun": schema.Int64Attribute{
				MarkdownDescription: "The volume's logical unit number within its target (0).",
				Computed:            true,
			},
			"initiators": schema.ListAttribute{
				MarkdownDescription: "The iSCSI initiators that may log in to the volume, sorted: one per " +
					"host of the provider block (`iqn.2026-11.io.drover.host:<host>`). A host added to or " +
					"removed from the provider block shows here as a change in the next plan, made when " +
					"it is applied; a refresh only reads it.",
				Computed:    true,
				ElementType: types.StringType,
			},
			"chap_user": schema.StringAttribute{
				MarkdownDescription: "The CHAP user the hosts log in as (`drover`); its secret is derived " +
					"from the storage token and is never shown or stored.",
				Computed: true,
			},
		},
		Blocks: map[string]schema.Block{"timeouts": volumeTimeouts(ctx)},
	}
}

// volumeTimeouts is the timeouts block, with its defaults documented.
func volumeTimeouts(ctx context.Context) schema.Block {
	b := timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true})
	if nested, ok := b.(schema.SingleNestedBlock); ok {
		nested.MarkdownDescription = fmt.Sprintf("How long creating (with an upload), updating and "+
			"deleting may take. Defaults: create %s, update %s, delete %s.",
			defaultVolumeCreateTimeout, defaultVolumeUpdateTimeout, defaultVolumeDeleteTimeout)
		return nested
	}
	return b
}

func (r *volumeResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return // the provider is not configured yet
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data",
			fmt.Sprintf("Expected *providerData, got %T. This is a bug in the provider.", req.ProviderData))
		return
	}
	r.data = data
}

// ValidateConfig checks what the schema cannot express: one source at most,
// and a size for an empty volume.
func (r *volumeResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m volumeModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() || m.Source.IsUnknown() {
		return
	}
	if m.Source.IsNull() {
		if m.SizeMiB.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("size_mib"), "Missing volume size",
				"size_mib is required for an empty volume (one without source).")
		}
		return
	}
	var src volumeSourceModel
	resp.Diagnostics.Append(m.Source.As(ctx, &src, basetypes.ObjectAsOptions{})...)
	if resp.Diagnostics.HasError() {
		return
	}
	set, unknown := 0, false
	for _, v := range []types.String{src.VolumeID, src.SnapshotID, src.File} {
		if !v.IsNull() {
			set++
		}
		unknown = unknown || v.IsUnknown()
	}
	if set > 1 || (set == 0 && !unknown) {
		resp.Diagnostics.AddAttributeError(path.Root("source"), "Invalid volume source",
			fmt.Sprintf("source sets %d of volume_id, snapshot_id and file: set exactly one, "+
				"or leave source out for an empty volume.", set))
	}
	for name, v := range map[string]types.String{"volume_id": src.VolumeID, "snapshot_id": src.SnapshotID, "file": src.File} {
		if !v.IsNull() && !v.IsUnknown() && v.ValueString() == "" {
			resp.Diagnostics.AddAttributeError(path.Root("source").AtName(name), "Empty volume source",
				fmt.Sprintf("source.%s is empty: give a value or leave it out.", name))
		}
	}
}

// ModifyPlan decides what the plan can know: whether the volume is
// replaced, its size (from the source when not given), and that it does not
// shrink.
func (r *volumeResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if r.data == nil {
		return // the provider is not configured: its settings are unknown
	}
	if r.data.storage == nil {
		resp.Diagnostics.Append(noStorage("drover_volume"))
		return
	}
	if req.Plan.Raw.IsNull() {
		return // destroy
	}
	var plan, cfg volumeModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if req.State.Raw.IsNull() {
		r.planCreate(ctx, &plan, cfg, &resp.Diagnostics)
		resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
		return
	}
	var state volumeModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	imported, diags := req.Private.GetKey(ctx, importedKey)
	resp.Diagnostics.Append(diags...)
	sourceReplaces := !plan.Source.Equal(state.Source) && !(state.Source.IsNull() && imported != nil)
	if sourceReplaces {
		resp.RequiresReplace = append(resp.RequiresReplace, path.Root("source"))
	}
	if sourceReplaces || !plan.Name.Equal(state.Name) {
		r.planCreate(ctx, &plan, cfg, &resp.Diagnostics)
		resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
		return
	}

	plan.ID, plan.IQN, plan.LUN = state.ID, state.IQN, state.LUN
	// Access follows the provider block: a host added or removed shows as
	// a change here, and Update makes it.
	plan.setAccess(r.data.config.volumeAccess())
	switch {
	case cfg.SizeMiB.IsNull():
		plan.SizeMiB = state.SizeMiB
	case cfg.SizeMiB.IsUnknown():
	case cfg.SizeMiB.ValueInt64() < state.SizeMiB.ValueInt64():
		resp.Diagnostics.AddAttributeError(path.Root("size_mib"), "Volume cannot shrink",
			fmt.Sprintf("size_mib is %d MiB, but volume %q already has %d MiB, and a volume only grows. "+
				"To get a smaller volume, create a new volume with the smaller size_mib and copy the data over.",
				cfg.SizeMiB.ValueInt64(), state.Name.ValueString(), state.SizeMiB.ValueInt64()))
		return
	}
	resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
}

// planCreate plans a new volume: its size comes from the configuration or
// else from the source, and a source must exist and fit in the size. Its id
// (its name) is known only after apply, so that a VM that refers to a volume
// id known at plan time can be checked against the storage box then.
func (r *volumeResource) planCreate(ctx context.Context, plan *volumeModel, cfg volumeModel, diags *diag.Diagnostics) {
	plan.setAccess(r.data.config.volumeAccess())
	plan.ID = types.StringUnknown()
	plan.IQN = types.StringUnknown()
	plan.LUN = types.Int64Unknown()
	if cfg.SizeMiB.IsNull() {
		plan.SizeMiB = types.Int64Unknown()
	}
	src, known, d := sourceOf(ctx, plan.Source)
	diags.Append(d...)
	if diags.HasError() || !known || src == (volumeSource{}) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, planLookupTimeout)
	defer cancel()
	need, at, err := r.sourceSizeMiB(ctx, src)
	if err != nil {
		diags.AddAttributeError(at, "Invalid volume source", err.Error())
		return
	}
	switch {
	case cfg.SizeMiB.IsNull():
		plan.SizeMiB = types.Int64Value(need)
	case !cfg.SizeMiB.IsUnknown() && cfg.SizeMiB.ValueInt64() < need:
		diags.AddAttributeError(path.Root("size_mib"), "Volume smaller than its source",
			fmt.Sprintf("size_mib is %d MiB, but the source (%s) needs %d MiB: give at least %d, "+
				"or leave size_mib out to take the source's size.", cfg.SizeMiB.ValueInt64(), at, need, need))
	}
}

// sourceSizeMiB is the size a volume made from src needs, looked up on the
// target or in the image file; the path names the source attribute for an
// error.
func (r *volumeResource) sourceSizeMiB(ctx context.Context, src volumeSource) (int64, path.Path, error) {
	at := path.Root("source")
	switch {
	case src.Volume != "":
		at = at.AtName("volume_id")
		v, err := r.data.storage.GetVolume(ctx, src.Volume)
		if errors.Is(err, storage.ErrNotFound) {
			return 0, at, fmt.Errorf("source volume %q does not exist on the storage target: "+
				"check source.volume_id (a drover_volume's id is its name)", src.Volume)
		}
		if err != nil {
			return 0, at, fmt.Errorf("look up source volume %q: %w", src.Volume, err)
		}
		return v.SizeMiB, at, nil
	case src.Snapshot != "":
		at = at.AtName("snapshot_id")
		s, err := r.data.storage.GetSnapshot(ctx, src.Snapshot)
		if errors.Is(err, storage.ErrNotFound) {
			return 0, at, fmt.Errorf("source snapshot %q does not exist on the storage target: check source.snapshot_id", src.Snapshot)
		}
		if err != nil {
			return 0, at, fmt.Errorf("look up source snapshot %q: %w", src.Snapshot, err)
		}
		return s.SizeMiB, at, nil
	default:
		at = at.AtName("file")
		info, err := storage.InspectImageFile(src.File)
		if err != nil {
			return 0, at, fmt.Errorf("source file: %w", err)
		}
		return info.SizeMiB(), at, nil
	}
}

func (r *volumeResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan volumeModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	timeout, diags := plan.Timeouts.Create(ctx, defaultVolumeCreateTimeout)
	resp.Diagnostics.Append(diags...)
	spec, diags := plan.spec(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	v, err := createVolume(ctx, r.data.storage, spec, r.data.config.volumeAccess(), uploadLogger(ctx, spec.Name))
	if err != nil {
		resp.Diagnostics.AddError("Unable to create volume", err.Error())
		return
	}
	tflog.Info(ctx, "created volume", map[string]any{"volume": v.Name, "size_mib": v.SizeMiB, "iqn": v.IQN})
	plan.setFrom(v)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *volumeResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state volumeModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	name := state.ID.ValueString()
	v, err := r.data.storage.GetVolume(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		tflog.Warn(ctx, "volume is gone from the target; removing it from the state", map[string]any{"volume": name})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to read volume", fmt.Sprintf("read volume %q: %s", name, err))
		return
	}
	state.setFrom(v)
	if state.Source.IsNull() && v.Source != nil {
		// Imported: the target remembers what a clone was made from.
		state.Source = types.ObjectValueMust(volumeSourceTypes, map[string]attr.Value{
			"volume_id":   optionalString(v.Source.Volume),
			"snapshot_id": optionalString(v.Source.Snapshot),
			"file":        types.StringNull(),
		})
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *volumeResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state volumeModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	timeout, diags := plan.Timeouts.Update(ctx, defaultVolumeUpdateTimeout)
	resp.Diagnostics.Append(diags...)
	spec, diags := plan.spec(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The access is always sent: the CHAP secret cannot be read back, so
	// a changed token is only caught this way.
	access := r.data.config.volumeAccess()
	update := storage.UpdateVolumeRequest{
		Initiators: &access.Initiators,
		CHAP:       &wire.CHAP{User: access.CHAPUser, Secret: access.CHAPSecret},
	}
	grow := spec.SizeMiB > state.SizeMiB.ValueInt64()
	if grow {
		update.SizeMiB = &spec.SizeMiB
	}
	v, err := r.data.storage.UpdateVolume(ctx, spec.Name, update)
	if err != nil {
		resp.Diagnostics.AddError("Unable to update volume", fmt.Sprintf("update volume %q: %s", spec.Name, err))
		return
	}
	if grow {
		tflog.Info(ctx, "grew volume", map[string]any{"volume": v.Name, "from_mib": state.SizeMiB.ValueInt64(), "size_mib": v.SizeMiB})
		r.resizeDisks(ctx, v, &resp.Diagnostics)
	}
	if v, err = r.data.storage.GetVolume(ctx, spec.Name); err != nil {
		resp.Diagnostics.AddError("Unable to read volume", fmt.Sprintf("read volume %q after updating it: %s", spec.Name, err))
		return
	}
	plan.setFrom(v)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// resizeDisks tells the running VMs that use v, on every host, its new
// size. The volume has grown whatever happens here, so a failure is a
// warning that says how to finish by hand.
func (r *volumeResource) resizeDisks(ctx context.Context, v wire.Volume, diags *diag.Diagnostics) {
	if r.data.resizer == nil {
		diags.AddWarning("Running VMs not told of the new size",
			fmt.Sprintf("Volume %q grew to %d MiB, but the provider cannot reach the hosts' hypervisor to "+
				"tell running VMs; they see the new size after a restart.", v.Name, v.SizeMiB))
		return
	}
	resized, err := r.data.resizer.ResizeDisks(ctx, r.data.config.cluster().HostURIs(), v.IQN, v.LUN, v.SizeMiB)
	for _, d := range resized {
		tflog.Info(ctx, "running VM sees the new volume size", map[string]any{
			"volume": v.Name, "vm": d.VM + "@" + d.Host, "disk": d.Target, "size_mib": v.SizeMiB,
		})
	}
	if err != nil {
		diags.AddWarning("Running VMs may not see the new size",
			fmt.Sprintf("Volume %q grew to %d MiB on the target, but telling the running VMs that use it failed: %s\n\n"+
				"A VM that was not told sees the new size after a restart, or at once after "+
				"`virsh blockresize VM DISK %dM` on its host.", v.Name, v.SizeMiB, err, v.SizeMiB))
	}
}

func (r *volumeResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state volumeModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	timeout, diags := state.Timeouts.Delete(ctx, defaultVolumeDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	name := state.ID.ValueString()
	err := r.data.storage.DeleteVolume(ctx, name, false)
	switch {
	case err == nil, errors.Is(err, storage.ErrNotFound):
		tflog.Info(ctx, "deleted volume", map[string]any{"volume": name})
	case errors.Is(err, storage.ErrConflict):
		resp.Diagnostics.AddError("Unable to delete volume", inUseDetail(ctx, r.data.storage, name, err))
	default:
		resp.Diagnostics.AddError("Unable to delete volume", fmt.Sprintf("delete volume %q: %s", name, err))
	}
}

func (r *volumeResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if problem := volumeNameProblem(req.ID); problem != "" {
		resp.Diagnostics.AddError("Invalid import ID",
			fmt.Sprintf("Import a volume by its name on the target (terraform import drover_volume.NAME VOLUME); %q %s.", req.ID, problem))
		return
	}
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
	resp.Diagnostics.Append(resp.Private.SetKey(ctx, importedKey, []byte("true"))...)
}

// hasStorage reports, as an error, a provider block without storage.
func (r *volumeResource) hasStorage(diags *diag.Diagnostics) bool {
	if r.data == nil || r.data.storage == nil {
		diags.Append(noStorage("drover_volume"))
		return false
	}
	return true
}

// noStorage is the error of a resource that needs the storage target in a
// provider block without one.
func noStorage(what string) diag.Diagnostic {
	return diag.NewErrorDiagnostic("Storage is not configured",
		what+" needs the storage target: add a storage block with endpoint, token and portal "+
			"to the provider \"drover\" block.")
}

// spec converts the model once into what the domain code works with.
func (m volumeModel) spec(ctx context.Context) (volumeSpec, diag.Diagnostics) {
	src, _, diags := sourceOf(ctx, m.Source)
	s := volumeSpec{Name: m.Name.ValueString(), Source: src}
	if !m.SizeMiB.IsUnknown() {
		s.SizeMiB = m.SizeMiB.ValueInt64()
	}
	return s, diags
}

// sourceOf converts a source object; known is false when any of it is
// unknown.
func sourceOf(ctx context.Context, o types.Object) (volumeSource, bool, diag.Diagnostics) {
	if o.IsNull() {
		return volumeSource{}, true, nil
	}
	if o.IsUnknown() {
		return volumeSource{}, false, nil
	}
	var m volumeSourceModel
	diags := o.As(ctx, &m, basetypes.ObjectAsOptions{})
	known := !m.VolumeID.IsUnknown() && !m.SnapshotID.IsUnknown() && !m.File.IsUnknown()
	return volumeSource{
		Volume:   m.VolumeID.ValueString(),
		Snapshot: m.SnapshotID.ValueString(),
		File:     m.File.ValueString(),
	}, known, diags
}

// setFrom sets the attributes the target knows from v.
func (m *volumeModel) setFrom(v wire.Volume) {
	m.ID = types.StringValue(v.Name)
	m.Name = types.StringValue(v.Name)
	m.SizeMiB = types.Int64Value(v.SizeMiB)
	m.IQN = types.StringValue(v.IQN)
	m.LUN = types.Int64Value(int64(v.LUN))
	m.Initiators = stringList(slices.Sorted(slices.Values(v.Initiators)))
	m.CHAPUser = types.StringValue("")
	if v.CHAP != nil {
		m.CHAPUser = types.StringValue(v.CHAP.User)
	}
}

// setAccess plans the access every volume of this configuration gets.
func (m *volumeModel) setAccess(a cluster.Access) {
	m.Initiators = stringList(a.Initiators)
	m.CHAPUser = types.StringValue(a.CHAPUser)
}

func stringList(s []string) types.List {
	vals := make([]attr.Value, len(s))
	for i, x := range s {
		vals[i] = types.StringValue(x)
	}
	return types.ListValueMust(types.StringType, vals)
}

func optionalString(s string) types.String {
	if s == "" {
		return types.StringNull()
	}
	return types.StringValue(s)
}

// createVolume makes the volume of spec, with access, and returns it as
// the target has it. An uploaded image reports its progress to progress;
// a volume whose upload failed is deleted again.
func createVolume(ctx context.Context, c *storage.Client, spec volumeSpec, access cluster.Access, progress func(sent, total int64)) (wire.Volume, error) {
	req := wire.CreateVolumeRequest{
		Name:       spec.Name,
		SizeMiB:    spec.SizeMiB,
		Initiators: access.Initiators,
		CHAP:       &wire.CHAP{User: access.CHAPUser, Secret: access.CHAPSecret},
	}
	var image storage.ImageInfo
	switch src := spec.Source; {
	case src.Volume != "":
		req.Source = &wire.Source{Volume: src.Volume}
	case src.Snapshot != "":
		req.Source = &wire.Source{Snapshot: src.Snapshot}
		// A snapshot cut by copy-before-write (no reflinks on the storage
		// box) can be restored once it is copied: wait for it, within the
		// resource's timeouts, as drover_backup does.
		if _, err := c.WaitSnapshot(ctx, src.Snapshot); err != nil {
			return wire.Volume{}, fmt.Errorf("create volume %q from snapshot %s: %w", spec.Name, src.Snapshot, err)
		}
	case src.File != "":
		var err error
		if image, err = storage.InspectImageFile(src.File); err != nil {
			return wire.Volume{}, fmt.Errorf("create volume %q: source file: %w", spec.Name, err)
		}
		if req.SizeMiB == 0 {
			req.SizeMiB = image.SizeMiB()
		}
		if req.SizeMiB < image.SizeMiB() {
			return wire.Volume{}, fmt.Errorf("create volume %q: the image %s needs %d MiB, more than size_mib %d",
				spec.Name, src.File, image.SizeMiB(), req.SizeMiB)
		}
	}
	if _, err := c.CreateVolume(ctx, req); err != nil {
		return wire.Volume{}, fmt.Errorf("create volume %q: %w", spec.Name, err)
	}
	if spec.Source.File != "" {
		if err := uploadImage(ctx, c, spec.Name, spec.Source.File, image.Format, progress); err != nil {
			// A volume without its content is of no use: take it away, so
			// that the next apply starts over.
			cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), planLookupTimeout)
			defer cancel()
			if derr := c.DeleteVolume(cleanup, spec.Name, true); derr != nil && !errors.Is(derr, storage.ErrNotFound) {
				err = errors.Join(err, fmt.Errorf("remove the volume again: %w", derr))
			}
			return wire.Volume{}, err
		}
	}
	v, err := c.GetVolume(ctx, spec.Name)
	if err != nil {
		return wire.Volume{}, fmt.Errorf("read volume %q after creating it: %w", spec.Name, err)
	}
	return v, nil
}

// uploadImage streams the image file into the volume.
func uploadImage(ctx context.Context, c *storage.Client, volume, file, format string, progress func(sent, total int64)) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("upload %s to volume %q: %w", file, volume, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload %s to volume %q: %w", file, volume, err)
	}
	body := &progressReader{r: f, total: st.Size(), report: progress}
	if err := c.UploadVolume(ctx, volume, body, format); err != nil {
		return fmt.Errorf("upload %s (%s) to volume %q: %w", file, format, volume, err)
	}
	progress(st.Size(), st.Size())
	return nil
}

// progressReader reports how much of total was read, at most every
// uploadLogInterval.
type progressReader struct {
	r      io.Reader
	sent   int64
	total  int64
	last   time.Time
	report func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.sent += int64(n)
	if now := time.Now(); now.Sub(p.last) >= uploadLogInterval {
		p.last = now
		p.report(p.sent, p.total)
	}
	return n, err
}

// uploadLogger logs the progress of an upload to volume.
func uploadLogger(ctx context.Context, volume string) func(sent, total int64) {
	return func(sent, total int64) {
		percent := int64(100)
		if total > 0 {
			percent = sent * 100 / total
		}
		tflog.Info(ctx, "uploading image", map[string]any{
			"volume": volume, "sent_mib": sent / storage.MiB, "total_mib": total / storage.MiB, "percent": percent,
		})
	}
}

// inUseDetail explains a refused delete: which hosts are logged in to the
// volume, and so which VMs may still use it.
func inUseDetail(ctx context.Context, c *storage.Client, volume string, err error) string {
	sessions, serr := c.Sessions(ctx)
	if serr != nil {
		return fmt.Sprintf("Volume %q is in use (%s); listing its sessions failed too: %s. "+
			"Stop or move the VMs that use it, then destroy it again.", volume, err, serr)
	}
	var users []string
	for _, s := range sessions {
		if s.Volume != volume {
			continue
		}
		if host, ok := cluster.InitiatorHost(s.Initiator); ok {
			users = append(users, fmt.Sprintf("host %s (initiator %s, from %s)", host, s.Initiator, s.RemoteAddr))
		} else {
			users = append(users, fmt.Sprintf("initiator %s from %s, not one of the provider's hosts", s.Initiator, s.RemoteAddr))
		}
	}
	return fmt.Sprintf("Volume %q is still in use: %s is logged in to it, so a VM running there probably "+
		"has it as a disk. Stop that VM or take the disk out of it (with Terraform: remove the disk from "+
		"the drover_vm, or destroy that drover_vm first), then destroy the volume again.\n\n%s",
		volume, strings.Join(users, "; "), err)
}

// volumeName refuses names the target would refuse.
type volumeName struct{}

func (volumeName) Description(context.Context) string {
	return "must be 1 to 63 lowercase letters, digits and -, not starting or ending with -"
}

func (v volumeName) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (volumeName) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	s := req.ConfigValue.ValueString()
	if problem := volumeNameProblem(s); problem != "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid volume name",
			fmt.Sprintf("%q %s: a volume name is 1 to 63 lowercase letters, digits and -, "+
				"not starting or ending with -.", s, problem))
	}
}

// volumeNameProblem says what is wrong with a volume name, or "".
func volumeNameProblem(s string) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > 63:
		return fmt.Sprintf("is %d characters long, the limit is 63", len(s))
	case s[0] == '-' || s[len(s)-1] == '-':
		return "starts or ends with -"
	}
	for i, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Sprintf("has the character %q at position %d", c, i+1)
		}
	}
	return ""
}
