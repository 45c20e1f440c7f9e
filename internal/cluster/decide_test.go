package cluster

import (
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

// testVM is a Drover VM of 1024 MiB on a host of a test cluster.
type testVM struct {
	name    string
	place   hypervisor.Placement
	stopped bool
}

// testHost is a host of 4096 MiB (3584 for VMs) with the VMs on it.
func testHost(name string, maintenance bool, vms ...testVM) HostView {
	h := HostView{
		Config: HostConfig{Name: name, Maintenance: maintenance, ReservedMemoryMiB: 512, MemoryOvercommit: 1,
			CPUOvercommit: 4, DomainType: "qemu"},
		Facts: hypervisor.Host{MemoryMiB: 4096, CPUs: 2},
		VMs:   map[string]hypervisor.VM{},
	}
	for _, vm := range vms {
		state := hypervisor.StateRunning
		if vm.stopped {
			state = hypervisor.StateShutOff
		}
		h.Facts.Domains = append(h.Facts.Domains, hypervisor.Domain{Name: vm.name, UUID: "uuid-" + vm.name, MaxMemoryMiB: 1024, VCPUs: 1, State: state})
		h.VMs[vm.name] = hypervisor.VM{Name: vm.name, MemoryMiB: 1024, MaxMemoryMiB: 1024, VCPUs: 1, Managed: true,
			Placement: vm.place}
	}
	return h
}

// failedHost is h declared failed.
func failedHost(h HostView) HostView {
	h.Config.Failed = true
	return h
}

func TestPlanPlacement(t *testing.T) {
	t.Parallel()
	web := hypervisor.Placement{SpreadGroup: "web"}
	preferAlpha := hypervisor.Placement{PreferredHosts: []string{"alpha"}}
	tests := []struct {
		name    string
		view    View
		vm      hypervisor.VM // the planned settings of the VM
		want    placement.Assignment
		wantErr string
		unknown bool // the VM is on no host that answered
		strict  bool // placement.strict_spread
	}{
		{
			name: "a VM with nothing to change stays where it is",
			view: View{Hosts: []HostView{testHost("alpha", false, testVM{name: "a"}), testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1},
			want: placement.Assignment{VM: "a", Host: "alpha", From: "alpha", Reason: placement.Stays},
		},
		{
			name: "a VM on a host in maintenance moves live to the other host",
			view: View{Hosts: []HostView{testHost("alpha", true, testVM{name: "a"}), testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1},
			want: placement.Assignment{VM: "a", Host: "beta", From: "alpha", Reason: placement.Maintenance, Live: true},
		},
		{
			name: "a stopped VM on a host in maintenance moves cold",
			view: View{Hosts: []HostView{testHost("alpha", true, testVM{name: "a", stopped: true}), testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1},
			want: placement.Assignment{VM: "a", Host: "beta", From: "alpha", Reason: placement.Maintenance},
		},
		{
			name: "a changed pin moves the VM to the pinned host",
			view: View{Hosts: []HostView{testHost("alpha", false, testVM{name: "a"}), testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1, Placement: hypervisor.Placement{Host: "beta"}},
			want: placement.Assignment{VM: "a", Host: "beta", From: "alpha", Reason: placement.PinChanged, Live: true},
		},
		{
			name: "a VM off its preferred host fails back when that host is out of maintenance",
			view: View{Hosts: []HostView{testHost("alpha", false), testHost("beta", false, testVM{name: "a", place: preferAlpha})}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1, Placement: preferAlpha},
			want: placement.Assignment{VM: "a", Host: "alpha", From: "beta", Reason: placement.Failback, Live: true},
		},
		{
			name: "a VM off its preferred host stays while that host is in maintenance",
			view: View{Hosts: []HostView{testHost("alpha", true), testHost("beta", false, testVM{name: "a", place: preferAlpha})}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1, Placement: preferAlpha},
			want: placement.Assignment{VM: "a", Host: "beta", From: "beta", Reason: placement.Stays},
		},
		{
			name: "a VM that grows past its host's room moves to a host with room",
			view: View{Hosts: []HostView{
				testHost("alpha", false, testVM{name: "a"}, testVM{name: "b", place: hypervisor.Placement{Host: "alpha"}}),
				testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, MaxMemoryMiB: 3072, VCPUs: 1},
			want: placement.Assignment{VM: "a", Host: "beta", From: "alpha", Reason: placement.NoLongerFits, Live: true},
		},
		{
			name: "maintenance with a spread group of two on two hosts is refused, naming the group",
			view: View{Hosts: []HostView{
				testHost("alpha", true, testVM{name: "web1", place: web}),
				testHost("beta", false, testVM{name: "web2", place: web})}},
			vm:      hypervisor.VM{Name: "web1", MemoryMiB: 1024, VCPUs: 1, Placement: web},
			strict:  true,
			wantErr: `spread group "web" has 2 VMs (web1, web2) but only 1 host in service (beta; out of service: alpha), and placement.strict_spread = true`,
		},
		{
			name: "maintenance with a spread group of two on two hosts shares the host left",
			view: View{Hosts: []HostView{
				testHost("alpha", true, testVM{name: "web1", place: web}),
				testHost("beta", false, testVM{name: "web2", place: web})}},
			vm:   hypervisor.VM{Name: "web1", MemoryMiB: 1024, VCPUs: 1, Placement: web},
			want: placement.Assignment{VM: "web1", Host: "beta", From: "alpha", Reason: placement.Maintenance, Live: true},
		},
		{
			name: "a spread group larger than the cluster is refused while every host is in service",
			view: View{Hosts: []HostView{
				testHost("alpha", false, testVM{name: "web1", place: web}, testVM{name: "web3", place: web}),
				testHost("beta", false, testVM{name: "web2", place: web})}},
			vm:      hypervisor.VM{Name: "web1", MemoryMiB: 1024, VCPUs: 1, Placement: web},
			wantErr: `spread group "web" has 3 VMs (web1, web2, web3) but the cluster has only 2 hosts (alpha, beta), all in service`,
		},
		{
			name: "a VM of a failed host restarts cold on a host in service",
			view: View{Hosts: []HostView{
				failedHost(testHost("alpha", false, testVM{name: "a"})),
				testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1},
			want: placement.Assignment{VM: "a", Host: "beta", From: "alpha", Reason: placement.HostFailed},
		},
		{
			name: "a VM pinned to a failed host stays there, down",
			view: View{Hosts: []HostView{
				failedHost(testHost("alpha", false, testVM{name: "a", place: hypervisor.Placement{Host: "alpha"}})),
				testHost("beta", false)}},
			vm:   hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1, Placement: hypervisor.Placement{Host: "alpha"}},
			want: placement.Assignment{VM: "a", Host: "alpha", From: "alpha", Reason: placement.Stays},
		},
		{
			name: "maintenance with no room elsewhere is refused, naming every host's reason",
			view: View{Hosts: []HostView{
				testHost("alpha", true, testVM{name: "a"}),
				testHost("beta", false, testVM{name: "b1"}, testVM{name: "b2"}, testVM{name: "b3"})}},
			vm:      hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1},
			wantErr: `alpha: in maintenance; beta:`,
		},
		{
			name:    "a VM on no host that answered is not decided",
			view:    View{Hosts: []HostView{testHost("alpha", false), testHost("beta", false)}},
			vm:      hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1},
			unknown: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.view.PlanMove(tt.vm, placement.Options{StrictSpread: tt.strict})
			switch {
			case tt.wantErr != "":
				if err == nil || !strings.Contains(ExplainPlacement(err, ""), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatalf("got error %v, want %+v", err, tt.want)
			case got.Found == tt.unknown:
				t.Fatalf("got found %v, want %v", got.Found, !tt.unknown)
			case !tt.unknown && got.Assignment.String() != tt.want.String():
				t.Errorf("got %q, want %q", got.Assignment, tt.want)
			case got.Live != tt.want.Live:
				t.Errorf("got live %v, want %v", got.Live, tt.want.Live)
			}
		})
	}
}

func TestMoveWarningSaysWhyAndWhere(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		a    placement.Assignment
		want []string
	}{
		{
			name: "maintenance names the host and the expected destination",
			a:    placement.Assignment{VM: "web1", Host: "beta", From: "alpha", Reason: placement.Maintenance, Live: true},
			want: []string{"VM web1 moves from alpha", "live migration", "its host alpha is in maintenance",
				"expected to go to beta", "known after apply"},
		},
		{
			name: "a pin names its host as the destination",
			a:    placement.Assignment{VM: "db", Host: "alpha", From: "beta", Reason: placement.PinChanged},
			want: []string{"cold move", "placement.host now pins it to alpha", "It goes to alpha."},
		},
		{
			name: "failback names the preferred host",
			a:    placement.Assignment{VM: "mail", Host: "alpha", From: "beta", Reason: placement.Failback, Live: true},
			want: []string{"its preferred host alpha can take it again"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Move{Assignment: tt.a}.Warning("")
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("got %q, want it to contain %q", got, w)
				}
			}
		})
	}
}

func TestPlanPlacementRefusesAVMDefinedOnTwoHosts(t *testing.T) {
	t.Parallel()
	alpha, beta := testHost("alpha", false, testVM{name: "a"}), testHost("beta", false, testVM{name: "a"})
	alpha.Facts.Domains[0].UUID, beta.Facts.Domains[0].UUID = "1234-5678", "1234-5678"
	_, err := View{Hosts: []HostView{alpha, beta}}.PlanMove(hypervisor.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1}, placement.Options{})
	want := "VM 1234-5678 is defined on alpha and beta: a VM may be defined on one host only (domain a)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error containing %q", err, want)
	}
}
