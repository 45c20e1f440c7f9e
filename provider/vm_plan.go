package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/placement"
	"github.com/drover/terraform-provider-drover/internal/storage"
)

// ModifyPlan fills in what the plan can know (max_memory_mib's default, the
// host of a pinned new VM) and fails early on what apply could not do: an
// unknown host in a pin, memory no host can hold, a volume that does not
// exist, a restart that allow_restart does not allow.
func (r *vmResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() || r.cluster == nil {
		return // destroy, or the provider is not configured yet
	}
	var plan, config vmModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	var prior *vmModel
	if !req.State.Raw.IsNull() {
		prior = &vmModel{}
		resp.Diagnostics.Append(req.State.Get(ctx, prior)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	if config.MaxMemoryMiB.IsNull() {
		plan.MaxMemoryMiB = plan.MemoryMiB
	}
	want, diags := plan.spec(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}

	resp.Diagnostics.Append(r.checkSettings(plan, want)...)
	resp.Diagnostics.Append(r.checkVolumes(ctx, plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if prior == nil {
		resp.Diagnostics.Append(r.planNew(ctx, &plan, want)...)
	} else {
		unchanged := req.Plan.Raw.Equal(req.State.Raw)
		resp.Diagnostics.Append(r.planChange(ctx, *prior, &plan, want, unchanged)...)
	}
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.Plan.Set(ctx, plan)...)
}

// checkSettings checks what needs no host: the pin names a configured host,
// the memory settings agree, no volume is listed twice.
func (r *vmResource) checkSettings(plan vmModel, want cluster.VMSpec) diag.Diagnostics {
	var diags diag.Diagnostics
	if pin := want.VM.Placement.Host; pin != "" {
		if _, ok := r.cfg.cluster().Host(pin); !ok {
			diags.AddAttributeError(path.Root("placement").AtName("host"), "Unknown host",
				fmt.Sprintf("placement.host = %q names no host of the provider block; the hosts are %s.", pin, r.hostNames()))
		}
	}
	for _, h := range want.VM.Placement.PreferredHosts {
		if _, ok := r.cfg.cluster().Host(h); !ok && h != "" {
			diags.AddAttributeError(path.Root("placement").AtName("preferred_hosts"), "Unknown host",
				fmt.Sprintf("placement.preferred_hosts names %q, which is no host of the provider block; the hosts are %s.", h, r.hostNames()))
		}
	}
	if known(plan.MemoryMiB) && known(plan.MaxMemoryMiB) && want.VM.MaxMemoryMiB < want.VM.MemoryMiB {
		diags.AddAttributeError(path.Root("max_memory_mib"), "Maximum memory below memory",
			fmt.Sprintf("max_memory_mib (%d) must be at least memory_mib (%d).", want.VM.MaxMemoryMiB, want.VM.MemoryMiB))
	}
	seen := map[string]bool{}
	for i, d := range want.VM.Disks {
		if d.Volume != "" && seen[d.Volume] {
			diags.AddAttributeError(path.Root("disks").AtListIndex(i).AtName("volume_id"), "Volume listed twice",
				fmt.Sprintf("Volume %q is already disk %d of this VM: a volume can be attached once.",
					d.Volume, slices.Index(cluster.Volumes(want.VM.Disks), d.Volume)+1))
		}
		seen[d.Volume] = true
	}
	if s := want.Seed; s != nil && strings.TrimSpace(s.UserData) == "" && strings.TrimSpace(s.MetaData) == "" &&
		known(plan.CloudInit) {
		diags.AddAttributeError(path.Root("cloud_init"), "Empty cloud_init",
			"cloud_init needs user_data or meta_data (or both).")
	}
	if (len(want.VM.Disks) > 0 || want.Seed != nil) && r.storage == nil {
		diags.AddError("No storage", "The provider block has no storage: VMs with disks or cloud_init need it.")
	}
	return diags
}

// checkVolumes asks the storage box whether every known volume of the
// plan exists.
func (r *vmResource) checkVolumes(ctx context.Context, plan vmModel) diag.Diagnostics {
	var diags diag.Diagnostics
	if r.storage == nil || !known(plan.Disks) {
		return diags
	}
	var disks []vmDiskModel
	diags.Append(plan.Disks.ElementsAs(ctx, &disks, false)...)
	for i, d := range disks {
		if !known(d.VolumeID) {
			continue
		}
		_, err := r.storage.GetVolume(ctx, d.VolumeID.ValueString())
		switch {
		case errors.Is(err, storage.ErrNotFound):
			// A drover_volume created by this same apply has an id known
			// only after apply, so a known id that is missing is a mistake.
			diags.AddAttributeError(path.Root("disks").AtListIndex(i).AtName("volume_id"), "Volume not found",
				fmt.Sprintf("Volume %q does not exist on the storage box (%s). Refer to a drover_volume's id "+
					"(drover_volume.NAME.id) or create the volume first.", d.VolumeID.ValueString(), r.cfg.Storage.Endpoint))
		case err != nil:
			diags.AddAttributeError(path.Root("disks").AtListIndex(i).AtName("volume_id"), "Unable to read volume",
				fmt.Sprintf("Volume %q: %v", d.VolumeID.ValueString(), err))
		}
	}
	return diags
}

// planNew checks that some host can take the new VM, and says where it goes
// when it is pinned; otherwise its host is known after apply, when the
// placement engine has the cluster as it is then.
func (r *vmResource) planNew(ctx context.Context, plan *vmModel, want cluster.VMSpec) diag.Diagnostics {
	var diags diag.Diagnostics
	if !known(plan.MemoryMiB) || !known(plan.MaxMemoryMiB) || !known(plan.VCPUs) || !known(plan.Placement) {
		return diags
	}
	planned, err := r.cluster.PlanNew(ctx, want.VM)
	if err != nil {
		diags.Append(planError(want.VM.Name, err, "")...)
		return diags
	}
	diags.Append(warnings(planned.Warnings)...)
	if pin := want.VM.Placement.Host; pin != "" {
		plan.Host = types.StringValue(pin)
	}
	return diags
}

// planError is the diagnostic of a cluster's plan-time error about the VM
// named vm; more ends the detail of a placement error.
func planError(vm string, err error, more string) diag.Diagnostics {
	var (
		diags    diag.Diagnostics
		tooLarge *cluster.TooLargeError
		twice    *cluster.DefinedTwiceError
		full     *cluster.PlanFullError
	)
	switch {
	case errors.As(err, &tooLarge):
		diags.AddAttributeError(path.Root("memory_mib"), "Memory too large", fmt.Sprintf("VM %s: %s.", vm, err))
	case errors.As(err, &twice):
		diags.AddError("Unable to plan VM", err.Error())
	case errors.As(err, &full):
		diags.AddError("The VMs of this plan do not fit", fmt.Sprintf("VM %s: %s.", vm, err))
	default:
		diags.AddError("Unable to place VM", fmt.Sprintf("VM %s: %s.%s", vm, err, more))
	}
	return diags
}

// planChange plans the whole cluster with the VM's new settings: when the
// VM must move, its host becomes the pin (known) or unknown (placement
// chooses at apply time) and a warning says why and where; when the cluster
// cannot meet the invariants, the plan fails before anything moves. It also
// checks changes that need a restart against allow_restart.
func (r *vmResource) planChange(ctx context.Context, prior vmModel, plan *vmModel, want cluster.VMSpec, unchanged bool) diag.Diagnostics {
	var diags diag.Diagnostics
	had, d := prior.spec(ctx)
	diags.Append(d...)
	if diags.HasError() {
		return diags
	}
	if known(plan.MaxMemoryMiB) && known(plan.VCPUs) && known(plan.Placement) {
		diags.Append(r.planMove(ctx, prior, plan, want, had, unchanged)...)
		if diags.HasError() {
			return diags
		}
	}
	// A stopped VM, or one the plan stops, takes every change without a
	// restart.
	if !prior.Running.ValueBool() || !known(plan.Running) || !plan.Running.ValueBool() {
		return diags
	}
	if !known(plan.VCPUs) || !known(plan.MaxMemoryMiB) || !known(plan.Disks) || !known(plan.CloudInit) {
		return diags
	}
	reasons := cluster.RestartReasons(had, want)
	if len(reasons) == 0 {
		return diags
	}
	if !plan.AllowRestart.ValueBool() {
		diags.AddError("VM would need a restart",
			fmt.Sprintf("VM %s is running, and these changes need a restart: %s. allow_restart is false, so "+
				"Drover does not restart it. Set allow_restart = true to let apply restart it (graceful "+
				"shutdown, then start), or leave these settings as they are.", want.VM.Name, strings.Join(reasons, "; ")))
		return diags
	}
	diags.AddWarning("VM will restart",
		fmt.Sprintf("VM %s will be shut down gracefully and started again, for: %s.", want.VM.Name, strings.Join(reasons, "; ")))
	return diags
}

// planMove decides, with the whole cluster, whether the existing VM moves:
// because its host is in maintenance or declared failed, for its pin, its
// size, its spread group or failback; or whether the apply removes its
// stale copies on a host that is back. A VM on a host that does not answer
// keeps its state, and a change to it fails the plan.
func (r *vmResource) planMove(ctx context.Context, prior vmModel, plan *vmModel, want, had cluster.VMSpec, unchanged bool) diag.Diagnostics {
	var diags diag.Diagnostics
	last := prior.Host.ValueString()
	mv, err := r.cluster.PlanChange(ctx, want.VM, had.VM, last)
	if err != nil {
		return planError(want.VM.Name, err, " Nothing was moved.")
	}
	diags.Append(warnings(mv.Warnings)...)
	if !mv.Found {
		if hc, ok := r.cfg.cluster().Host(last); ok && !hc.Failed && !unchanged && r.cluster.HostAnswers(ctx, last) != nil {
			diags.AddError("VM is on a host that does not answer",
				fmt.Sprintf("VM %s was last seen on host %s, which does not answer, so its change cannot be made. "+
					"Wait until %s answers again and plan again, or, if it is dead or cut off, declare it failed "+
					"(failed = true in its host block): the host is then fenced at the storage box and its VMs "+
					"restart on other hosts.", want.VM.Name, last, last))
		}
		return diags
	}
	if len(mv.Stale) > 0 {
		diags.AddWarning(fmt.Sprintf("VM %s: stale copies are removed", want.VM.Name),
			fmt.Sprintf("VM %s runs on %s; its copy on %s, left from when that host was declared failed, is "+
				"destroyed and undefined by the apply, and only then is the host's fence at the storage box lifted.",
				want.VM.Name, mv.From, strings.Join(mv.Stale, " and ")))
		if !mv.Moves() {
			plan.Host = types.StringUnknown()
			return diags
		}
	}
	if !mv.Moves() {
		return diags
	}
	if pin := want.VM.Placement.Host; pin != "" && pin == mv.Host {
		plan.Host = types.StringValue(pin)
	} else {
		plan.Host = types.StringUnknown()
	}
	title := fmt.Sprintf("VM %s will move", want.VM.Name)
	if mv.Reason == placement.HostFailed {
		title = fmt.Sprintf("VM %s restarts on another host", want.VM.Name)
	}
	diags.AddWarning(title, mv.Warning(want.VM.Placement.SpreadGroup))
	return diags
}

// warnings are the cluster's plan warnings as diagnostics.
func warnings(ws []cluster.Warning) diag.Diagnostics {
	var diags diag.Diagnostics
	for _, w := range ws {
		diags.AddWarning(w.Summary, w.Detail)
	}
	return diags
}

func (r *vmResource) hostNames() string { return strings.Join(r.cfg.cluster().HostNames(), ", ") }

// knowable is any Terraform value.
type knowable interface{ IsUnknown() bool }

func known(v knowable) bool { return !v.IsUnknown() }

// stableMAC keeps the MAC address of a network interface that Drover made up,
// as long as the interface at its place in the list stays on the same
// network or bridge.
type stableMAC struct{}

func (stableMAC) Description(context.Context) string {
	return "keeps the MAC address made up for an interface that stays on its network or bridge"
}

func (m stableMAC) MarkdownDescription(ctx context.Context) string { return m.Description(ctx) }

func (stableMAC) PlanModifyString(ctx context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if !req.ConfigValue.IsNull() || req.StateValue.IsNull() || !req.PlanValue.IsUnknown() {
		return
	}
	same := true
	for _, name := range []string{"network", "bridge"} {
		var planned, had types.String
		at := req.Path.ParentPath().AtName(name)
		if d := req.Plan.GetAttribute(ctx, at, &planned); d.HasError() {
			return
		}
		if d := req.State.GetAttribute(ctx, at, &had); d.HasError() {
			return
		}
		same = same && planned.Equal(had)
	}
	if same {
		resp.PlanValue = req.StateValue
	}
}
