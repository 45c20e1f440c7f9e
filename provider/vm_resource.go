package provider

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

var (
	_ resource.Resource                = (*vmResource)(nil)
	_ resource.ResourceWithConfigure   = (*vmResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*vmResource)(nil)
	_ resource.ResourceWithImportState = (*vmResource)(nil)
)

// vmVolumes is what drover_vm's plan asks the storage box. *storage.Client
// is the real one.
type vmVolumes interface {
	GetVolume(ctx context.Context, name string) (wire.Volume, error)
}

var _ vmVolumes = (*storage.Client)(nil)

// Default timeouts of drover_vm's operations.
const (
	vmCreateTimeout = 10 * time.Minute
	vmReadTimeout   = 2 * time.Minute
	vmUpdateTimeout = 10 * time.Minute
	vmDeleteTimeout = 5 * time.Minute
	// maxShutdownGrace bounds how long a guest is given to power off when
	// asked, before it is powered off hard; the operation's timeout bounds
	// it too (half of it at most).
	maxShutdownGrace = time.Minute
)

// NewVMResource returns the drover_vm resource.
func NewVMResource() resource.Resource { return &vmResource{} }

type vmResource struct {
	cfg     config
	cluster *cluster.Cluster
	storage vmVolumes // nil when the provider block has no storage
}

type vmModel struct {
	ID                types.String   `tfsdk:"id"`
	Name              types.String   `tfsdk:"name"`
	Host              types.String   `tfsdk:"host"`
	VCPUs             types.Int64    `tfsdk:"vcpus"`
	MemoryMiB         types.Int64    `tfsdk:"memory_mib"`
	MaxMemoryMiB      types.Int64    `tfsdk:"max_memory_mib"`
	Disks             types.List     `tfsdk:"disks"`              // of vmDiskModel
	NetworkInterfaces types.List     `tfsdk:"network_interfaces"` // of vmNICModel
	CloudInit         types.Object   `tfsdk:"cloud_init"`         // vmCloudInitModel
	Kernel            types.String   `tfsdk:"kernel"`
	Initrd            types.String   `tfsdk:"initrd"`
	Cmdline           types.String   `tfsdk:"cmdline"`
	Firmware          types.String   `tfsdk:"firmware"`
	Running           types.Bool     `tfsdk:"running"`
	AllowRestart      types.Bool     `tfsdk:"allow_restart"`
	Placement         types.Object   `tfsdk:"placement"` // vmPlacementModel
	Timeouts          timeouts.Value `tfsdk:"timeouts"`
}

func (r *vmResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_vm"
}

