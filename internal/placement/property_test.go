package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// seeds is how many random clusters each property is checked on. Every seed
// gives the same cluster on every run, so a failure names a seed that
// reproduces it.
const seeds = 3000

var hostNames = []string{"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}

// randomCluster builds a small cluster in every state the engine must
// handle: hosts in maintenance, with foreign domains, with overcommit; VMs
// new and placed, pinned, preferring, spread, on hosts that have gone.
func randomCluster(r *rand.Rand) Cluster {
	var c Cluster
	names := slices.Clone(hostNames)
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	names = names[:1+r.IntN(len(names))]
	for _, name := range names {
		h := Host{
			Name:             name,
			MemoryMiB:        1024 * int64(1+r.IntN(16)),
			CPUs:             2 + r.IntN(15),
			MemoryOvercommit: pick(r, 0.0, 1, 1.25, 1.5, 2),
			CPUOvercommit:    pick(r, 0.0, 1, 2, 4),
			Maintenance:      r.IntN(5) == 0,
			Failed:           r.IntN(10) == 0,
			DomainTypes:      pick(r, []string{"qemu"}, []string{"kvm", "qemu"}),
		}
		h.ReservedMemoryMiB = min(256*int64(r.IntN(5)), h.MemoryMiB)
		if r.IntN(3) == 0 {
			h.ForeignMemoryMiB = 256 * int64(r.IntN(9))
			h.ForeignVCPUs = r.IntN(3)
		}
		c.Hosts = append(c.Hosts, h)
	}
	for i := range r.IntN(3*len(names) + 1) {
		c.VMs = append(c.VMs, randomVM(r, fmt.Sprintf("vm%02d", i), names))
	}
	r.Shuffle(len(c.VMs), func(i, j int) { c.VMs[i], c.VMs[j] = c.VMs[j], c.VMs[i] })
	return c
}

func randomVM(r *rand.Rand, name string, hosts []string) VM {
	vm := VM{
		Name:      name,
		MemoryMiB: 256 * int64(1+r.IntN(12)),
		VCPUs:     1 + r.IntN(4),
		Running:   r.IntN(10) < 7,
	}
	if r.IntN(20) == 0 {
		vm.Host = pick(r, hosts...)
	}
	if r.IntN(10) < 3 {
		vm.PreferredHosts = []string{pick(r, append(slices.Clone(hosts), "gone")...)}
		if r.IntN(2) == 0 {
			vm.PreferredHosts = append(vm.PreferredHosts, pick(r, hosts...))
		}
	}
	if r.IntN(10) < 3 {
		vm.SpreadGroup = pick(r, "web", "db")
	}
	if r.IntN(20) == 0 {
		vm.DomainType = "kvm"
	}
	if r.IntN(10) < 6 {
		vm.Current = pick(r, hosts...)
		if r.IntN(20) == 0 {
			vm.Current = "gone"
		}
		vm.Fixed = r.IntN(20) == 0
	}
	return vm
}

func pick[T any](r *rand.Rand, choices ...T) T { return choices[r.IntN(len(choices))] }

// shuffled returns a copy of c with its hosts and VMs in another order.
func shuffled(r *rand.Rand, c Cluster) Cluster {
	c.Hosts, c.VMs = slices.Clone(c.Hosts), slices.Clone(c.VMs)
	r.Shuffle(len(c.Hosts), func(i, j int) { c.Hosts[i], c.Hosts[j] = c.Hosts[j], c.Hosts[i] })
	r.Shuffle(len(c.VMs), func(i, j int) { c.VMs[i], c.VMs[j] = c.VMs[j], c.VMs[i] })
	return c
}

func TestPlanPropertiesHoldForRandomClusters(t *testing.T) {
	t.Parallel()
	var planned, failed, shared int
	reasons := make(map[Reason]int)
	refusals := make(map[string]int) // by check, or error type
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 1))
		c := randomCluster(r)
		for _, opts := range []Options{{Strategy: Spread}, {Strategy: Pack}, {Strategy: Spread, StrictSpread: true}} {
			res, err := Plan(c, opts)
			again, errAgain := Plan(c, opts)
			other, errOther := Plan(shuffled(r, c), opts)
			if !reflect.DeepEqual(res, again) || fmt.Sprint(err) != fmt.Sprint(errAgain) {
				t.Fatalf("seed %d, %v: two plans of one cluster differ:\n%v %v\n%v %v", seed, opts.Strategy, res, err, again, errAgain)
			}
			if !reflect.DeepEqual(res, other) || fmt.Sprint(err) != fmt.Sprint(errOther) {
				t.Fatalf("seed %d, %v: the plan depends on the order of the input:\n%v %v\n%v %v", seed, opts.Strategy, res, err, other, errOther)
			}
			if err != nil {
				failed++
				var u *Unplaceable
				if errors.As(err, &u) {
					for _, r := range u.Rejections {
						refusals[r.Check]++
					}
				} else {
					refusals[fmt.Sprintf("%T", err)]++
				}
				checkError(t, c, err)
				continue
			}
			planned++
			if len(res.Shared) > 0 {
				shared++
				if opts.StrictSpread {
					t.Errorf("seed %d: strict spread shared hosts: %v", seed, res.Shared)
				}
			}
			for _, a := range res.Assignments {
				reasons[a.Reason]++
			}
			checkInvariants(t, c, res)
			checkStable(t, c, res, opts)
			if t.Failed() {
				t.Fatalf("seed %d, %v: cluster %+v", seed, opts.Strategy, c)
			}
		}
	}
	t.Logf("%d plans made, %d refused", planned, failed)
	// The properties only mean something if the clusters reach every case.
	for _, why := range []Reason{Stays, New, Maintenance, HostFailed, PinChanged, NoLongerFits, SpreadGroup, HostRemoved, Failback} {
		if reasons[why] == 0 {
			t.Errorf("no random cluster gave an assignment for %q", why)
		}
	}
	for _, check := range checks(nil) {
		if refusals[check.name()] == 0 {
			t.Errorf("no random cluster had a host refused by the %s check", check.name())
		}
	}
	t.Logf("reasons %v, refusals %v, %d plans with groups sharing hosts", reasons, refusals, shared)
	if shared == 0 {
		t.Error("no random cluster had a spread group sharing hosts")
	}
	if planned < failed {
		t.Errorf("%d plans made, %d refused: the random clusters are too hard to test much", planned, failed)
	}
}

