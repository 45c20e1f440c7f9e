package cluster

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
)

// testNode is a libvirt test-driver node: a fake host of 6 CPUs and 4 GiB
// that lives in this process only.
const testNode = `<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>6</active><total>6</total>
    <nodes>1</nodes><sockets>1</sockets><cores>3</cores><threads>2</threads></cpu>
  <memory>4194304</memory>
</node>`

// newTestHost writes a test-driver node file and returns its URI: each URI
// is a host of its own.
func newTestHost(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.xml")
	if err := os.WriteFile(path, []byte(testNode), 0o644); err != nil {
		t.Fatal(err)
	}
	return "test://" + path
}

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
		uri: map[string]string{"alpha": newTestHost(t), "beta": newTestHost(t)}}
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

// where lists the hosts the VM is defined on, sorted.
func (e testEnv) where(t *testing.T, name string) []string {
	t.Helper()
	locs, err := e.hosts.Locate(context.Background(), e.uri, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range locs {
		out = append(out, l.Host)
	}
	slices.Sort(out)
	return out
}
