package cluster

import (
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// Config is the cluster as the provider block declares it, defaults applied.
type Config struct {
	Hosts []HostConfig // sorted by name
	// Portal is the iSCSI portal of the storage box as the hosts reach it;
	// empty when there is no storage.
	Portal    string
	Placement PlacementConfig
}

// PlacementConfig are the settings of every placement decision.
type PlacementConfig struct {
	Strategy placement.Strategy
	// MigrationsPerHost bounds the moves a host takes part in at once, as
	// source or destination.
	MigrationsPerHost int
	// StrictSpread never lets two VMs of a spread group share a host, not
	// even while hosts are out of service: such a plan fails instead.
	StrictSpread bool
}

// HostConfig is one configured host.
type HostConfig struct {
	Name        string
	URI         string
	Maintenance bool
	// Failed declares the host dead or cut off: it is fenced at the
	// storage box and its VMs restart elsewhere (see recover.go).
	Failed bool
	// MigrationAddress is where other hosts send this host a VM's memory
	// when it is the destination of a live migration; empty: libvirt's
	// choice (the host's name as it resolves).
	MigrationAddress  string
	ReservedMemoryMiB int64
	CPUOvercommit     float64
	MemoryOvercommit  float64
	// DomainType is "kvm", "qemu", or empty for "kvm when the host offers
	// it"; see DomainTypeOn.
	DomainType string
}

// DomainTypeOn is the domain type to give this host's VMs.
func (h HostConfig) DomainTypeOn(facts hypervisor.Host) string {
	if h.DomainType != "" {
		return h.DomainType
	}
	if facts.KVM {
		return "kvm"
	}
	return "qemu"
}

// Host returns the configured host of that name.
func (c Config) Host(name string) (HostConfig, bool) {
	for _, h := range c.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return HostConfig{}, false
}

// HostURIs maps the configured hosts' names to their URIs.
func (c Config) HostURIs() map[string]string {
	out := make(map[string]string, len(c.Hosts))
	for _, h := range c.Hosts {
		out[h.Name] = h.URI
	}
	return out
}

// HostNames are the configured hosts' names, in order.
func (c Config) HostNames() []string {
	names := make([]string, len(c.Hosts))
	for i, h := range c.Hosts {
		names[i] = h.Name
	}
	return names
}
