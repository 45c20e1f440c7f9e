package placement

import (
	"fmt"
	"slices"
	"strings"
)

// hostState is a host with what the plan has committed on it so far.
type hostState struct {
	*Host // the caller's; the plan never writes to it

	memCap, cpuCap int64
	// mem and cpus are committed: foreign domains and the VMs placed so far.
	mem, cpus int64
	// members holds, per spread group, its members on this host (more than
	// one when the group shares hosts, or when fixed VMs already break the
	// rule). Hosts run VMs of few groups, so a slice beats a map.
	members []member
}

// member is one spread group's VMs on a host: how many, the first by name,
// and all of them, sorted, once there are two (the common case of one
// costs no allocation).
type member struct {
	group string
	n     int
	first string
	all   []string
}

func (m *member) vms() []string {
	if m.n == 1 {
		return []string{m.first}
	}
	return m.all
}

func newHostState(h *Host) hostState {
	return hostState{
		Host:   h,
		memCap: h.MemoryCapacityMiB(),
		cpuCap: h.VCPUCapacity(),
		mem:    h.ForeignMemoryMiB,
		cpus:   int64(h.ForeignVCPUs),
	}
}

// commit books vm on h; trackGroup records its spread group too.
func (h *hostState) commit(vm *VM, trackGroup bool) {
	h.mem += vm.MemoryMiB
	h.cpus += int64(vm.VCPUs)
	if vm.SpreadGroup == "" || !trackGroup {
		return
	}
	for i := range h.members {
		m := &h.members[i]
		if m.group != vm.SpreadGroup {
			continue
		}
		if m.n == 1 {
			m.all = []string{m.first}
		}
		at, _ := slices.BinarySearch(m.all, vm.Name)
		m.all = slices.Insert(m.all, at, vm.Name)
		m.n, m.first = m.n+1, m.all[0]
		return
	}
	h.members = append(h.members, member{group: vm.SpreadGroup, n: 1, first: vm.Name})
}

// count returns how many members of group h runs.
func (h *hostState) count(group string) int {
	for i := range h.members {
		if h.members[i].group == group {
			return h.members[i].n
		}
	}
	return 0
}

// group returns the members of group on h, sorted.
func (h *hostState) group(group string) []string {
	for i := range h.members {
		if h.members[i].group == group {
			return h.members[i].vms()
		}
	}
	return nil
}

// release undoes commit for a VM that the plan moves away again.
func (h *hostState) release(vm *VM) {
	h.mem -= vm.MemoryMiB
	h.cpus -= int64(vm.VCPUs)
	if vm.SpreadGroup == "" {
		return
	}
	for i := range h.members {
		m := &h.members[i]
		if m.group != vm.SpreadGroup {
			continue
		}
		switch {
		case m.n == 1:
			h.members = slices.Delete(h.members, i, i+1)
		default:
			m.all = slices.DeleteFunc(slices.Clone(m.all), func(n string) bool { return n == vm.Name })
			m.n, m.first = len(m.all), m.all[0]
			if m.n == 1 {
				m.all = nil
			}
		}
		return
	}
}

// A check is one feasibility rule. It has one job: tell whether a host can
// take a VM, given what the plan has committed there so far, and if not, why.
// Saying why costs a string, so it is only asked when the reason is shown.
type check interface {
	// name identifies the check in a Rejection.
	name() string
	feasible(h *hostState, vm *VM) bool
	// why says why h cannot take vm, for a host that feasible refused.
	why(h *hostState, vm *VM) string
	// leave is why a VM moves off its current host h when this check
	// refuses it there.
	leave(h *hostState) Reason
}

// checks are run in this order; a host's rejection is the first that fails.
// The pin comes first so that every other host reads "pinned to alpha".
// each holds, per spread group, how many of its VMs one host may take.
func checks(each map[string]int) []check {
	return []check{pinned{}, outOfService{}, domainType{}, spreadGroup{each}, memoryRoom{}, vcpuRoom{}}
}

// pinned keeps a pinned VM to its host.
type pinned struct{}

func (pinned) name() string            { return "pin" }
func (pinned) leave(*hostState) Reason { return PinChanged }
func (pinned) feasible(h *hostState, vm *VM) bool {
	return vm.Host == "" || vm.Host == h.Name
}
func (pinned) why(_ *hostState, vm *VM) string { return "pinned to " + vm.Host }

// outOfService refuses every VM on a host in maintenance or failed.
type outOfService struct{}

func (outOfService) name() string                      { return "out of service" }
func (outOfService) feasible(h *hostState, _ *VM) bool { return h.InService() }
func (outOfService) leave(h *hostState) Reason {
	if h.Failed {
		return HostFailed
	}
	return Maintenance
}
func (outOfService) why(h *hostState, _ *VM) string {
	if h.Failed {
		return "failed"
	}
	return "in maintenance"
}

// domainType refuses a VM that needs a domain type the host does not offer.
type domainType struct{}

func (domainType) name() string            { return "domain type" }
func (domainType) leave(*hostState) Reason { return NoLongerFits }
func (domainType) feasible(h *hostState, vm *VM) bool {
	return vm.DomainType == "" || slices.Contains(h.DomainTypes, vm.DomainType)
}
func (domainType) why(_ *hostState, vm *VM) string {
	return "does not offer domain type " + vm.DomainType
}

// spreadGroup refuses a VM whose spread group already has as many members
// on the host as one host may take: one, unless the group shares hosts
// while hosts are out of service.
type spreadGroup struct{ each map[string]int }

func (spreadGroup) name() string            { return "spread group" }
func (spreadGroup) leave(*hostState) Reason { return SpreadGroup }
func (c spreadGroup) feasible(h *hostState, vm *VM) bool {
	if vm.SpreadGroup == "" {
		return true
	}
	return h.count(vm.SpreadGroup) < max(c.each[vm.SpreadGroup], 1)
}
func (c spreadGroup) why(h *hostState, vm *VM) string {
	others := h.group(vm.SpreadGroup)
	if c.each[vm.SpreadGroup] <= 1 {
		return fmt.Sprintf("runs %q of spread group %q", others[0], vm.SpreadGroup)
	}
	return fmt.Sprintf("runs %d VMs of spread group %q (%s), as many as one host takes while hosts are out of service",
		len(others), vm.SpreadGroup, strings.Join(others, ", "))
}

// memoryRoom refuses a VM whose memory would take the host's commitment past
// its capacity (foreign domains included).
type memoryRoom struct{}

func (memoryRoom) name() string            { return "memory" }
func (memoryRoom) leave(*hostState) Reason { return NoLongerFits }
func (memoryRoom) feasible(h *hostState, vm *VM) bool {
	return vm.MemoryMiB <= h.memCap-h.mem
}
func (memoryRoom) why(h *hostState, vm *VM) string {
	return fmt.Sprintf("%d MiB free, needs %d", max(h.memCap-h.mem, 0), vm.MemoryMiB)
}

// vcpuRoom refuses a VM whose vCPUs would take the host's commitment past its
// capacity (foreign domains included).
type vcpuRoom struct{}

func (vcpuRoom) name() string            { return "vcpus" }
func (vcpuRoom) leave(*hostState) Reason { return NoLongerFits }
func (vcpuRoom) feasible(h *hostState, vm *VM) bool {
	return int64(vm.VCPUs) <= h.cpuCap-h.cpus
}
func (vcpuRoom) why(h *hostState, vm *VM) string {
	return fmt.Sprintf("%d vCPUs free, needs %d", max(h.cpuCap-h.cpus, 0), vm.VCPUs)
}
