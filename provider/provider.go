package provider

import (
	"context"
	"regexp"

	"github.com/hashicorp/terraform-plugin-framework-validators/float64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/objectvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
)

var _ provider.Provider = (*droverProvider)(nil)

// Hypervisors is what the provider needs of the hypervisor hosts, by URI.
// *hypervisor.Pool is the real one.
type Hypervisors interface {
	Host(ctx context.Context, uri string) (hypervisor.Host, error)
}

// diskResizer tells the running VMs on the hosts (name → URI) that have the
// LUN iqn/lun as a disk that it is now sizeMiB big. *hypervisor.Pool is the
// real one.
type diskResizer interface {
	ResizeDisks(ctx context.Context, hosts map[string]string, iqn string, lun uint64, sizeMiB int64) ([]hypervisor.Resized, error)
}

var _ diskResizer = (*hypervisor.Pool)(nil)

// New returns the provider factory that providerserver serves. Every provider
// instance of the process shares hosts, whose connections outlive a single
// instance; the caller closes it when serving ends.
func New(version string, hosts Hypervisors) func() provider.Provider {
	return func() provider.Provider {
		return &droverProvider{version: version, hosts: hosts}
	}
}

type droverProvider struct {
	version string
	hosts   Hypervisors
}

// providerData is what Configure hands to resources and data sources.
type providerData struct {
	config config
	hosts  Hypervisors
	// storage is the client of drover-target; nil when the provider block
	// has no storage.
	storage *storage.Client
	// resizer tells running VMs that a volume grew; nil when the hosts'
	// hypervisor cannot.
	resizer diskResizer
	// cluster is what the configured provider's VMs and backups run
	// through: the hosts, the storage box and the placement decisions
	// under way (one at a time, each booked until it is carried out).
	cluster *cluster.Cluster
}

// providerModel is the provider block as Terraform sends it.
type providerModel struct {
	Hosts     types.List   `tfsdk:"host"`      // of hostModel, one per host block
	Storage   types.Object `tfsdk:"storage"`   // storageModel; null without the block
	Placement types.Object `tfsdk:"placement"` // placementSettingsModel; null without the block
}

type placementSettingsModel struct {
	Strategy          types.String `tfsdk:"strategy"`
	MigrationsPerHost types.Int64  `tfsdk:"migrations_per_host"`
	StrictSpread      types.Bool   `tfsdk:"strict_spread"`
}

type hostModel struct {
	Name              types.String  `tfsdk:"name"`
	URI               types.String  `tfsdk:"uri"`
	Maintenance       types.Bool    `tfsdk:"maintenance"`
	Failed            types.Bool    `tfsdk:"failed"`
	MigrationAddress  types.String  `tfsdk:"migration_address"`
	ReservedMemoryMiB types.Int64   `tfsdk:"reserved_memory_mib"`
	CPUOvercommit     types.Float64 `tfsdk:"cpu_overcommit"`
	MemoryOvercommit  types.Float64 `tfsdk:"memory_overcommit"`
	DomainType        types.String  `tfsdk:"domain_type"`
}

type storageModel struct {
	Endpoint types.String `tfsdk:"endpoint"`
	Token    types.String `tfsdk:"token"`
	Portal   types.String `tfsdk:"portal"`
	CAFile   types.String `tfsdk:"ca_file"`
}

func (p *droverProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "drover"
	resp.Version = p.version
}

var hostNameRegexp = regexp.MustCompile(`^[a-z0-9-]+$`)

// The provider's settings are blocks, not object attributes: Terraform
// drops an object attribute's unknown keys without a word
// (terraform-plugin-framework #1210, terraform #33570), so a misspelled
// `maintanance = true` would leave a host in service. A block's unknown
// argument is an error.
func (p *droverProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "Drover turns a few libvirt/QEMU hosts and one storage box " +
			"(drover-target) into a small virtualization cluster: it places VMs on hosts " +
			"and moves them between hosts by live migration when placement has to change.",
		Blocks: map[string]schema.Block{
			"host":      hostBlock(),
			"storage":   storageBlock(),
			"placement": placementBlock(),
		},
	}
}

