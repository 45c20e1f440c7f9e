package placement_test

import (
	"errors"
	"fmt"

	"github.com/drover/terraform-provider-drover/internal/placement"
)

// Alpha goes into maintenance for a RAM upgrade: Plan moves its VMs to beta
// and places a new one, before anything is touched.
func ExamplePlan() {
	c := placement.Cluster{
		Hosts: []placement.Host{
			{Name: "alpha", MemoryMiB: 16384, CPUs: 8, ReservedMemoryMiB: 512, CPUOvercommit: 4, Maintenance: true},
			{Name: "beta", MemoryMiB: 16384, CPUs: 8, ReservedMemoryMiB: 512, CPUOvercommit: 4},
			{Name: "gamma", MemoryMiB: 8192, CPUs: 4, ReservedMemoryMiB: 512, CPUOvercommit: 4},
		},
		VMs: []placement.VM{
			{Name: "web1", MemoryMiB: 1024, VCPUs: 1, SpreadGroup: "web", PreferredHosts: []string{"alpha"}, Current: "alpha", Running: true},
			{Name: "web2", MemoryMiB: 1024, VCPUs: 1, SpreadGroup: "web", Current: "beta", Running: true},
			{Name: "mail", MemoryMiB: 2048, VCPUs: 2, Current: "alpha", Running: true},
			{Name: "db", MemoryMiB: 4096, VCPUs: 2},
		},
	}
	res, err := placement.Plan(c, placement.Options{Strategy: placement.Spread})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range res.Assignments {
		fmt.Println(a)
	}
	fmt.Println(len(res.Moves()), "moves")
	// Output:
	// db goes to beta (new)
	// mail moves from alpha to gamma (maintenance)
	// web1 moves from alpha to gamma (maintenance)
	// web2 stays on beta
	// 2 moves
}

// Place answers for one VM; an *Unplaceable carries every host's reason.
func ExamplePlace() {
	c := placement.Cluster{
		Hosts: []placement.Host{
			{Name: "alpha", MemoryMiB: 4096, CPUs: 4, Maintenance: true},
			{Name: "beta", MemoryMiB: 4096, CPUs: 4, ReservedMemoryMiB: 512, ForeignMemoryMiB: 3072},
		},
	}
	_, err := placement.Place(c, placement.VM{Name: "db2", MemoryMiB: 2048, VCPUs: 1}, placement.Options{})
	fmt.Println(err)
	var u *placement.Unplaceable
	if errors.As(err, &u) {
		for _, r := range u.Rejections {
			fmt.Printf("%s refused by the %s check\n", r.Host, r.Check)
		}
	}
	// Output:
	// place vm "db2": alpha: in maintenance; beta: 512 MiB free, needs 2048
	// alpha refused by the out of service check
	// beta refused by the memory check
}
