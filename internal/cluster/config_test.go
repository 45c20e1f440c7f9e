package cluster

import (
	"testing"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

func TestDomainTypeDefaultsToKVMWhenTheHostOffersIt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		configured string
		kvm        bool
		want       string
	}{
		{"a host that offers kvm gets kvm", "", true, "kvm"},
		{"a host without kvm gets qemu", "", false, "qemu"},
		{"a configured type wins over what the host offers", "qemu", true, "qemu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := HostConfig{DomainType: tt.configured}
			if got := h.DomainTypeOn(hypervisor.Host{KVM: tt.kvm}); got != tt.want {
				t.Errorf("DomainTypeOn = %q, want %q", got, tt.want)
			}
		})
	}
}
