package placement

import (
	"fmt"
	"testing"
)

func TestChecks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		check  check
		host   Host
		placed []VM // committed on the host before vm is checked
		vm     VM
		want   string // the rejection; empty when the host can take vm
	}{
		{"pin refuses every other host", pinned{}, host("alpha", 4096), nil, VM{Name: "db", Host: "beta"}, "pinned to beta"},
		{"pin accepts the pinned host", pinned{}, host("alpha", 4096), nil, VM{Name: "db", Host: "alpha"}, ""},
		{"pin accepts any host for an unpinned VM", pinned{}, host("alpha", 4096), nil, VM{Name: "db"}, ""},
		{"maintenance refuses every VM", outOfService{}, inMaintenanceHost("alpha", 4096), nil, vm("db", 0), "in maintenance"},
		{"a failed host refuses every VM", outOfService{}, Host{Name: "alpha", MemoryMiB: 4096, Failed: true}, nil, vm("db", 0), "failed"},
		{"a host in service accepts VMs", outOfService{}, host("alpha", 4096), nil, vm("db", 0), ""},
		{
			"domain type refuses kvm on a qemu-only host", domainType{},
			Host{Name: "alpha", DomainTypes: []string{"qemu"}}, nil, VM{Name: "db", DomainType: "kvm"},
			"does not offer domain type kvm",
		},
		{
			"domain type accepts kvm where it is offered", domainType{},
			Host{Name: "alpha", DomainTypes: []string{"kvm", "qemu"}}, nil, VM{Name: "db", DomainType: "kvm"}, "",
		},
		{"domain type accepts a VM that needs none", domainType{}, Host{Name: "alpha"}, nil, VM{Name: "db"}, ""},
		{
			"spread group refuses a second member", spreadGroup{}, host("alpha", 4096),
			[]VM{{Name: "web2", SpreadGroup: "web"}, {Name: "web1", SpreadGroup: "web"}},
			VM{Name: "web3", SpreadGroup: "web"},
			`runs "web1" of spread group "web"`,
		},
		{
			"a group that shares hosts takes up to its share", spreadGroup{map[string]int{"web": 2}}, host("alpha", 4096),
			[]VM{{Name: "web1", SpreadGroup: "web"}}, VM{Name: "web2", SpreadGroup: "web"}, "",
		},
		{
			"a group that shares hosts is refused past its share", spreadGroup{map[string]int{"web": 2}}, host("alpha", 4096),
			[]VM{{Name: "web2", SpreadGroup: "web"}, {Name: "web1", SpreadGroup: "web"}}, VM{Name: "web3", SpreadGroup: "web"},
			`runs 2 VMs of spread group "web" (web1, web2), as many as one host takes while hosts are out of service`,
		},
		{
			"spread group accepts a member of another group", spreadGroup{}, host("alpha", 4096),
			[]VM{{Name: "db1", SpreadGroup: "db"}}, VM{Name: "web1", SpreadGroup: "web"}, "",
		},
		{
			"memory counts foreign domains and the VMs placed before", memoryRoom{},
			Host{Name: "alpha", MemoryMiB: 8192, ForeignMemoryMiB: 2048}, []VM{vm("mail", 4096)}, vm("db", 3072),
			"2048 MiB free, needs 3072",
		},
		{
			"memory fits exactly", memoryRoom{},
			Host{Name: "alpha", MemoryMiB: 8192, ForeignMemoryMiB: 2048}, []VM{vm("mail", 4096)}, vm("db", 2048), "",
		},
		{
			"memory capacity is total less reserved, times overcommit", memoryRoom{},
			Host{Name: "alpha", MemoryMiB: 4096, ReservedMemoryMiB: 1024, MemoryOvercommit: 2}, nil, vm("db", 6145),
			"6144 MiB free, needs 6145",
		},
		{
			"a host over capacity has nothing free", memoryRoom{},
			Host{Name: "alpha", MemoryMiB: 4096, ForeignMemoryMiB: 5000}, nil, vm("db", 1),
			"0 MiB free, needs 1",
		},
		{
			"vCPU capacity is cpus times overcommit, foreign domains included", vcpuRoom{},
			Host{Name: "alpha", CPUs: 4, CPUOvercommit: 1.5, ForeignVCPUs: 1}, []VM{{Name: "mail", VCPUs: 3}},
			VM{Name: "db", VCPUs: 3},
			"2 vCPUs free, needs 3",
		},
		{
			"vCPUs fit exactly", vcpuRoom{},
			Host{Name: "alpha", CPUs: 4, CPUOvercommit: 1.5, ForeignVCPUs: 1}, []VM{{Name: "mail", VCPUs: 3}},
			VM{Name: "db", VCPUs: 2}, "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHostState(&tt.host)
			for i := range tt.placed {
				h.commit(&tt.placed[i], true)
			}
			var got string
			if !tt.check.feasible(&h, &tt.vm) {
				got = tt.check.why(&h, &tt.vm)
			}
			if got != tt.want {
				t.Errorf("%s check: got %q, want %q", tt.check.name(), got, tt.want)
			}
		})
	}
}

