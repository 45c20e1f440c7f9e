package provider

import (
	"context"
	"os"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
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
	Hosts     []hostConfig   // sorted by name
	Storage   *storageConfig // nil when the block has no storage
	Placement placementConfig
}

// placementConfig is the provider block's placement settings.
type placementConfig struct {
	Strategy          placement.Strategy
	MigrationsPerHost int
}

type hostConfig struct {
	Name              string
	URI               string
	Maintenance       bool
	ReservedMemoryMiB int64
	CPUOvercommit     float64
	MemoryOvercommit  float64
	// DomainType is "kvm", "qemu", or empty for "kvm when the host offers
	// it"; see domainType.
	DomainType string
}

type storageConfig struct {
	Endpoint string
	Token    string
	Portal   string
}

// domainType is the domain type to give this host's VMs.
func (h hostConfig) domainType(facts hypervisor.Host) string {
	if h.DomainType != "" {
		return h.DomainType
	}
	if facts.KVM {
		return "kvm"
	}
	return "qemu"
}

// hostURIs maps the configured hosts' names to their URIs.
func (c config) hostURIs() map[string]string {
	out := make(map[string]string, len(c.Hosts))
	for _, h := range c.Hosts {
		out[h.Name] = h.URI
	}
	return out
}

// freeMemoryMiB is what placement may still give to VMs on the host.
func (h hostConfig) freeMemoryMiB(facts hypervisor.Host) int64 {
	return hypervisor.FreeMemoryMiB(facts.MemoryMiB, h.ReservedMemoryMiB, h.MemoryOvercommit, facts.CommittedMemoryMiB())
}

// config converts the provider block, applying defaults. The schema's
// validators have already refused bad values; what is left to catch here is
// what they cannot see: values unknown at plan time and a missing token.
func (m providerModel) config(ctx context.Context) (config, diag.Diagnostics) {
	var (
		cfg   config
		diags diag.Diagnostics
	)
	if m.Hosts.IsUnknown() {
		diags.AddAttributeError(path.Root("hosts"), "Hosts are unknown",
			"The provider needs its hosts known when planning; do not derive them from resources.")
		return cfg, diags
	}
	var hosts map[string]hostModel
	diags.Append(m.Hosts.ElementsAs(ctx, &hosts, false)...)
	if diags.HasError() {
		return cfg, diags
	}
	for name, hm := range hosts {
		at := path.Root("hosts").AtMapKey(name)
		if hm.URI.IsUnknown() || hm.Maintenance.IsUnknown() || hm.ReservedMemoryMiB.IsUnknown() ||
			hm.CPUOvercommit.IsUnknown() || hm.MemoryOvercommit.IsUnknown() || hm.DomainType.IsUnknown() {
			diags.AddAttributeError(at, "Host settings are unknown",
				"The settings of host "+name+" must be known when planning.")
			continue
		}
		h := hostConfig{
			Name:              name,
			URI:               hm.URI.ValueString(),
			Maintenance:       hm.Maintenance.ValueBool(),
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
		cfg.Hosts = append(cfg.Hosts, h)
	}
	sort.Slice(cfg.Hosts, func(i, j int) bool { return cfg.Hosts[i].Name < cfg.Hosts[j].Name })

	cfg.Placement = placementConfig{Strategy: placement.Spread, MigrationsPerHost: defaultMigrationsPerHost}
	if m.Placement.IsUnknown() {
		diags.AddAttributeError(path.Root("placement"), "Placement settings are unknown",
			"The placement settings must be known when planning.")
		return cfg, diags
	}
	if !m.Placement.IsNull() {
		var pm placementSettingsModel
		diags.Append(m.Placement.As(ctx, &pm, basetypes.ObjectAsOptions{})...)
		if diags.HasError() {
			return cfg, diags
		}
		if pm.Strategy.IsUnknown() || pm.MigrationsPerHost.IsUnknown() {
			diags.AddAttributeError(path.Root("placement"), "Placement settings are unknown",
				"The placement settings must be known when planning.")
			return cfg, diags
		}
		if pm.Strategy.ValueString() == "pack" {
			cfg.Placement.Strategy = placement.Pack
		}
		if !pm.MigrationsPerHost.IsNull() {
			cfg.Placement.MigrationsPerHost = int(pm.MigrationsPerHost.ValueInt64())
		}
	}

	if m.Storage.IsUnknown() {
		diags.AddAttributeError(path.Root("storage"), "Storage settings are unknown",
			"The storage settings must be known when planning.")
		return cfg, diags
	}
	if !m.Storage.IsNull() {
		var s storageModel
		diags.Append(m.Storage.As(ctx, &s, basetypes.ObjectAsOptions{})...)
		if diags.HasError() {
			return cfg, diags
		}
		if s.Endpoint.IsUnknown() || s.Token.IsUnknown() || s.Portal.IsUnknown() {
			diags.AddAttributeError(path.Root("storage"), "Storage settings are unknown",
				"The storage settings must be known when planning.")
			return cfg, diags
		}
		st := &storageConfig{
			Endpoint: s.Endpoint.ValueString(),
			Token:    s.Token.ValueString(),
			Portal:   s.Portal.ValueString(),
		}
		if st.Token == "" {
			st.Token = os.Getenv(tokenEnv)
		}
		if st.Token == "" {
			diags.AddAttributeError(path.Root("storage").AtName("token"), "No storage token",
				"Set storage.token in the provider block or the environment variable "+tokenEnv+".")
		}
		cfg.Storage = st
	}
	return cfg, diags
}
