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

// modelTypes returns the Terraform types of the host blocks and the
// storage block, taken from the provider's own schema.
func modelTypes(t *testing.T) (hosts types.ListType, storage types.ObjectType) {
	t.Helper()
	var resp provider.SchemaResponse
	New("test", nil)().Schema(context.Background(), provider.SchemaRequest{}, &resp)
	return resp.Schema.Blocks["host"].Type().(types.ListType),
		resp.Schema.Blocks["storage"].Type().(types.ObjectType)
}

func hostsValue(t *testing.T, hosts ...hostModel) types.List {
	t.Helper()
	typ, _ := modelTypes(t)
	v, diags := types.ListValueFrom(context.Background(), typ.ElemType, hosts)
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

// uriOnly is a host block that sets nothing but its name and URI.
func uriOnly(name, uri string) hostModel {
	return hostModel{
		Name:              types.StringValue(name),
		URI:               types.StringValue(uri),
		Maintenance:       types.BoolNull(),
		Failed:            types.BoolNull(),
		MigrationAddress:  types.StringNull(),
		ReservedMemoryMiB: types.Int64Null(),
		CPUOvercommit:     types.Float64Null(),
		MemoryOvercommit:  types.Float64Null(),
		DomainType:        types.StringNull(),
	}
}

func TestConfigAppliesDefaultsAndSortsHosts(t *testing.T) {
	t.Parallel()
	beta := uriOnly("beta", "qemu:///b")
	beta.Maintenance = types.BoolValue(true)
	beta.Failed = types.BoolValue(false)
	beta.MigrationAddress = types.StringValue("10.0.0.2")
	beta.ReservedMemoryMiB = types.Int64Value(0)
	beta.CPUOvercommit = types.Float64Value(1)
	beta.MemoryOvercommit = types.Float64Value(1.5)
	beta.DomainType = types.StringValue("qemu")
	m := providerModel{
		Hosts:   hostsValue(t, beta, uriOnly("alpha", "qemu:///a")),
		Storage: storageValue(t, nil),
	}
	cfg, diags := m.config(context.Background())
	if diags.HasError() {
		t.Fatal(diags)
	}
	want := []cluster.HostConfig{
		{Name: "alpha", URI: "qemu:///a", ReservedMemoryMiB: 512, CPUOvercommit: 4, MemoryOvercommit: 1},
		{Name: "beta", URI: "qemu:///b", Maintenance: true, MigrationAddress: "10.0.0.2", ReservedMemoryMiB: 0, CPUOvercommit: 1,
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
	typ := resp.Schema.Blocks["placement"].Type().(types.ObjectType)
	pv, diags := types.ObjectValueFrom(context.Background(), typ.AttrTypes, placementSettingsModel{
		Strategy: types.StringValue("pack"), MigrationsPerHost: types.Int64Value(3), StrictSpread: types.BoolValue(true)})
	if diags.HasError() {
		t.Fatal(diags)
	}
	m := providerModel{
		Hosts:     hostsValue(t, uriOnly("alpha", "qemu:///a")),
		Storage:   storageValue(t, nil),
		Placement: pv,
	}
	cfg, diags := m.config(context.Background())
	if diags.HasError() {
		t.Fatal(diags)
	}
	if want := (cluster.PlacementConfig{Strategy: placement.Pack, MigrationsPerHost: 3, StrictSpread: true}); cfg.Placement != want {
		t.Errorf("placement = %+v, want %+v", cfg.Placement, want)
	}
}

func TestConfigStorageToken(t *testing.T) {
	storage := func(token types.String) *storageModel {
		return &storageModel{
			Endpoint: types.StringValue("https://storage.lan:3261"),
			Token:    token,
			Portal:   types.StringValue("storage.lan:3260"),
			CAFile:   types.StringNull(),
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
				Hosts:   hostsValue(t, uriOnly("alpha", "qemu:///a")),
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
	m := providerModel{Hosts: types.ListUnknown(typ.ElemType), Storage: storageValue(t, nil)}
	_, diags := m.config(context.Background())
	if len(diags) != 1 || !diags.HasError() {
		t.Fatalf("got %v, want one error", diags)
	}
	d := diags[0]
	if d.Summary() != "Hosts are unknown" || !strings.Contains(d.Detail(), "known when planning") {
		t.Errorf("got %q: %q, want the hosts named unknown and why they must be known", d.Summary(), d.Detail())
	}
	if at := diagPath(d); !at.Equal(path.Root("host")) {
		t.Errorf("the error points at %q, want host", at)
	}
}

func TestConfigCAFile(t *testing.T) {
	t.Parallel()
	storage := func(endpoint string) types.Object {
		return storageValue(t, &storageModel{Endpoint: types.StringValue(endpoint), Token: types.StringValue("t"),
			Portal: types.StringValue("storage.lan:3260"), CAFile: types.StringValue("/etc/drover/storage-ca.pem")})
	}
	m := providerModel{Hosts: hostsValue(t, uriOnly("alpha", "qemu:///a")), Storage: storage("https://storage.lan:3261")}
	cfg, diags := m.config(context.Background())
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	if cfg.Storage.CAFile != "/etc/drover/storage-ca.pem" {
		t.Errorf("ca_file = %q, want /etc/drover/storage-ca.pem", cfg.Storage.CAFile)
	}

	m.Storage = storage("http://storage.lan:3261")
	_, diags = m.config(context.Background())
	if len(diags) != 1 || diags.HasError() || !diagPath(diags[0]).Equal(path.Root("storage").AtName("ca_file")) {
		t.Errorf("with an http endpoint got %v, want one warning at storage.ca_file", diags)
	}
}

func TestConfigRefusesAFailedHostWithoutStorageNamingIt(t *testing.T) {
	t.Parallel()
	beta := uriOnly("beta", "qemu:///b")
	beta.Failed = types.BoolValue(true)
	m := providerModel{Hosts: hostsValue(t, uriOnly("alpha", "qemu:///a"), beta), Storage: storageValue(t, nil)}
	cfg, diags := m.config(context.Background())
	if len(diags) != 1 || !diags.HasError() {
		t.Fatalf("got %v, want one error", diags)
	}
	d := diags[0]
	if !strings.Contains(d.Summary(), "needs a storage box") || !strings.Contains(d.Detail(), "Host beta") {
		t.Errorf("got %q: %q, want the storage box asked for, and host beta named", d.Summary(), d.Detail())
	}
	if at, want := diagPath(d), path.Root("host").AtListIndex(1).AtName("failed"); !at.Equal(want) {
		t.Errorf("the error points at %q, want %q", at, want)
	}
	if h, ok := cfg.cluster().Host("beta"); !ok || !h.Failed {
		t.Errorf("beta = %+v, want it declared failed", h)
	}
}

// diagPath is the attribute a diagnostic points at, or an empty path.
func diagPath(d diag.Diagnostic) path.Path {
	if d, ok := d.(diag.DiagnosticWithPath); ok {
		return d.Path()
	}
	return path.Empty()
}
