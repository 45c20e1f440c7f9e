package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// bigCluster is hosts hosts with vmsPerHost VMs each, already placed. Every
// tenth host runs a member of each of ten spread groups.
func bigCluster(hosts, vmsPerHost int) Cluster {
	r := rand.New(rand.NewPCG(1, 1))
	var c Cluster
	for i := range hosts {
		c.Hosts = append(c.Hosts, Host{
			Name:              fmt.Sprintf("host-%04d", i),
			MemoryMiB:         512 * 1024,
			CPUs:              128,
			ReservedMemoryMiB: 1024,
			CPUOvercommit:     4,
			DomainTypes:       []string{"kvm", "qemu"},
			ForeignMemoryMiB:  1024 * int64(r.IntN(4)),
		})
	}
	for i := range hosts * vmsPerHost {
		vm := VM{
			Name:      fmt.Sprintf("vm-%05d", i),
			MemoryMiB: 1024 * int64(1+r.IntN(4)),
			VCPUs:     1 + r.IntN(4),
			Current:   c.Hosts[i%hosts].Name,
			Running:   true,
		}
		if block, host := i/hosts, i%hosts; block < 10 && host%10 == 0 {
			vm.SpreadGroup = fmt.Sprintf("group-%d", block)
		}
		c.VMs = append(c.VMs, vm)
	}
	return c
}

// BenchmarkPlaceOneVMIn1000HostsAnd10000VMs is the provider planning one new
// VM in a large cluster. Goal: ≤ 1 ms/op.
func BenchmarkPlaceOneVMIn1000HostsAnd10000VMs(b *testing.B) {
	c := bigCluster(1000, 10)
	vm := VM{Name: "new", MemoryMiB: 4096, VCPUs: 2, SpreadGroup: "group-3", PreferredHosts: []string{"host-0500"}, DomainType: "kvm"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Place(c, vm, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, c)
}

// BenchmarkPlanEvacuationOf200VMs plans moving every VM off a host in
// maintenance that runs 200 VMs, in a cluster of 11 hosts and 1,200 VMs.
// Goal: ≤ 20 ms/op.
func BenchmarkPlanEvacuationOf200VMs(b *testing.B) {
	c := bigCluster(10, 100)
	c.Hosts = append(c.Hosts, Host{Name: "host-evacuated", MemoryMiB: 1024 * 1024, CPUs: 256, CPUOvercommit: 4, Maintenance: true})
	for i := range 200 {
		c.VMs = append(c.VMs, VM{Name: fmt.Sprintf("evacuee-%03d", i), MemoryMiB: 2048, VCPUs: 2, Current: "host-evacuated", Running: true})
	}
	res, err := Plan(c, Options{})
	if err != nil {
		b.Fatal(err)
	}
	if n := len(res.Moves()); n != 200 {
		b.Fatalf("%d moves, want 200", n)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Plan(c, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, c)
}

// reportRatio reports the time per op as a multiple of a baseline measured
// in the same run: reading the cluster once — index the hosts by name, add
// up each host's VMs — which no placement can skip. On a machine shared with
// other work the ratio moves less than the time.
func reportRatio(b *testing.B, c Cluster) {
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	var runs int
	start := time.Now()
	for ; time.Since(start) < 200*time.Millisecond; runs++ {
		index := make(map[string]int, len(c.Hosts))
		for i, h := range c.Hosts {
			index[h.Name] = i
		}
		committed := make([]int64, len(c.Hosts))
		for _, vm := range c.VMs {
			if i, ok := index[vm.Current]; ok {
				committed[i] += vm.MemoryMiB
			}
		}
	}
	baseline := float64(time.Since(start).Nanoseconds()) / float64(runs)
	b.ReportMetric(perOp/baseline, "x-baseline")
}
