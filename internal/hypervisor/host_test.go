package hypervisor

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"libvirt.org/go/libvirt"

	"github.com/drover/terraform-provider-drover/internal/hypervisor/hypervisortest"
)

// newTestHost returns the URI of a test-driver host of its own (6 CPUs,
// 4 GiB).
func newTestHost(t *testing.T) string { return hypervisortest.NewHost(t) }

// defineTestDomain defines a domain through libvirt itself, bypassing the
// code under test, and starts it when running is set.
func defineTestDomain(t *testing.T, lv *libvirt.Connect, name string, maxMiB, curMiB int, running bool) {
	t.Helper()
	xml := fmt.Sprintf(`<domain type='test'><name>%s</name>
  <memory unit='MiB'>%d</memory><currentMemory unit='MiB'>%d</currentMemory>
  <vcpu>2</vcpu><os><type>hvm</type></os></domain>`, name, maxMiB, curMiB)
	dom, err := lv.DomainDefineXML(xml)
	if err != nil {
		t.Fatalf("define %s: %v", name, err)
	}
	defer dom.Free()
	if running {
		if err := dom.Create(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
	}
}

func TestHostReportsWhatLibvirtReports(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := NewPool(Options{})
	t.Cleanup(func() { pool.Close() })

	// The test driver keeps its state per connection: define the domains
	// through the pool's own connection.
	err := pool.do(context.Background(), uri, func(lv *libvirt.Connect) error {
		defineTestDomain(t, lv, "web", 1024, 512, true)
		defineTestDomain(t, lv, "db", 2048, 2048, false)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var node *libvirt.NodeInfo
	_ = pool.do(context.Background(), uri, func(lv *libvirt.Connect) error {
		node, err = lv.GetNodeInfo()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	h, err := pool.Host(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(node.Cpus); h.CPUs != want {
		t.Errorf("CPUs = %d, want %d", h.CPUs, want)
	}
	if want := int64(node.Memory / 1024); h.MemoryMiB != want {
		t.Errorf("MemoryMiB = %d, want %d", h.MemoryMiB, want)
	}
	if h.KVM {
		t.Error("KVM = true for a test-driver host, want false")
	}
	want := []Domain{
		{Name: "db", MemoryMiB: 2048, MaxMemoryMiB: 2048, VCPUs: 2, State: StateShutOff},
		{Name: "web", MemoryMiB: 512, MaxMemoryMiB: 1024, VCPUs: 2, State: StateRunning},
	}
	if len(h.Domains) != len(want) {
		t.Fatalf("Domains = %+v, want %+v", h.Domains, want)
	}
	for i, d := range h.Domains {
		if !looksLikeUUID(d.UUID) {
			t.Errorf("domain %s: UUID %q is not a UUID", d.Name, d.UUID)
		}
		d.UUID = ""
		if d != want[i] {
			t.Errorf("Domains[%d] = %+v, want %+v", i, d, want[i])
		}
	}
	if got := h.CommittedMemoryMiB(); got != 3072 {
		t.Errorf("CommittedMemoryMiB = %d, want 3072 (the stopped domain counts)", got)
	}
	if got := h.DomainNames(); !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("DomainNames = %v, want [db web]", got)
	}
}

func TestOffersKVM(t *testing.T) {
	t.Parallel()
	caps := func(types ...string) string {
		s := `<capabilities><host><uuid>x</uuid></host><guest><os_type>hvm</os_type><arch name='x86_64'>`
		for _, ty := range types {
			s += `<domain type='` + ty + `'/>`
		}
		return s + `</arch></guest></capabilities>`
	}
	tests := []struct {
		name string
		caps string
		want bool
	}{
		{"a host with kvm and qemu guests offers kvm", caps("qemu", "kvm"), true},
		{"a host with only qemu guests does not", caps("qemu"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := offersKVM(tt.caps)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("offersKVM = %v, want %v", got, tt.want)
			}
		})
	}
}
