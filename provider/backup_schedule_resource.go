package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

var (
	_ resource.Resource                   = (*backupScheduleResource)(nil)
	_ resource.ResourceWithConfigure      = (*backupScheduleResource)(nil)
	_ resource.ResourceWithValidateConfig = (*backupScheduleResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*backupScheduleResource)(nil)
	_ resource.ResourceWithImportState    = (*backupScheduleResource)(nil)
)

// NewBackupScheduleResource returns the drover_backup_schedule resource.
func NewBackupScheduleResource() resource.Resource { return &backupScheduleResource{} }

type backupScheduleResource struct {
	data *providerData
}

type backupScheduleModel struct {
	ID       types.String `tfsdk:"id"`
	VMID     types.String `tfsdk:"vm_id"`
	Schedule types.String `tfsdk:"schedule"`
	Keep     *keepModel   `tfsdk:"keep"`
	Restic   *resticModel `tfsdk:"restic"`
	Volumes  types.List   `tfsdk:"volumes"`
	NextRun  types.String `tfsdk:"next_run"`
	LastRun  types.Object `tfsdk:"last_run"`
}

type keepModel struct {
	Last    types.Int64 `tfsdk:"last"`
	Daily   types.Int64 `tfsdk:"daily"`
	Weekly  types.Int64 `tfsdk:"weekly"`
	Monthly types.Int64 `tfsdk:"monthly"`
}

type resticModel struct {
	Repository   types.String `tfsdk:"repository"`
	PasswordFile types.String `tfsdk:"password_file"`
}

var lastRunAttrTypes = map[string]attr.Type{
	"at": types.StringType, "status": types.StringType, "set_id": types.StringType, "error": types.StringType,
}

func (r *backupScheduleResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backup_schedule"
}

func (r *backupScheduleResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	count := func(what string) schema.Int64Attribute {
		return schema.Int64Attribute{MarkdownDescription: what, Optional: true, Validators: []validator.Int64{int64validator.AtLeast(0)}}
	}
	resp.Schema = schema.Schema{
		MarkdownDescription: "Backups of a VM that happen without anyone running Terraform: the schedule " +
			"lives in drover-target, which runs it by itself. Each run is a crash-consistent cut of all " +
			"the VM's disks at one instant (the storage box holds their writes for the cut; no host is " +
			"asked), with the VM's definition attached, followed by pruning of the schedule's own runs " +
			"by `keep`. Runs are snapshot sets like a `drover_backup`'s: `drover_backups` lists them, and " +
			"they are restored the same way. With `restic`, every run also goes to a restic repository " +
			"on the storage box. Runs missed while drover-target was down are made up by one run. " +
			"Destroying the schedule keeps the backups it made. Import by id.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The schedule's id on the target, such as `sched-3`.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"vm_id": schema.StringAttribute{
				MarkdownDescription: "The `id` of the `drover_vm` to back up (its domain UUID). Changing it " +
					"makes a new schedule; the old one's backups stay.",
				Required:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"schedule": schema.StringAttribute{
				MarkdownDescription: "When to run: a 5-field cron expression (minute, hour, day of month, " +
					"month, day of week, as in crontab(5)) in the storage box's time zone, such as " +
					"`30 2 * * *` for 02:30 every night.",
				Required: true,
			},
			"volumes": schema.ListAttribute{
				MarkdownDescription: "The VM's disks that each run cuts, in its order, as they were when " +
					"the schedule was last applied (a plan shows a change when the VM's disks changed).",
				ElementType: types.StringType,
				Computed:    true,
			},
			"next_run": schema.StringAttribute{
				MarkdownDescription: "When the schedule runs next (RFC 3339); empty when its expression " +
					"never matches again.",
				Computed: true,
			},
			"last_run": schema.SingleNestedAttribute{
				MarkdownDescription: "How the latest run went; null before the first.",
				Computed:            true,
				Attributes: map[string]schema.Attribute{
					"at":     schema.StringAttribute{MarkdownDescription: "When it started (RFC 3339).", Computed: true},
					"status": schema.StringAttribute{MarkdownDescription: "`ok` or `failed`.", Computed: true},
					"set_id": schema.StringAttribute{MarkdownDescription: "The backup it made (a `drover_backups` id), if it made one.", Computed: true},
					"error":  schema.StringAttribute{MarkdownDescription: "Why it failed; empty when it did not.", Computed: true},
				},
			},
		},
		Blocks: map[string]schema.Block{
			"keep": schema.SingleNestedBlock{
				MarkdownDescription: "Which runs pruning keeps (required), as Proxmox Backup Server prunes: " +
					"the `last` newest, then the newest run of each of the last `daily` days, `weekly` ISO " +
					"weeks and `monthly` months. Set at least one above 0. Only this schedule's runs are " +
					"pruned; manual backups and other schedules' runs are never touched.",
				Attributes: map[string]schema.Attribute{
					"last":    count("How many of the newest runs to keep."),
					"daily":   count("For how many days to keep the day's newest run."),
					"weekly":  count("For how many ISO weeks (Monday to Sunday) to keep the week's newest run."),
					"monthly": count("For how many months to keep the month's newest run."),
				},
			},
			"restic": schema.SingleNestedBlock{
				MarkdownDescription: "A restic repository on the storage box that every run also goes to: " +
					"each disk image (holes as zeros, which restic deduplicates) and `domain.xml`, tagged " +
					"`vm=<vm_id>`, `set=<backup id>` and `schedule=<id>`, then `restic forget --prune` with " +
					"the same `keep`. drover-target creates the repository if it is not there.",
				Attributes: map[string]schema.Attribute{
					"repository": schema.StringAttribute{
						MarkdownDescription: "The repository, as restic's `-r` takes it: a path on the storage " +
							"box, or a URL such as `sftp:backup@nas:/srv/restic`.",
						Optional: true,
					},
					"password_file": schema.StringAttribute{
						MarkdownDescription: "The absolute path, on the storage box, of a file holding the " +
							"repository's password. The plan fails if the storage box cannot read it.",
						Optional: true,
					},
				},
			},
		},
	}
}

