package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"
)

var (
	_ datasource.DataSource              = (*hostsDataSource)(nil)
	_ datasource.DataSourceWithConfigure = (*hostsDataSource)(nil)
)

// NewHostsDataSource returns the drover_hosts data source.
func NewHostsDataSource() datasource.DataSource {
	return &hostsDataSource{}
}

type hostsDataSource struct {
	data *providerData
}

type hostsDataSourceModel struct {
	Hosts map[string]hostStateModel `tfsdk:"hosts"`
}

type hostStateModel struct {
	URI                types.String `tfsdk:"uri"`
	Reachable          types.Bool   `tfsdk:"reachable"`
	Maintenance        types.Bool   `tfsdk:"maintenance"`
	Failed             types.Bool   `tfsdk:"failed"`
	Fenced             types.Bool   `tfsdk:"fenced"`
	CPUs               types.Int64  `tfsdk:"cpus"`
	MemoryMiB          types.Int64  `tfsdk:"memory_mib"`
	CommittedMemoryMiB types.Int64  `tfsdk:"committed_memory_mib"`
	FreeMemoryMiB      types.Int64  `tfsdk:"free_memory_mib"`
	VMs                []string     `tfsdk:"vms"`
}

func (d *hostsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_hosts"
}

func (d *hostsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The provider's hosts as they are now: what each has, what it " +
			"runs and how much memory placement may still give out. A host that does not " +
			"answer is reported with `reachable = false` and a warning, not an error.",
		Attributes: map[string]schema.Attribute{
			"hosts": schema.MapNestedAttribute{
				MarkdownDescription: "The hosts of the provider block, by name.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{
					Attributes: map[string]schema.Attribute{
						"uri": schema.StringAttribute{
							MarkdownDescription: "The host's libvirt URI.",
							Computed:            true,
						},
						"reachable": schema.BoolAttribute{
							MarkdownDescription: "Whether the host answered. When `false`, " +
								"`cpus`, `memory_mib`, `committed_memory_mib`, `free_memory_mib` " +
								"and `vms` are null.",
							Computed: true,
						},
						"maintenance": schema.BoolAttribute{
							MarkdownDescription: "Whether the host is in maintenance, as the provider block says.",
							Computed:            true,
						},
						"failed": schema.BoolAttribute{
							MarkdownDescription: "Whether the host is declared failed, as the provider block says.",
							Computed:            true,
						},
						"fenced": schema.BoolAttribute{
							MarkdownDescription: "Whether the storage box shuts the host's initiator out of every " +
								"volume: from the first apply that declares it failed until its stale copies of VMs " +
								"are removed after it is back. Null when the storage box could not be asked, or " +
								"without storage.",
							Computed: true,
						},
						"cpus": schema.Int64Attribute{
							MarkdownDescription: "The host's logical CPUs.",
							Computed:            true,
						},
						"memory_mib": schema.Int64Attribute{
							MarkdownDescription: "The host's memory, in MiB.",
							Computed:            true,
						},
						"committed_memory_mib": schema.Int64Attribute{
							MarkdownDescription: "Memory promised to the host's VMs, in MiB: the sum " +
								"of the maximum memory of every domain defined on it, running or " +
								"not, Drover's or not.",
							Computed: true,
						},
						"free_memory_mib": schema.Int64Attribute{
							MarkdownDescription: "Memory placement may still give to VMs on the host, " +
								"in MiB: (`memory_mib` − `reserved_memory_mib`) × `memory_overcommit` " +
								"− `committed_memory_mib`, never below zero.",
							Computed: true,
						},
						"vms": schema.ListAttribute{
							MarkdownDescription: "The names of the domains defined on the host, sorted.",
							ElementType:         types.StringType,
							Computed:            true,
						},
					},
				},
			},
		},
	}
}

func (d *hostsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if req.ProviderData == nil {
		return // the provider is not configured yet
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data",
			fmt.Sprintf("Expected *providerData, got %T. This is a bug in the provider.", req.ProviderData))
		return
	}
	d.data = data
}

func (d *hostsDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	if d.data == nil || d.data.cluster.Hosts().Reader == nil {
		resp.Diagnostics.AddError("Provider not configured",
			"drover_hosts needs a configured provider. This is a bug in the provider.")
		return
	}
	// The cluster's own survey: hosts are asked in parallel, so one slow
	// host costs its own timeout, not one per host, and free memory is what
	// placement counts.
	view := d.data.cluster.Survey(ctx)
	if view.FencesErr != nil {
		resp.Diagnostics.AddWarning("Fences unknown", fmt.Sprintf("%v. Every host is reported with fenced = null.", view.FencesErr))
	}
	state := hostsDataSourceModel{Hosts: make(map[string]hostStateModel, len(view.Hosts))}
	for _, h := range view.Hosts {
		name, uri := h.Config.Name, h.Config.URI
		s := hostStateModel{
			URI:                types.StringValue(uri),
			Reachable:          types.BoolValue(h.Err == nil),
			Maintenance:        types.BoolValue(h.Config.Maintenance),
			Failed:             types.BoolValue(h.Config.Failed),
			Fenced:             types.BoolNull(),
			CPUs:               types.Int64Null(),
			MemoryMiB:          types.Int64Null(),
			CommittedMemoryMiB: types.Int64Null(),
			FreeMemoryMiB:      types.Int64Null(),
		}
		if d.data.storage != nil && view.FencesErr == nil {
			s.Fenced = types.BoolValue(h.Fenced)
		}
		if err := h.Err; err != nil {
			resp.Diagnostics.AddWarning(fmt.Sprintf("Host %s is unreachable", name),
				fmt.Sprintf("Host %s (%s) did not answer: %v. It is reported with reachable = false.", name, uri, err))
			state.Hosts[name] = s
			continue
		}
		f := h.Facts
		s.CPUs = types.Int64Value(int64(f.CPUs))
		s.MemoryMiB = types.Int64Value(f.MemoryMiB)
		s.CommittedMemoryMiB = types.Int64Value(f.CommittedMemoryMiB())
		s.FreeMemoryMiB = types.Int64Value(view.FreeMemoryMiB(name))
		s.VMs = f.DomainNames()
		tflog.Debug(ctx, "read host", map[string]any{
			"host": name, "uri": uri, "cpus": f.CPUs, "memory_mib": f.MemoryMiB, "domains": len(f.Domains),
		})
		state.Hosts[name] = s
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}
