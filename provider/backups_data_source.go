package provider

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cluster"
)

var (
	_ datasource.DataSource              = (*backupsDataSource)(nil)
	_ datasource.DataSourceWithConfigure = (*backupsDataSource)(nil)
)

// NewBackupsDataSource returns the drover_backups data source.
func NewBackupsDataSource() datasource.DataSource { return &backupsDataSource{} }

type backupsDataSource struct {
	data *providerData
}

type backupsDataSourceModel struct {
	VMID    types.String `tfsdk:"vm_id"`
	Backups types.List   `tfsdk:"backups"`
}

var backupSummaryAttrTypes = map[string]attr.Type{
	"id":          types.StringType,
	"vm_name":     types.StringType,
	"created_at":  types.StringType,
	"consistency": types.StringType,
	"pause_ms":    types.Int64Type,
	"schedule_id": types.StringType,
	"disks":       types.ListType{ElemType: types.ObjectType{AttrTypes: backupDiskAttrTypes}},
}

func (d *backupsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backups"
}

func (d *backupsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	disk := schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
		"volume_id":   schema.StringAttribute{MarkdownDescription: "The disk's volume.", Computed: true},
		"snapshot_id": schema.StringAttribute{MarkdownDescription: "Its snapshot in the backup: a `drover_volume`'s `source.snapshot_id` restores it.", Computed: true},
		"size_mib":    schema.Int64Attribute{MarkdownDescription: "Its size in MiB.", Computed: true},
	}}
	resp.Schema = schema.Schema{
		MarkdownDescription: "The backups of a VM kept on the storage target, newest first: those made by " +
			"`drover_backup` and the runs of its `drover_backup_schedule`s alike (`schedule_id` tells them " +
			"apart). They outlive the VM: a VM's backups are listed also after it is gone.",
		Attributes: map[string]schema.Attribute{
			"vm_id": schema.StringAttribute{
				MarkdownDescription: "The `id` of the VM (its domain UUID).",
				Required:            true,
			},
			"backups": schema.ListNestedAttribute{
				MarkdownDescription: "The VM's backups, newest first.",
				Computed:            true,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":          schema.StringAttribute{MarkdownDescription: "The backup's id.", Computed: true},
					"vm_name":     schema.StringAttribute{MarkdownDescription: "The VM's name then.", Computed: true},
					"created_at":  schema.StringAttribute{MarkdownDescription: "When the disks were cut (RFC 3339).", Computed: true},
					"consistency": schema.StringAttribute{MarkdownDescription: "`filesystem` or `crash`.", Computed: true},
					"pause_ms":    schema.Int64Attribute{MarkdownDescription: "How long the guest stood still (for a scheduled run: how long the storage box held its writes), in milliseconds.", Computed: true},
					"schedule_id": schema.StringAttribute{MarkdownDescription: "The `drover_backup_schedule` whose run made it; empty for a `drover_backup`.", Computed: true},
					"disks":       schema.ListNestedAttribute{MarkdownDescription: "The disks, in the VM's order.", Computed: true, NestedObject: disk},
				}},
			},
		},
	}
}

func (d *backupsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	data, ok := req.ProviderData.(*providerData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data",
			fmt.Sprintf("Expected *providerData, got %T. This is a bug in the provider.", req.ProviderData))
		return
	}
	d.data = data
}

func (d *backupsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m backupsDataSourceModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if d.data.storage == nil {
		resp.Diagnostics.AddError("No storage configured", cluster.ErrNoStorage.Error())
		return
	}
	sets, err := d.data.storage.ListSnapshotSets(ctx, map[string]string{cluster.LabelVMID: m.VMID.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Unable to list backups", err.Error())
		return
	}
	sort.SliceStable(sets, func(i, j int) bool { return sets[i].CreatedAt.After(sets[j].CreatedAt) })
	items := make([]attr.Value, 0, len(sets))
	for _, set := range sets {
		pause, _ := strconv.ParseInt(set.Labels[cluster.LabelPauseMS], 10, 64)
		items = append(items, types.ObjectValueMust(backupSummaryAttrTypes, map[string]attr.Value{
			"id":          types.StringValue(set.ID),
			"vm_name":     types.StringValue(set.Labels[cluster.LabelVMName]),
			"created_at":  types.StringValue(set.CreatedAt.UTC().Format(time.RFC3339Nano)),
			"consistency": types.StringValue(set.Labels[cluster.LabelConsistency]),
			"pause_ms":    types.Int64Value(pause),
			"schedule_id": types.StringValue(set.Labels[cluster.LabelSchedule]),
			"disks":       backupDisks(set),
		}))
	}
	list, diags := types.ListValue(types.ObjectType{AttrTypes: backupSummaryAttrTypes}, items)
	resp.Diagnostics.Append(diags...)
	m.Backups = list
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}