func (r *backupScheduleResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unable to configure drover_backup_schedule",
			fmt.Sprintf("Unexpected provider data %T: this is a bug in the provider.", req.ProviderData))
		return
	}
	r.data = data
}

// ValidateConfig refuses what drover-target would refuse and can be known
// from the configuration alone: a bad cron expression, a missing keep or
// one that keeps nothing, a restic block without both settings.
func (r *backupScheduleResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var m backupScheduleModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	keep, keepKnown := m.keep()
	if m.Keep == nil {
		resp.Diagnostics.AddAttributeError(path.Root("keep"), "Missing keep block",
			"A backup schedule needs a keep block saying which runs to keep, such as keep { last = 7 }: "+
				"without one every run would be pruned.")
	}
	cronErr, keepErr := cluster.CheckSchedule(m.Schedule.ValueString(), keep)
	if known(m.Schedule) && cronErr != nil {
		resp.Diagnostics.AddAttributeError(path.Root("schedule"), "Invalid schedule", cronErr.Error())
	}
	if m.Keep != nil && keepKnown && keepErr != nil {
		resp.Diagnostics.AddAttributeError(path.Root("keep"), "Invalid keep", keepErr.Error())
	}
	if rs := m.Restic; rs != nil {
		for _, a := range []struct {
			name string
			v    types.String
		}{{"repository", rs.Repository}, {"password_file", rs.PasswordFile}} {
			if a.v.IsNull() {
				resp.Diagnostics.AddAttributeError(path.Root("restic").AtName(a.name), "Missing restic setting",
					fmt.Sprintf("The restic block needs %s as well as %s.", a.name, map[string]string{"repository": "password_file", "password_file": "repository"}[a.name]))
			}
		}
	}
}

// keep is the keep block as the target takes it; known is false while any
// count is unknown.
func (m backupScheduleModel) keep() (k wire.Keep, known bool) {
	if m.Keep == nil {
		return k, true
	}
	known = true
	for _, c := range []struct {
		v   types.Int64
		dst *int
	}{{m.Keep.Last, &k.Last}, {m.Keep.Daily, &k.Daily}, {m.Keep.Weekly, &k.Weekly}, {m.Keep.Monthly, &k.Monthly}} {
		known = known && !c.v.IsUnknown()
		*c.dst = int(c.v.ValueInt64())
	}
	return k, known
}