// A VM's name is a libvirt domain name and, with "-seed", the name of its
// cloud-init volume on the storage box (at most 63 of [a-z0-9-]).
var vmNameRegexp = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,56}[a-z0-9])?$`)

func (r *vmResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "A virtual machine on one of the provider's hosts, with its disks on the " +
			"storage box (iSCSI, opened by QEMU itself), so that it can run on any host. Drover picks " +
			"the host (see `placement`), and the truth about the VM lives in libvirt: Drover's own " +
			"facts are kept in the domain's metadata, so refresh and import work from any host.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				MarkdownDescription: "The libvirt domain UUID.",
				Computed:            true,
				PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				MarkdownDescription: "The VM's name, also its libvirt domain name: 1 to 58 lowercase " +
					"letters, digits and `-`, not starting or ending with `-`. Changing it replaces the VM.",
				Required:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
				Validators: []validator.String{stringvalidator.RegexMatches(vmNameRegexp,
					"must be 1 to 58 lowercase letters, digits and -, not starting or ending with -")},
			},
			"host": schema.StringAttribute{
				MarkdownDescription: "The host the VM runs on now. A new VM's host is known at plan " +
					"time when it is pinned (`placement.host`), else after apply. An existing VM stays " +
					"where it is unless it must move (its host enters maintenance, its pin changes, it " +
					"no longer fits, or its preferred host is back): then the plan warns and shows the " +
					"pinned host, or \"known after apply\" when placement chooses, and apply moves it " +
					"(live migration when it runs).",
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"vcpus": schema.Int64Attribute{
				MarkdownDescription: "Virtual CPUs. They are the VM's maximum too: changing them " +
					"restarts a running VM (see `allow_restart`).",
				Required:   true,
				Validators: []validator.Int64{int64validator.Between(1, 256)},
			},
			"memory_mib": schema.Int64Attribute{
				MarkdownDescription: "Memory in MiB. Grows and shrinks live up to `max_memory_mib`.",
				Required:            true,
				Validators:          []validator.Int64{int64validator.AtLeast(16)},
			},
			"max_memory_mib": schema.Int64Attribute{
				MarkdownDescription: "The most memory, in MiB, the VM can have without a restart; " +
					"placement reserves this much on its host. Defaults to `memory_mib`. Changing it " +
					"restarts a running VM (see `allow_restart`).",
				Optional:   true,
				Computed:   true,
				Validators: []validator.Int64{int64validator.AtLeast(16)},
			},
			"disks": schema.ListNestedAttribute{
				MarkdownDescription: "The VM's disks in order, each a volume on the storage box " +
					"(`drover_volume`); the first is the boot disk (`vda`). Disks are added and removed " +
					"live, as long as the boot disk and the order of the remaining disks stay; other " +
					"changes restart a running VM.",
				Optional: true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"volume_id": schema.StringAttribute{
						MarkdownDescription: "The `id` of a `drover_volume` (its name on the storage box).",
						Required:            true,
					},
				}},
				Validators: []validator.List{listvalidator.SizeAtLeast(1)},
			},
			"network_interfaces": schema.ListNestedAttribute{
				MarkdownDescription: "Virtio network interfaces, each on a libvirt network or a host " +
					"bridge: every host must have it. Added and removed live.",
				Optional: true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"network": schema.StringAttribute{
						MarkdownDescription: "A libvirt network, such as `default`. Set this or `bridge`.",
						Optional:            true,
						Validators: []validator.String{stringvalidator.ExactlyOneOf(
							path.MatchRelative().AtParent().AtName("bridge"))},
					},
					"bridge": schema.StringAttribute{
						MarkdownDescription: "A bridge of the host, such as `br0`. Set this or `network`.",
						Optional:            true,
					},
					"mac": schema.StringAttribute{
						MarkdownDescription: "The MAC address. Made up when not set, then kept.",
						Optional:            true,
						Computed:            true,
						PlanModifiers:       []planmodifier.String{stableMAC{}},
					},
				}},
			},
			"kernel": schema.StringAttribute{
				MarkdownDescription: "Direct kernel boot: the path of a kernel that exists on every host.",
				Optional:            true,
			},
			"initrd": schema.StringAttribute{
				MarkdownDescription: "Direct kernel boot: the path of an initramfs on every host. Needs `kernel`.",
				Optional:            true,
				Validators:          []validator.String{stringvalidator.AlsoRequires(path.MatchRoot("kernel"))},
			},
			"cmdline": schema.StringAttribute{
				MarkdownDescription: "Direct kernel boot: the kernel command line, such as `console=ttyS0`. Needs `kernel`.",
				Optional:            true,
				Validators:          []validator.String{stringvalidator.AlsoRequires(path.MatchRoot("kernel"))},
			},
			"firmware": schema.StringAttribute{
				MarkdownDescription: "`bios` (default) or `uefi`.",
				Optional:            true,
				Computed:            true,
				Default:             stringdefault.StaticString(hypervisor.FirmwareBIOS),
				Validators:          []validator.String{stringvalidator.OneOf(hypervisor.FirmwareBIOS, hypervisor.FirmwareUEFI)},
			},
			"running": schema.BoolAttribute{
				MarkdownDescription: "Whether the VM runs. `false` shuts it down (gracefully, then " +
					"hard after a grace period), `true` starts it. Defaults to `true`.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(true),
			},
			"allow_restart": schema.BoolAttribute{
				MarkdownDescription: "Whether a change that a running VM can only take by restarting " +
					"(vcpus, max_memory_mib, firmware, kernel, cloud_init, the boot disk) may restart " +
					"it. `false` (default): such a plan fails with an error naming the change. `true`: " +
					"the plan warns and apply shuts the VM down gracefully and starts it again.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
		},
		// cloud_init and placement are blocks: a misspelled key of an object
		// attribute is dropped without a word, and a VM would boot without
		// its user data or share a host with its spread group.
		Blocks: map[string]schema.Block{
			"cloud_init": schema.SingleNestedBlock{
				MarkdownDescription: "A cloud-init NoCloud seed. Drover writes it as an ISO 9660 image " +
					"to a small volume `<name>-seed` on the storage box, attached as a CD-ROM, so it " +
					"follows the VM to any host. The guest reads it at boot: changing it restarts a " +
					"running VM (see `allow_restart`).",
				Attributes: map[string]schema.Attribute{
					"user_data": schema.StringAttribute{
						MarkdownDescription: "The user-data file, such as a `#cloud-config` document.",
						Optional:            true,
					},
					"meta_data": schema.StringAttribute{
						MarkdownDescription: "The meta-data file; give it an `instance-id`.",
						Optional:            true,
					},
					"network_config": schema.StringAttribute{
						MarkdownDescription: "The network-config file (optional).",
						Optional:            true,
					},
				},
			},
			"placement": schema.SingleNestedBlock{
				MarkdownDescription: "Where the VM may run. Without a pin, a new VM goes where the " +
					"placement engine ranks best (spread over the hosts).",
				Attributes: map[string]schema.Attribute{
					"host": schema.StringAttribute{
						MarkdownDescription: "Pins the VM to this host of the provider block.",
						Optional:            true,
					},
					"preferred_hosts": schema.ListAttribute{
						MarkdownDescription: "Hosts the VM prefers, in order; where it returns to after maintenance.",
						Optional:            true,
						ElementType:         types.StringType,
					},
					"spread_group": schema.StringAttribute{
						MarkdownDescription: "No two VMs of one spread group run on the same host.",
						Optional:            true,
					},
				},
			},
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Read: true, Update: true, Delete: true}),
		},
	}
}

