package cluster

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/hypervisor/hypervisortest"
	"github.com/drover/terraform-provider-drover/internal/placement"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
)

// secretless is the test driver as a host: libvirt's test driver keeps no
// secrets, so Drover's CHAP secret is recorded here instead.
type secretless struct {
	*hypervisor.Pool
	mu      sync.Mutex
	secrets map[string]string // by host URI; guarded by mu
}

func (s *secretless) EnsureCHAPSecret(_ context.Context, uri, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[uri] = value
	return nil
}

func (s *secretless) secret(uri string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.secrets[uri]
}

// testEnv is a cluster of two test-driver hosts, alpha and beta, and, when
// asked for, an in-process drover-target.
type testEnv struct {
	c      *Cluster
	hosts  *secretless
	target *apitest.Server // nil without storage
	client *storage.Client
	uri    map[string]string
}

type envOption func(*Config)

func inMaintenance(host string) envOption {
	return func(c *Config) {
		for i := range c.Hosts {
			c.Hosts[i].Maintenance = c.Hosts[i].Name == host
		}
	}
}

func newEnv(t *testing.T, withStorage bool, opts ...envOption) testEnv {
	t.Helper()
	pool := hypervisor.NewPool(hypervisor.Options{ConnectTimeout: time.Second})
	t.Cleanup(func() { pool.Close() })
	e := testEnv{hosts: &secretless{Pool: pool, secrets: map[string]string{}},
		uri: map[string]string{"alpha": hypervisortest.NewHost(t), "beta": hypervisortest.NewHost(t)}}
	cfg := Config{Placement: PlacementConfig{Strategy: placement.Spread, MigrationsPerHost: 2}}
	for _, name := range []string{"alpha", "beta"} {
		cfg.Hosts = append(cfg.Hosts, HostConfig{Name: name, URI: e.uri[name], ReservedMemoryMiB: 512,
			CPUOvercommit: 4, MemoryOvercommit: 1})
	}
	for _, o := range opts {
		o(&cfg)
	}
	var st Storage
	if withStorage {
		e.target = apitest.New(t)
		client, err := storage.New(e.target.URL, apitest.Token)
		if err != nil {
			t.Fatal(err)
		}
		e.client, st = client, StorageOf(client)
		cfg.Portal = "127.0.0.1:3260"
	}
	e.c = New(cfg, AccessFor(cfg.HostNames(), apitest.Token), HostsOf(e.hosts), st, nil)
	return e
}

// vm is a small VM without disks, unpinned.
func vm(name string, memMiB int64) hypervisor.VM {
	return hypervisor.VM{Name: name, Type: "qemu", MemoryMiB: memMiB, MaxMemoryMiB: memMiB, VCPUs: 1, MaxVCPUs: 1,
		Boot: hypervisor.Boot{Firmware: hypervisor.FirmwareBIOS}}
}

// wantOn fails the test unless the VM is defined on exactly the hosts
// (none: nowhere), as libvirt tells.
func (e testEnv) wantOn(t *testing.T, name string, hosts ...string) {
	t.Helper()
	locs, err := e.hosts.Locate(context.Background(), e.uri, name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range locs {
		got = append(got, l.Host)
	}
	slices.Sort(got)
	if !slices.Equal(got, hosts) {
		t.Errorf("VM %s is defined on %v, want %v", name, got, hosts)
	}
}

// pinned creates the VM of spec on host and returns its spec with its
// UUID, unpinned unless keepPin.
func (e testEnv) pinned(t *testing.T, spec VMSpec, host string, keepPin bool) VMSpec {
	t.Helper()
	spec.VM.Placement.Host = host
	loc, err := e.c.Create(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.VM.UUID = loc.Domain.UUID
	if !keepPin {
		spec.VM.Placement.Host = ""
	}
	return spec
}

// wantErr fails the test unless err says every one of want.
func wantErr(t *testing.T, err error, want ...string) {
	t.Helper()
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("got error %v, want one that says %q", err, w)
		}
	}
}