func (m backupScheduleModel) restic() *wire.Restic {
	if m.Restic == nil {
		return nil
	}
	return &wire.Restic{Repository: m.Restic.Repository.ValueString(), PasswordFile: m.Restic.PasswordFile.ValueString()}
}

// ModifyPlan asks the storage box what it can say before anything is
// done: whether it can read the restic password file (and open the
// repository with it), and, for a VM that exists, its disks, so that a
// disk added to the VM shows as a change of the schedule.
func (r *backupScheduleResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if r.data == nil || req.Plan.Raw.IsNull() {
		return // not configured, or a destroy
	}
	var plan backupScheduleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || r.data.storage == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, planLookupTimeout)
	defer cancel()
	if rs := plan.Restic; rs != nil && known(rs.Repository) && known(rs.PasswordFile) && !rs.Repository.IsNull() && !rs.PasswordFile.IsNull() {
		if _, err := r.data.storage.CheckRestic(ctx, *plan.restic()); err != nil {
			var apiErr *storage.Error
			if errors.As(err, &apiErr) && apiErr.StatusCode == 400 {
				resp.Diagnostics.AddAttributeError(path.Root("restic").AtName("password_file"), "Unable to use the restic repository", err.Error())
			} else {
				tflog.Warn(ctx, "could not check the restic repository at plan time", map[string]any{"error": err.Error()})
			}
		}
	}
	if !known(plan.VMID) || plan.VMID.IsNull() {
		return
	}
	vm, err := r.data.cluster.ScheduleSource(ctx, plan.VMID.ValueString())
	if err != nil {
		if req.State.Raw.IsNull() { // a new schedule for a VM that cannot be backed up
			resp.Diagnostics.AddAttributeError(path.Root("vm_id"), "Unable to schedule backups of VM", err.Error())
		}
		return // an existing schedule whose VM is away keeps its volumes
	}
	if !req.State.Raw.IsNull() {
		var state backupScheduleModel
		resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
		if slices.Equal(listStrings(state.Volumes), vm.Volumes) && planUnchanged(plan, state) {
			return
		}
	}
	// The disks (or the settings) change: what the target answers after
	// the update is known only then.
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("volumes"), vm.Volumes)...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("next_run"), types.StringUnknown())...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("last_run"), types.ObjectUnknown(lastRunAttrTypes))...)
}

// planUnchanged reports whether the settings the user writes are the same
// in plan and state.
func planUnchanged(plan, state backupScheduleModel) bool {
	pk, _ := plan.keep()
	sk, _ := state.keep()
	pr, sr := plan.restic(), state.restic()
	return plan.Schedule.Equal(state.Schedule) && pk == sk && (pr == nil) == (sr == nil) && (pr == nil || *pr == *sr)
}

func listStrings(l types.List) []string {
	if l.IsNull() || l.IsUnknown() {
		return nil
	}
	out := make([]string, 0, len(l.Elements()))
	for _, e := range l.Elements() {
		if s, ok := e.(types.String); ok {
			out = append(out, s.ValueString())
		}
	}
	return out
}

func (r *backupScheduleResource) hasStorage(diags *diag.Diagnostics) bool {
	if r.data.storage == nil {
		diags.AddError("No storage configured", cluster.ErrNoStorage.Error())
		return false
	}
	return true
}

// request is the schedule the target is asked to keep: the plan's
// settings with the VM's disks and definition as they are now.
func (r *backupScheduleResource) request(ctx context.Context, plan backupScheduleModel) (wire.ScheduleRequest, error) {
	vm, err := r.data.cluster.ScheduleSource(ctx, plan.VMID.ValueString())
	if err != nil {
		return wire.ScheduleRequest{}, err
	}
	keep, _ := plan.keep()
	return cluster.ScheduleRequest(plan.VMID.ValueString(), vm, plan.Schedule.ValueString(), keep, plan.restic()), nil
}