func TestPlaceAgreesWithPlan(t *testing.T) {
	t.Parallel()
	for seed := range uint64(seeds) {
		r := rand.New(rand.NewPCG(seed, 2))
		c := randomCluster(r)
		res, err := Plan(c, Options{})
		if err != nil {
			continue
		}
		// The cluster once the plan is applied, and one more VM for it.
		after := Cluster{Hosts: c.Hosts}
		for _, vm := range c.VMs {
			a, _ := res.Lookup(vm.Name)
			vm.Current, vm.Fixed = a.Host, true
			after.VMs = append(after.VMs, vm)
		}
		var names []string
		for _, h := range c.Hosts {
			names = append(names, h.Name)
		}
		extra := randomVM(r, "extra", names)
		extra.Fixed = false

		got, err := Place(after, extra, Options{})
		planned, planErr := Plan(Cluster{Hosts: after.Hosts, VMs: append(slices.Clone(after.VMs), extra)}, Options{})
		want, _ := planned.Lookup(extra.Name)
		if got != want || fmt.Sprint(err) != fmt.Sprint(planErr) {
			t.Fatalf("seed %d: Place gives %v, %v; Plan with the others fixed gives %v, %v", seed, got, err, want, planErr)
		}
	}
}

// checkInvariants fails t for any invariant of DESIGN.md that res breaks,
// and for any move without the reason it gives.
func checkInvariants(t *testing.T, c Cluster, res Result) {
	t.Helper()
	hosts := make(map[string]Host)
	for _, h := range c.Hosts {
		hosts[h.Name] = h
	}
	vms := make(map[string]VM)
	for _, vm := range c.VMs {
		vms[vm.Name] = vm
	}
	if len(res.Assignments) != len(c.VMs) {
		t.Errorf("%d assignments for %d VMs", len(res.Assignments), len(c.VMs))
	}
	if !slices.IsSortedFunc(res.Assignments, func(a, b Assignment) int { return strings.Compare(a.VM, b.VM) }) {
		t.Errorf("assignments are not sorted by VM name")
	}
	onHost := make(map[string][]VM)
	movableOn := make(map[string]bool)
	for _, a := range res.Assignments {
		vm, ok := vms[a.VM]
		if !ok {
			t.Errorf("assignment of an unknown VM: %v", a)
			continue
		}
		onHost[a.Host] = append(onHost[a.Host], vm)
		if a.From != vm.Current {
			t.Errorf("%v: from %q, but the VM is on %q", a, a.From, vm.Current)
		}
		if a.Live != (vm.Running && a.Moves()) {
			t.Errorf("%v: live %v for a VM running %v", a, a.Live, vm.Running)
		}
		if vm.Fixed {
			if a.Host != vm.Current || a.Reason != Stays {
				t.Errorf("fixed VM: %v", a)
			}
			continue
		}
		movableOn[a.Host] = true
		h, ok := hosts[a.Host]
		switch {
		case !ok:
			t.Errorf("%v: no such host", a)
		case !h.InService():
			t.Errorf("%v: the host is out of service", a)
		case vm.Host != "" && a.Host != vm.Host:
			t.Errorf("%v: the VM is pinned to %s", a, vm.Host)
		case vm.DomainType != "" && !slices.Contains(h.DomainTypes, vm.DomainType):
			t.Errorf("%v: the host does not offer %s", a, vm.DomainType)
		}
		switch {
		case vm.Current == "" && a.Reason != New:
			t.Errorf("%v: a new VM with reason %q", a, a.Reason)
		case vm.Current != "" && a.Moves() == (a.Reason == Stays):
			t.Errorf("%v: moves %v with reason %q", a, a.Moves(), a.Reason)
		}
	}
	for name, on := range onHost {
		h, ok := hosts[name]
		if !ok || !movableOn[name] {
			continue // only fixed VMs: the plan put nothing there
		}
		mem, cpus := h.ForeignMemoryMiB, int64(h.ForeignVCPUs)
		for _, vm := range on {
			mem += vm.MemoryMiB
			cpus += int64(vm.VCPUs)
		}
		if mem > h.MemoryCapacityMiB() {
			t.Errorf("host %s: %d MiB committed, capacity %d", name, mem, h.MemoryCapacityMiB())
		}
		if cpus > h.VCPUCapacity() {
			t.Errorf("host %s: %d vCPUs committed, capacity %d", name, cpus, h.VCPUCapacity())
		}
		members, movable := make(map[string]int), make(map[string]int)
		for _, vm := range on {
			if vm.SpreadGroup != "" {
				members[vm.SpreadGroup]++
				if !vm.Fixed {
					movable[vm.SpreadGroup]++
				}
			}
		}
		for g, n := range members {
			if movable[g] > 0 && n > each(c, g) {
				t.Errorf("host %s: %d VMs of spread group %q, at most %d may share it", name, n, g, each(c, g))
			}
		}
	}
	checkMovesAreJustified(t, c, res, hosts, vms)
}