// hostBlock is the repeated host block: at least one, names unique.
func hostBlock() schema.Block {
	return schema.ListNestedBlock{
		MarkdownDescription: "A hypervisor host; one block per host, at least one. Names are unique.",
		Validators:          []validator.List{hostBlocks{}},
		NestedObject: schema.NestedBlockObject{
			Attributes: map[string]schema.Attribute{
				"name": schema.StringAttribute{
					MarkdownDescription: "The host's name, unique among the host blocks: lowercase " +
						"letters, digits and `-`. VMs' `placement` and `drover_hosts` refer to it.",
					Required: true,
					Validators: []validator.String{stringvalidator.RegexMatches(hostNameRegexp,
						"must be a host name of lowercase letters, digits and -")},
				},
				"uri": schema.StringAttribute{
					MarkdownDescription: "The libvirt connection URI of the host, " +
						"such as `qemu+ssh://root@alpha/system` or `qemu+tcp://127.0.0.2/system`.",
					Required:   true,
					Validators: []validator.String{libvirtURI{}},
				},
				"maintenance": schema.BoolAttribute{
					MarkdownDescription: "When `true`, the host runs no Drover VM after an " +
						"apply: its VMs move to other hosts. Defaults to `false`.",
					Optional: true,
				},
				"failed": schema.BoolAttribute{
					MarkdownDescription: "Declares the host dead or cut off: the apply fences it at " +
						"the storage box (no session of it is left, its logins are refused), then " +
						"restarts its VMs on the other hosts, cold, from their shared disks. Set it " +
						"back to `false` once the host answers again: the next apply removes its stale " +
						"copies of VMs that run elsewhere, then lifts the fence. Needs the `storage` " +
						"block. Defaults to `false`. For a host that answers, `maintenance` moves its " +
						"VMs live instead. See the guide \"When a host fails\".",
					Optional: true,
				},
				"migration_address": schema.StringAttribute{
					MarkdownDescription: "The address (host name or IP, no port) other hosts send " +
						"this host a VM's memory to when a VM moves here, and where this host listens " +
						"for it. Set it when the host's name does not resolve to the right network " +
						"(on Debian it often resolves to 127.0.1.1). Defaults to libvirt's choice, the " +
						"host's name.",
					Optional:   true,
					Validators: []validator.String{migrationAddress{}},
				},
				"reserved_memory_mib": schema.Int64Attribute{
					MarkdownDescription: "Memory, in MiB, kept free for the host itself " +
						"and never given to VMs. Defaults to `512`.",
					Optional:   true,
					Validators: []validator.Int64{int64validator.AtLeast(0)},
				},
				"cpu_overcommit": schema.Float64Attribute{
					MarkdownDescription: "How many vCPUs the host may run per physical " +
						"CPU; at least 1. Defaults to `4`.",
					Optional:   true,
					Validators: []validator.Float64{float64validator.AtLeast(1)},
				},
				"memory_overcommit": schema.Float64Attribute{
					MarkdownDescription: "How much memory the host may promise to VMs, " +
						"as a multiple of its memory less the reserve; at least 1. " +
						"Defaults to `1.0` (no overcommit).",
					Optional:   true,
					Validators: []validator.Float64{float64validator.AtLeast(1)},
				},
				"domain_type": schema.StringAttribute{
					MarkdownDescription: "The libvirt domain type of the host's VMs: " +
						"`kvm` (hardware acceleration) or `qemu` (software emulation). " +
						"Defaults to `kvm` when the host offers it, else `qemu`.",
					Optional:   true,
					Validators: []validator.String{stringvalidator.OneOf("kvm", "qemu")},
				},
			},
		},
	}
}