func (r *backupScheduleResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan backupScheduleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	sreq, err := r.request(ctx, plan)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("vm_id"), "Unable to create backup schedule", err.Error())
		return
	}
	s, err := r.data.storage.CreateSchedule(ctx, sreq)
	if err != nil {
		resp.Diagnostics.AddError("Unable to create backup schedule", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, scheduleState(s, plan))...)
}

// scheduleState is the state of a schedule as the target has it; where a
// keep count is 0 the prior value (null, or an explicit 0) stays.
func scheduleState(s wire.Schedule, prior backupScheduleModel) backupScheduleModel {
	out := backupScheduleModel{
		ID:       types.StringValue(s.ID),
		VMID:     types.StringValue(s.VM),
		Schedule: types.StringValue(s.Schedule),
		Volumes:  types.ListValueMust(types.StringType, stringValues(s.Volumes)),
		NextRun:  types.StringValue(""),
		LastRun:  types.ObjectNull(lastRunAttrTypes),
	}
	if prior.Schedule.ValueString() != "" && normalCron(prior.Schedule.ValueString()) == s.Schedule {
		out.Schedule = prior.Schedule // the user's spacing
	}
	count := func(n int, prior types.Int64) types.Int64 {
		if n == 0 && (prior.IsNull() || prior.IsUnknown()) {
			return types.Int64Null()
		}
		return types.Int64Value(int64(n))
	}
	var pk keepModel
	if prior.Keep != nil {
		pk = *prior.Keep
	} else {
		pk = keepModel{Last: types.Int64Null(), Daily: types.Int64Null(), Weekly: types.Int64Null(), Monthly: types.Int64Null()}
	}
	out.Keep = &keepModel{Last: count(s.Keep.Last, pk.Last), Daily: count(s.Keep.Daily, pk.Daily), Weekly: count(s.Keep.Weekly, pk.Weekly), Monthly: count(s.Keep.Monthly, pk.Monthly)}
	if s.Restic != nil {
		out.Restic = &resticModel{Repository: types.StringValue(s.Restic.Repository), PasswordFile: types.StringValue(s.Restic.PasswordFile)}
	}
	if s.NextRun != nil {
		out.NextRun = types.StringValue(s.NextRun.UTC().Format(time.RFC3339))
	}
	if l := s.LastRun; l != nil {
		out.LastRun = types.ObjectValueMust(lastRunAttrTypes, map[string]attr.Value{
			"at": types.StringValue(l.At.UTC().Format(time.RFC3339Nano)), "status": types.StringValue(l.Status),
			"set_id": types.StringValue(l.SetID), "error": types.StringValue(l.Error),
		})
	}
	return out
}

// normalCron is a cron expression as the target keeps it: its fields
// separated by single spaces.
func normalCron(s string) string { return strings.Join(strings.Fields(s), " ") }

func stringValues(ss []string) []attr.Value {
	out := make([]attr.Value, len(ss))
	for i, s := range ss {
		out[i] = types.StringValue(s)
	}
	return out
}

func (r *backupScheduleResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state backupScheduleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	s, err := r.data.storage.GetSchedule(ctx, state.ID.ValueString())
	if errors.Is(err, storage.ErrNotFound) {
		tflog.Warn(ctx, "backup schedule is gone from the target; removing it from the state", map[string]any{"schedule": state.ID.ValueString()})
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to read backup schedule", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, scheduleState(s, state))...)
}

func (r *backupScheduleResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state backupScheduleModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	sreq, err := r.request(ctx, plan)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("vm_id"), "Unable to update backup schedule", err.Error())
		return
	}
	s, err := r.data.storage.ReplaceSchedule(ctx, state.ID.ValueString(), sreq)
	if err != nil {
		resp.Diagnostics.AddError("Unable to update backup schedule", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, scheduleState(s, plan))...)
}

// Delete stops the schedule; the backups it made stay on the target.
func (r *backupScheduleResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state backupScheduleModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || !r.hasStorage(&resp.Diagnostics) {
		return
	}
	if err := r.data.storage.DeleteSchedule(ctx, state.ID.ValueString()); err != nil && !errors.Is(err, storage.ErrNotFound) {
		resp.Diagnostics.AddError("Unable to delete backup schedule", err.Error())
	}
}

func (r *backupScheduleResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("id"), req, resp)
}