// checkMovesAreJustified checks stickiness: a VM that leaves its host could
// not have stayed, for the reason its assignment gives.
func checkMovesAreJustified(t *testing.T, c Cluster, res Result, hosts map[string]Host, vms map[string]VM) {
	t.Helper()
	// stayers are, per host, the VMs that were there when the plan began and
	// held on to it, at least until they failed back: a superset of what
	// any leaving VM was weighed against.
	stayers := make(map[string][]VM)
	for _, a := range res.Assignments {
		if a.From != "" && (a.Host == a.From || a.Reason == Failback) {
			stayers[a.From] = append(stayers[a.From], vms[a.VM])
		}
	}
	for _, a := range res.Assignments {
		vm := vms[a.VM]
		if !a.Moves() {
			continue
		}
		h, known := hosts[a.From]
		var justified bool
		switch a.Reason {
		case Maintenance:
			justified = known && h.Maintenance
		case HostFailed:
			justified = known && h.Failed
		case PinChanged:
			justified = vm.Host != "" && vm.Host != a.From
		case HostRemoved:
			justified = !known
		case Failback:
			justified = !slices.Contains(vm.PreferredHosts, a.From) && slices.Contains(vm.PreferredHosts, a.Host)
		case SpreadGroup:
			others := 0
			for _, other := range stayers[a.From] {
				if other.Name != vm.Name && other.SpreadGroup == vm.SpreadGroup {
					others++
				}
			}
			justified = others >= each(c, vm.SpreadGroup)
		case NoLongerFits:
			mem, cpus := h.ForeignMemoryMiB+vm.MemoryMiB, int64(h.ForeignVCPUs+vm.VCPUs)
			for _, other := range stayers[a.From] {
				mem += other.MemoryMiB
				cpus += int64(other.VCPUs)
			}
			justified = known && (mem > h.MemoryCapacityMiB() || cpus > h.VCPUCapacity() ||
				vm.DomainType != "" && !slices.Contains(h.DomainTypes, vm.DomainType))
		}
		if !justified {
			t.Errorf("%v: the VM could have stayed", a)
		}
	}
}

