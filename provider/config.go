package provider

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// Defaults of a host's settings, as DESIGN.md fixes them.
const (
	defaultReservedMemoryMiB = 512
	defaultCPUOvercommit     = 4
	defaultMemoryOvercommit  = 1.0
	// defaultMigrationsPerHost bounds the moves a host takes part in at
	// once, as source or destination.
	defaultMigrationsPerHost = 2
)

// tokenEnv names the environment variable that holds the storage token when
// the provider block does not.
const tokenEnv = "DROVER_STORAGE_TOKEN"

// config is the provider block in plain Go, defaults applied. It is made once,
// in Configure; nothing past that point sees Terraform types.
type config struct {
	Hosts     []cluster.HostConfig // sorted by name
	Storage   *storageConfig       // nil when the block has no storage
	Placement cluster.PlacementConfig
}

type storageConfig struct {
	Endpoint string
	Token    string
	Portal   string
	CAFile   string // empty: the system's roots
}

// cluster is the configuration of the cluster the provider block declares.
func (c config) cluster() cluster.Config {
	out := cluster.Config{Hosts: c.Hosts, Placement: c.Placement}
	if c.Storage != nil {
		out.Portal = c.Storage.Portal
	}
	return out
}

// volumeAccess is the access every volume of this configuration gets. It
// needs the storage settings.
func (c config) volumeAccess() cluster.Access {
	token := ""
	if c.Storage != nil {
		token = c.Storage.Token
	}
	return cluster.AccessFor(c.cluster().HostNames(), token)
}

// config converts the provider block, block by block, applying defaults.
// The schema's validators have already refused bad values; what is left to
// catch here is what they cannot see: values unknown at plan time and a
// missing token.
func (m providerModel) config(ctx context.Context) (config, diag.Diagnostics) {
	var (
		cfg   config
		diags diag.Diagnostics
	)
	cfg.Hosts, diags = m.hostsConfig(ctx)
	if diags.HasError() {
		return cfg, diags
	}
	var d diag.Diagnostics
	if cfg.Placement, d = m.placementConfig(ctx); d.HasError() {
		return cfg, append(diags, d...)
	}
	cfg.Storage, d = m.storageConfig(ctx)
	diags = append(diags, d...)
	if cfg.Storage == nil && !d.HasError() {
		for i, h := range cfg.Hosts {
			if h.Failed {
				diags.AddAttributeError(path.Root("host").AtListIndex(i).AtName("failed"), "A failed host needs a storage box",
					fmt.Sprintf("Host %s: failed = true fences the host at the storage box before its VMs restart "+
						"elsewhere, and the provider block has no storage block. Add the storage block, or, to move the "+
						"VMs of a host that answers, set maintenance = true instead.", h.Name))
			}
		}
	}
	return cfg, diags
}

