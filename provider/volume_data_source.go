package provider

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/storage"
)

var (
	_ datasource.DataSource              = (*volumeDataSource)(nil)
	_ datasource.DataSourceWithConfigure = (*volumeDataSource)(nil)
)

// NewVolumeDataSource returns the drover_volume data source.
func NewVolumeDataSource() datasource.DataSource {
	return &volumeDataSource{}
}

type volumeDataSource struct {
	data *providerData
}

type volumeDataSourceModel struct {
	ID      types.String `tfsdk:"id"`
	Name    types.String `tfsdk:"name"`
	SizeMiB types.Int64  `tfsdk:"size_mib"`
	IQN     types.String `tfsdk:"iqn"`
	LUN     types.Int64  `tfsdk:"lun"`
}

func (d *volumeDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_volume"
}

func (d *volumeDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "An existing volume on the storage target, by name: for example one " +
			"made outside Terraform, to use as a VM's disk or as the source of a clone.",
		Attributes: map[string]schema.Attribute{
			"name": schema.StringAttribute{
				MarkdownDescription: "The volume's name on the target.",
				Required:            true,
				Validators:          []validator.String{volumeName{}},
			},
			"id": schema.StringAttribute{
				MarkdownDescription: "The volume's id, which is its name; use it as a `drover_vm` " +
					"disk's `volume_id` or a `drover_volume`'s `source.volume_id`.",
				Computed: true,
			},
			"size_mib": schema.Int64Attribute{
				MarkdownDescription: "The volume's size in MiB.",
				Computed:            true,
			},
			"iqn": schema.StringAttribute{
				MarkdownDescription: "The iSCSI qualified name of the volume's target.",
				Computed:            true,
			},
			"lun": schema.Int64Attribute{
				MarkdownDescription: "The volume's logical unit number within its target (0).",
				Computed:            true,
			},
		},
	}
}

func (d *volumeDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
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

func (d *volumeDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m volumeDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if d.data == nil || d.data.storage == nil {
		resp.Diagnostics.Append(noStorage("The drover_volume data source"))
		return
	}
	name := m.Name.ValueString()
	v, err := d.data.storage.GetVolume(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		resp.Diagnostics.AddAttributeError(path.Root("name"), "Volume not found",
			fmt.Sprintf("There is no volume %q on the storage target.", name))
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Unable to read volume", fmt.Sprintf("read volume %q: %s", name, err))
		return
	}
	state := volumeDataSourceModel{
		ID:      types.StringValue(v.Name),
		Name:    types.StringValue(v.Name),
		SizeMiB: types.Int64Value(v.SizeMiB),
		IQN:     types.StringValue(v.IQN),
		LUN:     types.Int64Value(int64(v.LUN)),
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}
