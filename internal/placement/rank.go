package placement

// maxScore is the best score a ranker gives (as in the Kubernetes scheduler).
const maxScore = 100

// A ranker scores a feasible host for a VM from 0 to maxScore; higher is better.
type ranker interface {
	score(h *hostState, vm *VM) int64
}

// weighted is a ranker and how much its score counts in the sum.
type weighted struct {
	ranker
	weight int64
}

// rankers returns the ranking for a strategy. The preferred-host ranker
// weighs more than the best load score, so a preferred host always wins over
// a less preferred one and load decides between equals.
func rankers(s Strategy) []weighted {
	var load ranker = leastCommitted{}
	if s == Pack {
		load = mostCommitted{}
	}
	return []weighted{
		{preferred{}, maxScore + 1},
		{load, 1},
	}
}

// committedShare is the share of the host's capacity, 0 to maxScore, that
// would be committed with vm on it: the mean of the memory and vCPU shares.
func committedShare(h *hostState, vm *VM) int64 {
	return (share(h.mem+vm.MemoryMiB, h.memCap) + share(h.cpus+int64(vm.VCPUs), h.cpuCap)) / 2
}

func share(used, capacity int64) int64 {
	if capacity <= 0 {
		return maxScore
	}
	return min(max(used*maxScore/capacity, 0), maxScore)
}

// leastCommitted favours the host with the most room left: spreading.
type leastCommitted struct{}

func (leastCommitted) score(h *hostState, vm *VM) int64 { return maxScore - committedShare(h, vm) }

// mostCommitted favours the fullest host that still fits: packing.
type mostCommitted struct{}

func (mostCommitted) score(h *hostState, vm *VM) int64 { return committedShare(h, vm) }

// preferred favours the VM's preferred hosts, the first the most: position i
// of n scores maxScore × (n − i) / n, a host not in the list 0.
type preferred struct{}

func (preferred) score(h *hostState, vm *VM) int64 {
	n := int64(len(vm.PreferredHosts))
	for i, name := range vm.PreferredHosts {
		if name == h.Name {
			return maxScore * (n - int64(i)) / n
		}
	}
	return 0
}