func (r *vmResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unable to configure drover_vm",
			fmt.Sprintf("Unexpected provider data %T: this is a bug in the provider.", req.ProviderData))
		return
	}
	if !data.cluster.Hosts().RunsVMs() {
		resp.Diagnostics.AddError("Unable to configure drover_vm",
			fmt.Sprintf("The provider's hypervisor %T cannot run VMs: this is a bug in the provider.", data.hosts))
		return
	}
	r.cfg, r.cluster = data.config, data.cluster
	if data.storage != nil {
		r.storage = data.storage
	}
}

func (r *vmResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan vmModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Create(ctx, vmCreateTimeout)
	resp.Diagnostics.Append(diags...)
	spec, diags := plan.spec(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	loc, err := r.cluster.Create(ctx, spec)
	if err != nil {
		resp.Diagnostics.AddError("Unable to create VM", err.Error())
		return
	}
	state, diags := r.readFrom(ctx, loc, plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

func (r *vmResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var prior vmModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := prior.Timeouts.Read(ctx, vmReadTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Import sets only the name; otherwise the UUID finds the VM.
	id := prior.ID.ValueString()
	if id == "" {
		id = prior.Name.ValueString()
	}
	loc, found, warning, err := r.cluster.Locate(ctx, id)
	var silent *cluster.NotAnsweredError
	if errors.As(err, &silent) && r.keepSilent(ctx, prior, resp) {
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to read VM", err.Error())
		return
	}
	if !found {
		if was := prior.Host.ValueString(); was != "" {
			if _, configured := r.cfg.cluster().Host(was); !configured {
				// Drover cannot look there: the VM may well run on.
				resp.Diagnostics.AddAttributeError(path.Root("host"), "VM is on a host that is no longer configured",
					fmt.Sprintf("VM %s was on host %s, which is not in the provider block any more, and it is on no "+
						"configured host. Drover cannot see it, and will not assume it is gone. Put host %s back in the "+
						"provider block with maintenance = true and apply, so that its VMs move to other hosts; "+
						"then remove it.", prior.Name.ValueString(), was, was))
				return
			}
		}
		resp.State.RemoveResource(ctx)
		return
	}
	if warning != "" {
		resp.Diagnostics.AddWarning("Some hosts could not be asked about VM "+prior.Name.ValueString(), warning)
	}
	vm, dom, diags := r.readManaged(ctx, loc)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	if vm.CloudInit != nil && prior.CloudInit.IsNull() {
		// After import: libvirt does not keep the seed's text, its volume does.
		prior.CloudInit, diags = r.readCloudInit(ctx, vm)
		resp.Diagnostics.Append(diags...)
		if resp.Diagnostics.HasError() {
			return
		}
	}
	state, diags := vmFromTruth(vm, dom, loc.Host, prior)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// keepSilent keeps the state of a VM last seen on a host that does not
// answer, or that is declared failed, with a warning, and tells whether it
// did: one silent host does not block the cluster.
func (r *vmResource) keepSilent(ctx context.Context, prior vmModel, resp *resource.ReadResponse) bool {
	name, last := prior.Name.ValueString(), prior.Host.ValueString()
	hc, ok := r.cfg.cluster().Host(last)
	if !ok || prior.ID.ValueString() == "" {
		return false
	}
	switch {
	case hc.Failed:
		resp.Diagnostics.AddWarning(fmt.Sprintf("VM %s is on a failed host", name),
			fmt.Sprintf("VM %s was last seen on host %s, which is declared failed and does not answer. Its state is "+
				"kept as it was; the plan restarts it on another host.", name, last))
	case r.cluster.HostAnswers(ctx, last) != nil:
		resp.Diagnostics.AddWarning(fmt.Sprintf("VM %s: host %s does not answer", name, last),
			fmt.Sprintf("VM %s was last seen on host %s, which does not answer. Its state is kept as it was; every "+
				"other VM plans as usual. A change to VM %s cannot be made until %s answers, or until it is declared "+
				"failed (failed = true in its host block), which restarts its VMs on other hosts.", name, last, name, last))
	default:
		return false
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, prior)...)
	return true
}

func (r *vmResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, prior vmModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Update(ctx, vmUpdateTimeout)
	resp.Diagnostics.Append(diags...)
	want, diags := plan.spec(ctx)
	resp.Diagnostics.Append(diags...)
	had, diags := prior.spec(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	planned := ""
	if known(plan.Host) {
		planned = plan.Host.ValueString()
	}
	loc, err := r.cluster.Update(ctx, had, want, planned, prior.Host.ValueString(), shutdownGrace(timeout))
	if err != nil {
		resp.Diagnostics.AddError("Unable to update VM", err.Error())
		// The plan's values (a move's destination, say) did not come
		// true: keep the prior state; the next refresh reads the truth.
		resp.State.Raw = req.State.Raw.Copy()
		return
	}
	state, diags := r.readFrom(ctx, loc, plan)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

func (r *vmResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var prior vmModel
	resp.Diagnostics.Append(req.State.Get(ctx, &prior)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := prior.Timeouts.Delete(ctx, vmDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	if err := r.cluster.Delete(ctx, prior.ID.ValueString(), prior.Name.ValueString(), shutdownGrace(timeout)); err != nil {
		resp.Diagnostics.AddError("Unable to delete VM", err.Error())
	}
}

// ImportState imports a VM by its name; Read finds the host it is on.
func (r *vmResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resource.ImportStatePassthroughID(ctx, path.Root("name"), req, resp)
}

// readFrom reads the VM at loc and makes its state; prior supplies what
// libvirt does not keep (see vmFromTruth).
func (r *vmResource) readFrom(ctx context.Context, loc hypervisor.Location, prior vmModel) (vmModel, diag.Diagnostics) {
	vm, dom, diags := r.readManaged(ctx, loc)
	if diags.HasError() {
		return prior, diags
	}
	return vmFromTruth(vm, dom, loc.Host, prior)
}

// readManaged reads the VM at loc, which must be Drover's.
func (r *vmResource) readManaged(ctx context.Context, loc hypervisor.Location) (hypervisor.VM, hypervisor.Domain, diag.Diagnostics) {
	var diags diag.Diagnostics
	vm, dom, err := r.cluster.ReadVM(ctx, loc)
	if err != nil {
		diags.AddError("Unable to read VM", err.Error())
	}
	return vm, dom, diags
}

// readCloudInit reads the VM's cloud_init from its seed volume.
func (r *vmResource) readCloudInit(ctx context.Context, vm hypervisor.VM) (types.Object, diag.Diagnostics) {
	var diags diag.Diagnostics
	null := types.ObjectNull(cloudInitAttrTypes)
	switch {
	case vm.CloudInit.Volume == "":
		diags.AddError("Unable to read VM", fmt.Sprintf(
			"The cloud-init CD-ROM of VM %s has no Drover volume in its metadata: it was not made by Drover.", vm.Name))
		return null, diags
	case r.storage == nil:
		diags.AddError("Unable to read VM", fmt.Sprintf("VM %s has a cloud-init seed: %v.", vm.Name, cluster.ErrNoStorage))
		return null, diags
	}
	seed, err := r.cluster.ReadSeed(ctx, vm.CloudInit.Volume)
	if err != nil {
		diags.AddError("Unable to read VM", err.Error())
		return null, diags
	}
	return cloudInitFromSeed(seed), diags
}

// shutdownGrace is how long a guest is given to power off within an
// operation that may take timeout.
func shutdownGrace(timeout time.Duration) time.Duration {
	return min(maxShutdownGrace, timeout/2)
}
