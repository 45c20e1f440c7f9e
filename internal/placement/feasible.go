package placement

import (
	"fmt"
	"slices"
)

// hostState is a host with what the plan has committed on it so far.
type hostState struct {
	*Host // the caller's; the plan never writes to it

	memCap, cpuCap int64
	// mem and cpus are committed: foreign domains and the VMs placed so far.
	mem, cpus int64
	// members holds, per spread group, its member on this host (the first
	// by name if fixed VMs already break the rule). Hosts run VMs of few
	// groups, so a slice beats a map.
	members []member
}

type member struct{ group, vm string }

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
	for i, m := range h.members {
		if m.group == vm.SpreadGroup {
			if vm.Name < m.vm {
				h.members[i].vm = vm.Name
			}
			return
		}
	}
	h.members = append(h.members, member{vm.SpreadGroup, vm.Name})
}

// member returns the member of group on h, if any.
func (h *hostState) member(group string) (vm string, ok bool) {
	for _, m := range h.members {
		if m.group == group {
			return m.vm, true
		}
	}
	return "", false
}

// release undoes commit for a VM that the plan moves away again. Only VMs
// that passed every check are released, so the VM is its group's only
// member here.
func (h *hostState) release(vm *VM) {
	h.mem -= vm.MemoryMiB
	h.cpus -= int64(vm.VCPUs)
	if vm.SpreadGroup != "" {
		h.members = slices.DeleteFunc(h.members, func(m member) bool { return m.group == vm.SpreadGroup })
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
	// leave is why a VM moves off its current host when this check refuses it.
	leave() Reason
}

// checks are run in this order; a host's rejection is the first that fails.
// The pin comes first so that every other host reads "pinned to alpha".
func checks() []check {
	return []check{pinned{}, inMaintenance{}, domainType{}, spreadGroup{}, memoryRoom{}, vcpuRoom{}}
}

// pinned keeps a pinned VM to its host.
type pinned struct{}

func (pinned) name() string  { return "pin" }
func (pinned) leave() Reason { return PinChanged }
func (pinned) feasible(h *hostState, vm *VM) bool {
	return vm.Host == "" || vm.Host == h.Name
}
func (pinned) why(_ *hostState, vm *VM) string { return "pinned to " + vm.Host }

// inMaintenance refuses every VM on a host in maintenance.
type inMaintenance struct{}

func (inMaintenance) name() string                      { return "maintenance" }
func (inMaintenance) leave() Reason                     { return Maintenance }
func (inMaintenance) feasible(h *hostState, _ *VM) bool { return !h.Maintenance }
func (inMaintenance) why(*hostState, *VM) string        { return "in maintenance" }

// domainType refuses a VM that needs a domain type the host does not offer.
type domainType struct{}

func (domainType) name() string  { return "domain type" }
func (domainType) leave() Reason { return NoLongerFits }
func (domainType) feasible(h *hostState, vm *VM) bool {
	return vm.DomainType == "" || slices.Contains(h.DomainTypes, vm.DomainType)
}
func (domainType) why(_ *hostState, vm *VM) string {
	return "does not offer domain type " + vm.DomainType
}

// spreadGroup refuses a VM whose spread group already has a member on the host.
type spreadGroup struct{}

func (spreadGroup) name() string  { return "spread group" }
func (spreadGroup) leave() Reason { return SpreadGroup }
func (spreadGroup) feasible(h *hostState, vm *VM) bool {
	if vm.SpreadGroup == "" {
		return true
	}
	_, taken := h.member(vm.SpreadGroup)
	return !taken
}
func (spreadGroup) why(h *hostState, vm *VM) string {
	other, _ := h.member(vm.SpreadGroup)
	return fmt.Sprintf("runs %q of spread group %q", other, vm.SpreadGroup)
}

// memoryRoom refuses a VM whose memory would take the host's commitment past
// its capacity (foreign domains included).
type memoryRoom struct{}

func (memoryRoom) name() string  { return "memory" }
func (memoryRoom) leave() Reason { return NoLongerFits }
func (memoryRoom) feasible(h *hostState, vm *VM) bool {
	return vm.MemoryMiB <= h.memCap-h.mem
}
func (memoryRoom) why(h *hostState, vm *VM) string {
	return fmt.Sprintf("%d MiB free, needs %d", max(h.memCap-h.mem, 0), vm.MemoryMiB)
}

// vcpuRoom refuses a VM whose vCPUs would take the host's commitment past its
// capacity (foreign domains included).
type vcpuRoom struct{}

func (vcpuRoom) name() string  { return "vcpus" }
func (vcpuRoom) leave() Reason { return NoLongerFits }
func (vcpuRoom) feasible(h *hostState, vm *VM) bool {
	return int64(vm.VCPUs) <= h.cpuCap-h.cpus
}
func (vcpuRoom) why(h *hostState, vm *VM) string {
	return fmt.Sprintf("%d vCPUs free, needs %d", max(h.cpuCap-h.cpus, 0), vm.VCPUs)
}