func TestReleaseUndoesCommit(t *testing.T) {
	t.Parallel()
	h := newHostState(&Host{Name: "alpha", MemoryMiB: 4096, CPUs: 4, ForeignMemoryMiB: 512, ForeignVCPUs: 1})
	before := newHostState(h.Host)
	web := VM{Name: "web1", MemoryMiB: 1024, VCPUs: 2, SpreadGroup: "web"}
	h.commit(&web, true)
	h.release(&web)
	if h.mem != before.mem || h.cpus != before.cpus || len(h.members) != 0 {
		t.Errorf("after commit and release: %d MiB, %d vCPUs, groups %v; want %d MiB, %d vCPUs, no groups",
			h.mem, h.cpus, h.members, before.mem, before.cpus)
	}
}

func TestFreeMemoryIsWhatTheMemoryCheckWeighsAgainst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		total, reserved, foreign int64
		vms                      []int64 // on the host
		overcommit               float64
		want                     int64
	}{
		{"an empty host offers all but its reserve", 4096, 512, 0, nil, 1, 3584},
		{"committed memory is taken off", 4096, 512, 512, []int64{512}, 1, 2560},
		{"overcommit multiplies what is left after the reserve", 4096, 512, 1024, nil, 1.5, 4352},
		{"fractions of a MiB are dropped", 1001, 0, 0, nil, 1.5, 1501},
		{"an overcommitted host offers nothing rather than a negative amount", 4096, 512, 8192, nil, 1, 0},
		{"a reserve larger than the host offers nothing", 256, 512, 0, nil, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Cluster{Hosts: []Host{{Name: "alpha", MemoryMiB: tt.total, CPUs: 64, ReservedMemoryMiB: tt.reserved,
				MemoryOvercommit: tt.overcommit, ForeignMemoryMiB: tt.foreign}}}
			for i, m := range tt.vms {
				c.VMs = append(c.VMs, VM{Name: fmt.Sprintf("vm%d", i), MemoryMiB: m, VCPUs: 1, Current: "alpha", Fixed: true})
			}
			free := c.FreeMemoryMiB("alpha")
			if free != tt.want {
				t.Fatalf("FreeMemoryMiB = %d, want %d", free, tt.want)
			}
			// What is free fits, and one MiB more does not.
			for _, extra := range []int64{0, 1} {
				_, err := Place(c, VM{Name: "new", MemoryMiB: free + extra, VCPUs: 1}, Options{})
				if fits := err == nil; fits != (extra == 0 && free > 0) {
					t.Errorf("a VM of %d MiB (free %d): placed %v (%v)", free+extra, free, fits, err)
				}
			}
		})
	}
}
