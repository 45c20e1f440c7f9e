package cluster

import (
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

func TestCheckMemoryFitsNamesWhatEachHostHolds(t *testing.T) {
	t.Parallel()
	view := View{Hosts: []HostView{
		{Config: HostConfig{Name: "alpha", ReservedMemoryMiB: 512, MemoryOvercommit: 1}, Facts: hypervisor.Host{MemoryMiB: 4096}},
		{Config: HostConfig{Name: "beta", ReservedMemoryMiB: 512, MemoryOvercommit: 1.5}, Facts: hypervisor.Host{MemoryMiB: 2048}},
	}}
	if err := view.CheckMemoryFits(3584); err != nil {
		t.Errorf("3584 MiB on alpha's 3584: got %v, want it to fit", err)
	}
	err := view.CheckMemoryFits(8192)
	want := "8192 MiB is more than any host can hold (alpha: at most 3584 MiB; beta: at most 2304 MiB)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestChooseHostPinsAndSpreads(t *testing.T) {
	t.Parallel()
	host := func(name string, vms ...string) HostView {
		h := HostView{
			Config: HostConfig{Name: name, ReservedMemoryMiB: 512, MemoryOvercommit: 1, CPUOvercommit: 4, DomainType: "qemu"},
			Facts:  hypervisor.Host{MemoryMiB: 4096, CPUs: 2},
			VMs:    map[string]hypervisor.VM{},
		}
		for _, vm := range vms {
			h.Facts.Domains = append(h.Facts.Domains, hypervisor.Domain{Name: vm, MaxMemoryMiB: 1024, VCPUs: 1, State: hypervisor.StateRunning})
			h.VMs[vm] = hypervisor.VM{Name: vm, MemoryMiB: 1024, VCPUs: 1, Managed: true,
				Placement: hypervisor.Placement{SpreadGroup: "web"}}
		}
		return h
	}
	view := View{Hosts: []HostView{host("alpha", "web1"), host("beta")}}
	vm := hypervisor.VM{Name: "web2", MemoryMiB: 512, VCPUs: 1}

	if got, err := view.ChooseHost(vm, placement.Options{Strategy: placement.Spread}); err != nil || got != "beta" {
		t.Errorf("unpinned: got %q, %v; want beta, the emptier host", got, err)
	}
	vm.Placement.Host = "alpha"
	if got, err := view.ChooseHost(vm, placement.Options{Strategy: placement.Spread}); err != nil || got != "alpha" {
		t.Errorf("pinned to alpha: got %q, %v; want alpha", got, err)
	}
	vm.Placement = hypervisor.Placement{Host: "alpha", SpreadGroup: "web"}
	if _, err := view.ChooseHost(vm, placement.Options{Strategy: placement.Spread}); err == nil {
		t.Error("pinned next to a VM of its spread group: got no error")
	}
	vm.Placement = hypervisor.Placement{Host: "gamma"}
	if _, err := view.ChooseHost(vm, placement.Options{Strategy: placement.Spread}); err == nil || !strings.Contains(err.Error(), "the hosts are alpha, beta") {
		t.Errorf("pinned to an unknown host: got %v, want the hosts named", err)
	}
}