// hostsConfig converts the host blocks, sorted by name.
func (m providerModel) hostsConfig(ctx context.Context) ([]cluster.HostConfig, diag.Diagnostics) {
	var diags diag.Diagnostics
	if m.Hosts.IsUnknown() {
		diags.AddAttributeError(path.Root("host"), "Hosts are unknown",
			"The provider needs its hosts known when planning; do not derive them from resources.")
		return nil, diags
	}
	var hosts []hostModel
	diags.Append(m.Hosts.ElementsAs(ctx, &hosts, false)...)
	if diags.HasError() {
		return nil, diags
	}
	var out []cluster.HostConfig
	for i, hm := range hosts {
		at := path.Root("host").AtListIndex(i)
		if hm.unknown() {
			diags.AddAttributeError(at, "Host settings are unknown",
				fmt.Sprintf("The settings of host block %d (%s) must be known when planning.", i+1, hm.Name.ValueString()))
			continue
		}
		out = append(out, hm.hostConfig())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, diags
}

// unknown tells whether any setting of the host is unknown.
func (hm hostModel) unknown() bool {
	for _, v := range []attr.Value{hm.Name, hm.URI, hm.Maintenance, hm.Failed, hm.MigrationAddress,
		hm.ReservedMemoryMiB, hm.CPUOvercommit, hm.MemoryOvercommit, hm.DomainType} {
		if v.IsUnknown() {
			return true
		}
	}
	return false
}

// hostConfig converts one known host, applying defaults.
func (hm hostModel) hostConfig() cluster.HostConfig {
	h := cluster.HostConfig{
		Name:              hm.Name.ValueString(),
		URI:               hm.URI.ValueString(),
		Maintenance:       hm.Maintenance.ValueBool(),
		Failed:            hm.Failed.ValueBool(),
		MigrationAddress:  hm.MigrationAddress.ValueString(),
		ReservedMemoryMiB: defaultReservedMemoryMiB,
		CPUOvercommit:     defaultCPUOvercommit,
		MemoryOvercommit:  defaultMemoryOvercommit,
		DomainType:        hm.DomainType.ValueString(),
	}
	if !hm.ReservedMemoryMiB.IsNull() {
		h.ReservedMemoryMiB = hm.ReservedMemoryMiB.ValueInt64()
	}
	if !hm.CPUOvercommit.IsNull() {
		h.CPUOvercommit = hm.CPUOvercommit.ValueFloat64()
	}
	if !hm.MemoryOvercommit.IsNull() {
		h.MemoryOvercommit = hm.MemoryOvercommit.ValueFloat64()
	}
	return h
}

// placementConfig converts the placement block, applying defaults.
func (m providerModel) placementConfig(ctx context.Context) (cluster.PlacementConfig, diag.Diagnostics) {
	var diags diag.Diagnostics
	out := cluster.PlacementConfig{Strategy: placement.Spread, MigrationsPerHost: defaultMigrationsPerHost}
	unknown := func() (cluster.PlacementConfig, diag.Diagnostics) {
		diags.AddAttributeError(path.Root("placement"), "Placement settings are unknown",
			"The placement settings must be known when planning.")
		return out, diags
	}
	if m.Placement.IsUnknown() {
		return unknown()
	}
	if m.Placement.IsNull() {
		return out, diags
	}
	var pm placementSettingsModel
	diags.Append(m.Placement.As(ctx, &pm, basetypes.ObjectAsOptions{})...)
	if diags.HasError() {
		return out, diags
	}
	if pm.Strategy.IsUnknown() || pm.MigrationsPerHost.IsUnknown() || pm.StrictSpread.IsUnknown() {
		return unknown()
	}
	out.StrictSpread = pm.StrictSpread.ValueBool()
	if pm.Strategy.ValueString() == "pack" {
		out.Strategy = placement.Pack
	}
	if !pm.MigrationsPerHost.IsNull() {
		out.MigrationsPerHost = int(pm.MigrationsPerHost.ValueInt64())
	}
	return out, diags
}

// storageConfig converts the storage block (nil without one); the token
// defaults to the environment's.
func (m providerModel) storageConfig(ctx context.Context) (*storageConfig, diag.Diagnostics) {
	var diags diag.Diagnostics
	unknown := func() (*storageConfig, diag.Diagnostics) {
		diags.AddAttributeError(path.Root("storage"), "Storage settings are unknown",
			"The storage settings must be known when planning.")
		return nil, diags
	}
	if m.Storage.IsUnknown() {
		return unknown()
	}
	if m.Storage.IsNull() {
		return nil, diags
	}
	var s storageModel
	diags.Append(m.Storage.As(ctx, &s, basetypes.ObjectAsOptions{})...)
	if diags.HasError() {
		return nil, diags
	}
	if s.Endpoint.IsUnknown() || s.Token.IsUnknown() || s.Portal.IsUnknown() || s.CAFile.IsUnknown() {
		return unknown()
	}
	st := &storageConfig{
		Endpoint: s.Endpoint.ValueString(),
		Token:    s.Token.ValueString(),
		Portal:   s.Portal.ValueString(),
		CAFile:   s.CAFile.ValueString(),
	}
	if st.CAFile != "" && strings.HasPrefix(st.Endpoint, "http://") {
		diags.AddAttributeWarning(path.Root("storage").AtName("ca_file"), "ca_file is not used",
			"storage.endpoint "+st.Endpoint+" is plain http, so no certificate is checked; use https to have drover-target's certificate checked against ca_file.")
	}
	if st.Token == "" {
		st.Token = os.Getenv(tokenEnv)
	}
	if st.Token == "" {
		diags.AddAttributeError(path.Root("storage").AtName("token"), "No storage token",
			"Set storage.token in the provider block or the environment variable "+tokenEnv+".")
	}
	return st, diags
}