// each is how many VMs of group one host may take in c, worked out from
// DESIGN.md's invariant 3 rather than from the engine: one while the group
// has no more VMs than there are hosts in service, else as few as spread
// them over the hosts in service.
func each(c Cluster, group string) int {
	n, k := 0, 0
	for _, vm := range c.VMs {
		if vm.SpreadGroup == group {
			n++
		}
	}
	for _, h := range c.Hosts {
		if h.InService() {
			k++
		}
	}
	if n <= k || k == 0 {
		return 1
	}
	return (n + k - 1) / k
}

// checkStable checks that planning again once the moves are made moves
// nothing: a Terraform apply followed by a plan shows no changes.
func checkStable(t *testing.T, c Cluster, res Result, opts Options) {
	t.Helper()
	after := Cluster{Hosts: c.Hosts}
	for _, vm := range c.VMs {
		a, _ := res.Lookup(vm.Name)
		vm.Current = a.Host
		after.VMs = append(after.VMs, vm)
	}
	again, err := Plan(after, opts)
	if err != nil {
		t.Errorf("planning after the moves: %v", err)
		return
	}
	if moves := again.Moves(); len(moves) > 0 {
		t.Errorf("planning after the moves moves again: %v", moves)
	}
}

// checkError fails t unless every error joined in err names a VM of c with
// every host's reason, or a spread group of c that is too large.
func checkError(t *testing.T, c Cluster, err error) {
	t.Helper()
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	for _, err := range errs {
		var unplaceable *Unplaceable
		var unspreadable *Unspreadable
		switch {
		case errors.As(err, &unplaceable):
			if !slices.ContainsFunc(c.VMs, func(vm VM) bool { return vm.Name == unplaceable.VM }) {
				t.Errorf("%v: no such VM", err)
			}
			var hosts []string
			for _, r := range unplaceable.Rejections {
				hosts = append(hosts, r.Host)
				if r.Reason == "" || r.Check == "" {
					t.Errorf("%v: a rejection without a reason: %+v", err, r)
				}
			}
			var want []string
			for _, h := range c.Hosts {
				want = append(want, h.Name)
			}
			slices.Sort(want)
			if !slices.Equal(hosts, want) {
				t.Errorf("%v: rejections from hosts %q, want %q", err, hosts, want)
			}
		case errors.As(err, &unspreadable):
			n := 0
			for _, vm := range c.VMs {
				if vm.SpreadGroup == unspreadable.Group {
					n++
				}
			}
			if n != len(unspreadable.VMs) || n <= len(unspreadable.Hosts) {
				t.Errorf("%v: the group has %d VMs", err, n)
			}
		default:
			t.Errorf("error %q names neither a VM nor a spread group", err)
		}
	}
}