// storageBlock is the storage box. Its endpoint and portal are checked by
// the block's validator rather than marked required: a required attribute
// would make the whole block required (terraform-plugin-framework #740),
// and data sources about hosts work without storage.
func storageBlock() schema.Block {
	return schema.SingleNestedBlock{
		MarkdownDescription: "The storage box (drover-target) that holds the VMs' " +
			"volumes. Needed by VMs and volumes; data sources about hosts work without it.",
		Validators: []validator.Object{objectvalidator.AlsoRequires(
			path.MatchRelative().AtName("endpoint"), path.MatchRelative().AtName("portal"))},
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "Required in the block: the URL of drover-target's management " +
					"API, such as `https://storage.lan:3261`.",
				Optional:   true,
				Validators: []validator.String{httpURL{}},
			},
			"token": schema.StringAttribute{
				MarkdownDescription: "The bearer token of the management API. " +
					"Defaults to the environment variable `DROVER_STORAGE_TOKEN`.",
				Optional:  true,
				Sensitive: true,
			},
			"portal": schema.StringAttribute{
				MarkdownDescription: "Required in the block: the iSCSI portal as the hosts reach it, " +
					"`host:port`, such as `storage.lan:3260`.",
				Optional:   true,
				Validators: []validator.String{hostPort{}},
			},
			"ca_file": schema.StringAttribute{
				MarkdownDescription: "A PEM file (on the machine running Terraform) with the CA " +
					"that signed drover-target's TLS certificate; only that CA is then trusted for " +
					"an `https` endpoint. Defaults to the system's trusted CAs.",
				Optional: true,
			},
		},
	}
}

// placementBlock is how VMs are placed and moved.
func placementBlock() schema.Block {
	return schema.SingleNestedBlock{
		MarkdownDescription: "How VMs are placed and moved.",
		Attributes: map[string]schema.Attribute{
			"strategy": schema.StringAttribute{
				MarkdownDescription: "Where a new or displaced VM goes among the hosts " +
					"that can take it: `spread` (the host with the least committed share) " +
					"or `pack` (the fullest host that still fits, keeping others empty). " +
					"Defaults to `spread`.",
				Optional:   true,
				Validators: []validator.String{stringvalidator.OneOf("spread", "pack")},
			},
			"migrations_per_host": schema.Int64Attribute{
				MarkdownDescription: "How many moves a host takes part in at once, as " +
					"source or destination; an evacuation moves this many VMs in parallel. " +
					"From 1 to 16. Defaults to `2`.",
				Optional:   true,
				Validators: []validator.Int64{int64validator.Between(1, 16)},
			},
			"strict_spread": schema.BoolAttribute{
				MarkdownDescription: "When `true`, two VMs of one `spread_group` never share a " +
					"host, not even while hosts are out of service: a plan that would need it fails " +
					"before anything moves. Defaults to `false`: while too few hosts are in service " +
					"(in maintenance or failed), a group shares hosts, as evenly as possible, with one " +
					"warning per group naming its VMs and the hosts they share, and spreads again by " +
					"itself in the first apply after the hosts return.",
				Optional: true,
			},
		},
	}
}

// Configure turns the provider block into a config and hands it, with the
// hosts and a storage client, to resources and data sources. It opens no
// connection: hosts and the target are reached when something needs them,
// so a dead host cannot stall a plan that does not touch it.
func (p *droverProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var model providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &model)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cfg, diags := model.config(ctx)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	data := &providerData{config: cfg, hosts: p.hosts}
	var st cluster.Storage
	if cfg.Storage != nil {
		var opts []storage.Option
		if cfg.Storage.CAFile != "" {
			opts = append(opts, storage.WithCAFile(cfg.Storage.CAFile))
		}
		client, err := storage.New(cfg.Storage.Endpoint, cfg.Storage.Token, opts...)
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("storage"), "Unable to configure storage", err.Error())
			return
		}
		data.storage = client
		st = cluster.StorageOf(client)
	}
	data.cluster = cluster.New(cfg.cluster(), cfg.volumeAccess(), cluster.HostsOf(p.hosts), st, tfLogger{})
	data.resizer, _ = p.hosts.(diskResizer)
	resp.DataSourceData = data
	resp.ResourceData = data
}

func (p *droverProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{NewVolumeResource, NewVMResource, NewBackupResource, NewBackupScheduleResource}
}

func (p *droverProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{NewHostsDataSource, NewVolumeDataSource, NewBackupsDataSource}
}
