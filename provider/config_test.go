package provider

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// modelTypes returns the Terraform types of the hosts map and the storage
// object, taken from the provider's own schema.
func modelTypes(t *testing.T) (hosts types.MapType, storage types.ObjectType) {
	t.Helper()
	var resp provider.SchemaResponse
	New("test", nil)().Schema(context.Background(), provider.SchemaRequest{}, &resp)
	return resp.Schema.Attributes["hosts"].GetType().(types.MapType),
		resp.Schema.Attributes["storage"].GetType().(types.ObjectType)
}

func hostsValue(t *testing.T, hosts map[string]hostModel) types.Map {
	t.Helper()
	typ, _ := modelTypes(t)
	v, diags := types.MapValueFrom(context.Background(), typ.ElemType, hosts)
	if diags.HasError() {
		t.Fatal(diags)
	}
	return v
}

func storageValue(t *testing.T, s *storageModel) types.Object {
	t.Helper()
	_, typ := modelTypes(t)
	if s == nil {
		return types.ObjectNull(typ.AttrTypes)
	}
	v, diags := types.ObjectValueFrom(context.Background(), typ.AttrTypes, s)
	if diags.HasError() {
		t.Fatal(diags)
	}
	return v
}

// uriOnly is a host block that sets nothing but its URI.
func uriOnly(uri string) hostModel {
	return hostModel{
		URI:               types.StringValue(uri),
		Maintenance:       types.BoolNull(),
		ReservedMemoryMiB: types.Int64Null(),
		CPUOvercommit:     types.Float64Null(),
		MemoryOvercommit:  types.Float64Null(),
		DomainType:        types.StringNull(),
	}
}

func TestConfigAppliesDefaultsAndSortsHosts(t *testing.T) {
	t.Parallel()
	beta := uriOnly("qemu:///b")
	beta.Maintenance = types.BoolValue(true)
	beta.ReservedMemoryMiB = types.Int64Value(0)
	beta.CPUOvercommit = types.Float64Value(1)
	beta.MemoryOvercommit = types.Float64Value(1.5)
	beta.DomainType = types.StringValue("qemu")
	m := providerModel{
		Hosts:   hostsValue(t, map[string]hostModel{"beta": beta, "alpha": uriOnly("qemu:///a")}),
		Storage: storageValue(t, nil),
	}
	cfg, diags := m.config(context.Background())
	if diags.HasError() {
		t.Fatal(diags)
	}
	want := []cluster.HostConfig{
		{Name: "alpha", URI: "qemu:///a", ReservedMemoryMiB: 512, CPUOvercommit: 4, MemoryOvercommit: 1},
		{Name: "beta", URI: "qemu:///b", Maintenance: true, ReservedMemoryMiB: 0, CPUOvercommit: 1,
			MemoryOvercommit: 1.5, DomainType: "qemu"},
	}
	if len(cfg.Hosts) != len(want) {
		t.Fatalf("hosts = %+v, want %+v", cfg.Hosts, want)
	}
	for i := range want {
		if cfg.Hosts[i] != want[i] {
			t.Errorf("hosts[%d] = %+v, want %+v", i, cfg.Hosts[i], want[i])
		}
	}
	if cfg.Storage != nil {
		t.Errorf("storage = %+v without a storage block, want nil", cfg.Storage)
	}
	if want := (cluster.PlacementConfig{Strategy: placement.Spread, MigrationsPerHost: 2}); cfg.Placement != want {
		t.Errorf("placement = %+v without a placement block, want %+v", cfg.Placement, want)
	}
}

func TestConfigPlacementSettings(t *testing.T) {
	t.Parallel()
	var resp provider.SchemaResponse
	New("test", nil)().Schema(context.Background(), provider.SchemaRequest{}, &resp)
	typ := resp.Schema.Attributes["placement"].GetType().(types.ObjectType)
	pv, diags := types.ObjectValueFrom(context.Background(), typ.AttrTypes, placementSettingsModel{
		Strategy: types.StringValue("pack"), MigrationsPerHost: types.Int64Value(3)})
	if diags.HasError() {
		t.Fatal(diags)
	}
	m := providerModel{
		Hosts:     hostsValue(t, map[string]hostModel{"alpha": uriOnly("qemu:///a")}),
		Storage:   storageValue(t, nil),
		Placement: pv,
	}
	cfg, diags := m.config(context.Background())
	if diags.HasError() {
		t.Fatal(diags)
	}
	if want := (cluster.PlacementConfig{Strategy: placement.Pack, MigrationsPerHost: 3}); cfg.Placement != want {
		t.Errorf("placement = %+v, want %+v", cfg.Placement, want)
	}
}

func TestConfigStorageToken(t *testing.T) {
	storage := func(token types.String) *storageModel {
		return &storageModel{
			Endpoint: types.StringValue("https://storage.lan:3261"),
			Token:    token,
			Portal:   types.StringValue("storage.lan:3260"),
		}
	}
	tests := []struct {
		name      string
		token     types.String
		env       string
		wantToken string // empty: an error at storage.token
	}{
		{"a token in the block is used", types.StringValue("from-block"), "from-env", "from-block"},
		{"without a token in the block the environment's is used", types.StringNull(), "from-env", "from-env"},
		{"without a token anywhere the configuration is refused", types.StringNull(), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(tokenEnv, tt.env)
			m := providerModel{
				Hosts:   hostsValue(t, map[string]hostModel{"alpha": uriOnly("qemu:///a")}),
				Storage: storageValue(t, storage(tt.token)),
			}
			cfg, diags := m.config(context.Background())
			if tt.wantToken == "" {
				if len(diags) != 1 || !diagPath(diags[0]).Equal(path.Root("storage").AtName("token")) {
					t.Fatalf("diagnostics = %v, want one error at storage.token", diags)
				}
				return
			}
			if diags.HasError() {
				t.Fatal(diags)
			}
			if cfg.Storage == nil || cfg.Storage.Token != tt.wantToken {
				t.Errorf("storage = %+v, want token %q", cfg.Storage, tt.wantToken)
			}
		})
	}
}

func TestConfigRefusesUnknownHosts(t *testing.T) {
	t.Parallel()
	typ, _ := modelTypes(t)
	m := providerModel{Hosts: types.MapUnknown(typ.ElemType), Storage: storageValue(t, nil)}
	_, diags := m.config(context.Background())
	if len(diags) != 1 || !diags.HasError() {
		t.Fatalf("got %v, want one error", diags)
	}
	d := diags[0]
	if d.Summary() != "Hosts are unknown" || !strings.Contains(d.Detail(), "known when planning") {
		t.Errorf("got %q: %q, want the hosts named unknown and why they must be known", d.Summary(), d.Detail())
	}
	if at := diagPath(d); !at.Equal(path.Root("hosts")) {
		t.Errorf("the error points at %q, want hosts", at)
	}
}

// diagPath is the attribute a diagnostic points at, or an empty path.
func diagPath(d diag.Diagnostic) path.Path {
	if d, ok := d.(diag.DiagnosticWithPath); ok {
		return d.Path()
	}
	return path.Empty()
}
