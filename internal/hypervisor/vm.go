package hypervisor

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// VM is a Drover VM as libvirt runs it: the one spec the provider converts
// its model to, and the one it reads back from a host. Its domain has disks
// on the storage box (iSCSI network disks opened by QEMU itself), an
// optional cloud-init seed on the storage box too (a read-only CD-ROM), and
// Drover's own facts in the domain's <metadata>.
type VM struct {
	Name string
	UUID string // optional when defining: libvirt makes one up
	Type string // "kvm" or "qemu"

	// MemoryMiB is what the guest has now. MaxMemoryMiB (MemoryMiB when 0)
	// is what the guest is started with; a virtio balloon holds back the
	// difference, so memory grows live up to MaxMemoryMiB without a restart.
	MemoryMiB    int64
	MaxMemoryMiB int64
	// VCPUs are the vCPUs online now; up to MaxVCPUs (VCPUs when 0) can be
	// plugged in live.
	VCPUs    int
	MaxVCPUs int

	// Storage says how this host's QEMU reaches the storage box. The
	// initiator differs per host, so a VM that moves gets a new one.
	Storage Storage
	// Disks are the VM's disks in order; the first is the boot disk.
	Disks []Disk
	// CloudInit is the NoCloud seed volume, attached as a read-only CD-ROM
	// (optional).
	CloudInit *CDROM
	NICs      []NIC
	Boot      Boot
	// ConsoleLog is a file on the host that logs the serial console
	// (optional); the console itself is a pty that `virsh console` attaches
	// to. The log is appended to, so restarts and moves keep the past.
	ConsoleLog string

	Placement    Placement
	AllowRestart bool
	// Managed tells, for a VM read from a host, whether Drover's metadata
	// says Drover manages it. Every VM built here is written as managed.
	Managed bool
}

// Storage is how one host reaches the storage box's iSCSI portal.
type Storage struct {
	Portal    string // "host:port" of the iSCSI portal as the host sees it
	Initiator string // the host's initiator IQN, see HostInitiator
	// CHAP makes every disk log in as CHAPUser with the secret the host
	// keeps under CHAPSecretUsage (see Pool.EnsureCHAPSecret).
	CHAP bool
}

// Disk is one disk of a VM: a volume (LUN) of the storage box.
type Disk struct {
	Volume string // the volume's name on the target, kept in the metadata
	IQN    string // the volume's target IQN
	LUN    uint64
	// Target is the guest device (vda, vdb, …). Empty means the first one
	// free in order, so removing a disk does not rename the others.
	Target string
}

// CDROM is a read-only volume of the storage box seen by the guest as a
// CD-ROM drive.
type CDROM struct {
	Volume string
	IQN    string
	LUN    uint64
	// Bus is "ide" (default; the i440fx machine has it built in) or
	// "sata".
	Bus string
}

// NIC is a virtio network interface on a libvirt network or a host bridge:
// set exactly one of Network and Bridge.
type NIC struct {
	Network string
	Bridge  string
	MAC     string // optional when defining: libvirt makes one up
}

// Boot says how the VM boots: a kernel straight from the host's disk, or
// its firmware from the first disk.
type Boot struct {
	Firmware string // "bios" (default) or "uefi"
	Kernel   string // path on every host (optional)
	Initrd   string // needs Kernel
	Cmdline  string // needs Kernel
}

// Placement is the VM's placement settings as the user declared them; they
// travel with the domain so that any host can tell.
type Placement struct {
	Host           string // hard pin (optional)
	PreferredHosts []string
	SpreadGroup    string
}

// Firmware names.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
)

// InitiatorPrefix is the start of every Drover host's initiator IQN.
const InitiatorPrefix = "iqn.2026-11.io.drover.host:"

// HostInitiator returns the initiator IQN of the host the provider names
// host; every volume allows the IQNs of all configured hosts.
func HostInitiator(host string) string { return InitiatorPrefix + host }

var (
	diskTarget = regexp.MustCompile(`^vd[a-z]{1,2}$`)
	iqnShape   = regexp.MustCompile(`^(iqn\.\d{4}-\d{2}\.[a-z0-9.-]+(:[^\s/]+)?|eui\.[0-9A-Fa-f]{16})$`)
)

// maxMemory and maxVCPUs apply the "0 means the current value" rule.
func (vm VM) maxMemory() int64 { return max(vm.MaxMemoryMiB, vm.MemoryMiB) }
func (vm VM) maxVCPUs() int    { return max(vm.MaxVCPUs, vm.VCPUs) }

// Validate reports the first thing that makes vm unusable.
func (vm VM) Validate() error {
	if vm.Name == "" {
		return errors.New("vm name is empty")
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("vm %s: %s", vm.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case vm.Type != "kvm" && vm.Type != "qemu":
		return fail("type %q is neither kvm nor qemu", vm.Type)
	case vm.MemoryMiB <= 0:
		return fail("memory must be positive, got %d MiB", vm.MemoryMiB)
	case vm.MaxMemoryMiB != 0 && vm.MaxMemoryMiB < vm.MemoryMiB:
		return fail("max memory %d MiB is below memory %d MiB", vm.MaxMemoryMiB, vm.MemoryMiB)
	case vm.VCPUs <= 0:
		return fail("vcpus must be positive, got %d", vm.VCPUs)
	case vm.MaxVCPUs != 0 && vm.MaxVCPUs < vm.VCPUs:
		return fail("max vcpus %d are below vcpus %d", vm.MaxVCPUs, vm.VCPUs)
	case vm.Boot.Firmware != "" && vm.Boot.Firmware != FirmwareBIOS && vm.Boot.Firmware != FirmwareUEFI:
		return fail("firmware %q is neither bios nor uefi", vm.Boot.Firmware)
	case vm.Boot.Kernel == "" && (vm.Boot.Initrd != "" || vm.Boot.Cmdline != ""):
		return fail("initrd and cmdline need a kernel")
	}
	if len(vm.Disks) > 0 || vm.CloudInit != nil {
		if err := vm.Storage.validate(); err != nil {
			return fail("%v", err)
		}
	}
	seen := map[string]bool{}
	for i, d := range vm.Disks {
		if !iqnShape.MatchString(d.IQN) {
			return fail("disk %d: %q is not an iSCSI target IQN", i+1, d.IQN)
		}
		if d.Target == "" {
			continue
		}
		if !diskTarget.MatchString(d.Target) {
			return fail("disk %d: target %q is not a virtio disk name (vda, vdb, …)", i+1, d.Target)
		}
		if seen[d.Target] {
			return fail("disk %d: target %s is used twice", i+1, d.Target)
		}
		seen[d.Target] = true
	}
	if c := vm.CloudInit; c != nil {
		if !iqnShape.MatchString(c.IQN) {
			return fail("cloud-init seed: %q is not an iSCSI target IQN", c.IQN)
		}
		if c.Bus != "" && c.Bus != "ide" && c.Bus != "sata" {
			return fail("cloud-init seed: bus %q is neither ide nor sata", c.Bus)
		}
	}
	for i, n := range vm.NICs {
		if err := n.validate(); err != nil {
			return fail("network interface %d: %v", i+1, err)
		}
	}
	return nil
}

func (n NIC) validate() error {
	if (n.Network == "") == (n.Bridge == "") {
		return errors.New("set exactly one of network and bridge")
	}
	if n.MAC != "" {
		if _, err := net.ParseMAC(n.MAC); err != nil || len(n.MAC) != 17 {
			return fmt.Errorf("%q is not a MAC address", n.MAC)
		}
	}
	return nil
}

func (s Storage) validate() error {
	host, port, err := net.SplitHostPort(s.Portal)
	if err != nil || host == "" {
		return fmt.Errorf("storage portal %q is not host:port", s.Portal)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("storage portal %q has no valid port", s.Portal)
	}
	if !iqnShape.MatchString(s.Initiator) {
		return fmt.Errorf("initiator %q is not an IQN", s.Initiator)
	}
	return nil
}

// DiskTargets returns the guest device of every disk, in order: the ones
// set, and for the others the first ones free.
func (vm VM) DiskTargets() []string {
	used := map[string]bool{}
	for _, d := range vm.Disks {
		used[d.Target] = true
	}
	out := make([]string, len(vm.Disks))
	next := 0
	for i, d := range vm.Disks {
		if d.Target != "" {
			out[i] = d.Target
			continue
		}
		for used[virtioName(next)] {
			next++
		}
		out[i] = virtioName(next)
		used[out[i]] = true
	}
	return out
}

// virtioName returns the i-th virtio disk name: vda … vdz, vdaa, vdab, …
func virtioName(i int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	if i < 26 {
		return "vd" + letters[i:i+1]
	}
	return "vd" + letters[i/26-1:i/26] + letters[i%26:i%26+1]
}

// XML returns the libvirt domain XML of vm.
func (vm VM) XML() (string, error) {
	dom, err := vm.domain()
	if err != nil {
		return "", err
	}
	return dom.Marshal()
}

func (vm VM) domain() (*libvirtxml.Domain, error) {
	if err := vm.Validate(); err != nil {
		return nil, err
	}
	vcpu := &libvirtxml.DomainVCPU{Value: uint(vm.maxVCPUs())}
	if vm.VCPUs < vm.maxVCPUs() {
		vcpu.Current = uint(vm.VCPUs)
	}
	dom := &libvirtxml.Domain{
		Type:          vm.Type,
		Name:          vm.Name,
		UUID:          vm.UUID,
		Memory:        &libvirtxml.DomainMemory{Value: uint(vm.maxMemory()), Unit: "MiB"},
		CurrentMemory: &libvirtxml.DomainCurrentMemory{Value: uint(vm.MemoryMiB), Unit: "MiB"},
		VCPU:          vcpu,
		OS:            vm.Boot.os(),
		// Without ACPI and APIC the guest sees no PCI devices.
		Features: &libvirtxml.DomainFeatureList{
			ACPI: &libvirtxml.DomainFeature{},
			APIC: &libvirtxml.DomainFeatureAPIC{},
		},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			// The balloon is what lets memory grow live up to the maximum.
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "virtio"},
			// The guest agent's channel: a guest running qemu-guest-agent
			// can freeze its filesystems for a backup (see Quiesce).
			Channels: []libvirtxml.DomainChannel{{
				Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind"}},
				Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: "org.qemu.guest_agent.0"}},
			}},
		},
	}
	meta, err := vm.metadata().marshal()
	if err != nil {
		return nil, err
	}
	dom.Metadata = &libvirtxml.DomainMetadata{XML: meta}

	for i, target := range vm.DiskTargets() {
		dom.Devices.Disks = append(dom.Devices.Disks, vm.Storage.disk(vm.Disks[i], target))
	}
	if vm.CloudInit != nil {
		dom.Devices.Disks = append(dom.Devices.Disks, vm.Storage.cdrom(*vm.CloudInit))
	}
	for _, n := range vm.NICs {
		dom.Devices.Interfaces = append(dom.Devices.Interfaces, n.iface())
	}
	if vm.ConsoleLog != "" {
		dom.Devices.Serials = []libvirtxml.DomainSerial{{
			Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
			Log:    &libvirtxml.DomainChardevLog{File: vm.ConsoleLog, Append: "on"},
		}}
	}
	return dom, nil
}

func (b Boot) os() *libvirtxml.DomainOS {
	o := &libvirtxml.DomainOS{
		Type:    &libvirtxml.DomainOSType{Type: "hvm"},
		Kernel:  b.Kernel,
		Initrd:  b.Initrd,
		Cmdline: b.Cmdline,
	}
	if b.Firmware == FirmwareUEFI {
		// libvirt picks the loader and an NVRAM template from the firmware
		// descriptors the host has, so no host paths end up here.
		o.Firmware = "efi"
	}
	if b.Kernel == "" {
		o.BootDevices = []libvirtxml.DomainBootDevice{{Dev: "hd"}}
	}
	return o
}

// source returns the network source of a LUN as this host opens it.
func (s Storage) source(iqn string, lun uint64) *libvirtxml.DomainDiskSource {
	host, port, _ := net.SplitHostPort(s.Portal)
	src := &libvirtxml.DomainDiskSourceNetwork{
		Protocol:  "iscsi",
		Name:      iqn + "/" + strconv.FormatUint(lun, 10),
		Hosts:     []libvirtxml.DomainDiskSourceHost{{Name: host, Port: port}},
		Initiator: &libvirtxml.DomainDiskSourceNetworkInitiator{IQN: &libvirtxml.DomainDiskSourceNetworkIQN{Name: s.Initiator}},
	}
	if s.CHAP {
		src.Auth = &libvirtxml.DomainDiskAuth{
			Username: CHAPUser,
			Secret:   &libvirtxml.DomainDiskSecret{Type: "iscsi", Usage: CHAPSecretUsage},
		}
	}
	return &libvirtxml.DomainDiskSource{Network: src}
}

func (s Storage) disk(d Disk, target string) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{
		Device: "disk",
		// cache=none: no host page cache, so a migration never leaves
		// writes behind on the source.
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw", Cache: "none"},
		Source: s.source(d.IQN, d.LUN),
		Target: &libvirtxml.DomainDiskTarget{Dev: target, Bus: "virtio"},
	}
}

func (s Storage) cdrom(c CDROM) libvirtxml.DomainDisk {
	target := &libvirtxml.DomainDiskTarget{Dev: "hdc", Bus: "ide"}
	if c.Bus == "sata" {
		target = &libvirtxml.DomainDiskTarget{Dev: "sda", Bus: "sata"}
	}
	return libvirtxml.DomainDisk{
		Device:   "cdrom",
		Driver:   &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "raw", Cache: "none"},
		Source:   s.source(c.IQN, c.LUN),
		Target:   target,
		ReadOnly: &libvirtxml.DomainDiskReadOnly{},
	}
}

func (n NIC) iface() libvirtxml.DomainInterface {
	i := libvirtxml.DomainInterface{
		Source: &libvirtxml.DomainInterfaceSource{},
		Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
	}
	if n.Network != "" {
		i.Source.Network = &libvirtxml.DomainInterfaceSourceNetwork{Network: n.Network}
	} else {
		i.Source.Bridge = &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}
	}
	if n.MAC != "" {
		i.MAC = &libvirtxml.DomainInterfaceMAC{Address: strings.ToLower(n.MAC)}
	}
	return i
}

// ParseVM reads a VM back from its domain XML, as libvirt reports it. It
// fails on devices Drover cannot manage (a disk that is not on an iSCSI
// portal, an interface that is neither on a network nor on a bridge), so
// nothing is silently dropped. Placement, AllowRestart, Managed and the
// volume names come from Drover's metadata; a domain without it parses with
// them empty. It mirrors the builder (domain): one reader per part, as
// parseBoot reads what Boot.os writes, parseDisk what Storage.disk and
// Storage.cdrom write, parseNIC what NIC.iface writes.
func ParseVM(domainXML string) (VM, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(domainXML); err != nil {
		return VM{}, fmt.Errorf("parse domain XML: %w", err)
	}
	fail := func(format string, args ...any) (VM, error) {
		return VM{}, fmt.Errorf("domain %s: %s", dom.Name, fmt.Sprintf(format, args...))
	}
	vm := VM{Name: dom.Name, UUID: dom.UUID, Type: dom.Type}
	vm.MemoryMiB, vm.MaxMemoryMiB = parseMemory(dom.Memory, dom.CurrentMemory)
	vm.VCPUs, vm.MaxVCPUs = parseVCPUs(dom.VCPU)
	vm.Boot = parseBoot(dom.OS)

	meta, err := parseMetadata(dom.Metadata)
	if err != nil {
		return fail("%v", err)
	}
	vm.Managed = meta.ManagedBy == managedBy
	vm.AllowRestart = meta.AllowRestart
	if p := meta.Placement; p != nil {
		vm.Placement = Placement{Host: p.Host, PreferredHosts: p.Preferred, SpreadGroup: p.SpreadGroup}
	}

	if dom.Devices == nil {
		return vm, nil
	}
	for _, d := range dom.Devices.Disks {
		if err := vm.parseDisk(d, meta); err != nil {
			return fail("disk %s: %v", targetOf(d), err)
		}
	}
	for i, ifc := range dom.Devices.Interfaces {
		n, err := parseNIC(ifc)
		if err != nil {
			return fail("network interface %d %v", i+1, err)
		}
		vm.NICs = append(vm.NICs, n)
	}
	vm.ConsoleLog = parseConsoleLog(dom.Devices.Serials)
	return vm, nil
}

// parseMemory reads the memory (current, maximum) in MiB; without a
// current size the VM has its maximum.
func parseMemory(maxMem *libvirtxml.DomainMemory, cur *libvirtxml.DomainCurrentMemory) (memMiB, maxMiB int64) {
	if maxMem != nil {
		maxMiB = toMiB(maxMem.Value, maxMem.Unit)
		memMiB = maxMiB
	}
	if cur != nil {
		memMiB = toMiB(cur.Value, cur.Unit)
	}
	return memMiB, maxMiB
}

// parseVCPUs reads the vCPUs (current, maximum).
func parseVCPUs(v *libvirtxml.DomainVCPU) (vcpus, maxVCPUs int) {
	if v == nil {
		return 0, 0
	}
	maxVCPUs = int(v.Value)
	vcpus = maxVCPUs
	if v.Current != 0 {
		vcpus = int(v.Current)
	}
	return vcpus, maxVCPUs
}

// parseBoot reads what Boot.os writes.
func parseBoot(o *libvirtxml.DomainOS) Boot {
	if o == nil {
		return Boot{}
	}
	b := Boot{Firmware: FirmwareBIOS, Kernel: o.Kernel, Initrd: o.Initrd, Cmdline: o.Cmdline}
	if o.Firmware == "efi" || (o.Loader != nil && o.Loader.Type == "pflash") {
		b.Firmware = FirmwareUEFI
	}
	return b
}

// diskDevices maps a disk's device kind to what reads it into the VM: what
// Storage.disk and Storage.cdrom write.
var diskDevices = map[string]func(vm *VM, d libvirtxml.DomainDisk, iqn string, lun uint64, meta metadataXML){
	"disk":  addDisk,
	"":      addDisk, // libvirt's default device is a disk
	"cdrom": addCDROM,
}

// parseDisk reads one iSCSI disk of the domain into vm; the first one tells
// how the host reaches the portal.
func (vm *VM) parseDisk(d libvirtxml.DomainDisk, meta metadataXML) error {
	src, err := parseSource(d)
	if err != nil {
		return err
	}
	iqn, lun, err := splitLUN(src.Name)
	if err != nil {
		return err
	}
	add, ok := diskDevices[d.Device]
	if !ok {
		return fmt.Errorf("device %q is not supported", d.Device)
	}
	if vm.Storage.Portal == "" {
		vm.Storage = storageOf(src, d.Auth)
	}
	add(vm, d, iqn, lun, meta)
	return nil
}

func addDisk(vm *VM, d libvirtxml.DomainDisk, iqn string, lun uint64, meta metadataXML) {
	target := targetOf(d)
	volume := ""
	for _, ref := range meta.Disks {
		if ref.Target == target {
			volume = ref.Volume
		}
	}
	vm.Disks = append(vm.Disks, Disk{Volume: volume, IQN: iqn, LUN: lun, Target: target})
}

func addCDROM(vm *VM, d libvirtxml.DomainDisk, iqn string, lun uint64, meta metadataXML) {
	c := &CDROM{IQN: iqn, LUN: lun, Bus: "ide"}
	if d.Target != nil && d.Target.Bus != "" {
		c.Bus = d.Target.Bus
	}
	if meta.CloudInit != nil {
		c.Volume = meta.CloudInit.Volume
	}
	vm.CloudInit = c
}

// targetOf is the disk's guest device, such as vda.
func targetOf(d libvirtxml.DomainDisk) string {
	if d.Target == nil {
		return ""
	}
	return d.Target.Dev
}

// parseNIC reads what NIC.iface writes.
func parseNIC(ifc libvirtxml.DomainInterface) (NIC, error) {
	var n NIC
	switch {
	case ifc.Source != nil && ifc.Source.Network != nil:
		n.Network = ifc.Source.Network.Network
	case ifc.Source != nil && ifc.Source.Bridge != nil:
		n.Bridge = ifc.Source.Bridge.Bridge
	default:
		return n, errors.New("is neither on a network nor on a bridge")
	}
	if ifc.MAC != nil {
		n.MAC = ifc.MAC.Address
	}
	return n, nil
}

// parseConsoleLog reads the file the serial console logs to: a log of a
// pty console, as domain writes, or a file console, as older Drover wrote.
func parseConsoleLog(serials []libvirtxml.DomainSerial) string {
	for _, s := range serials {
		if s.Log != nil && s.Log.File != "" {
			return s.Log.File
		}
		if s.Source != nil && s.Source.File != nil {
			return s.Source.File.Path
		}
	}
	return ""
}

// parseSource returns the iSCSI source of a disk.
func parseSource(d libvirtxml.DomainDisk) (*libvirtxml.DomainDiskSourceNetwork, error) {
	if d.Source == nil || d.Source.Network == nil {
		return nil, errors.New("not a network disk: Drover manages only disks on its storage box")
	}
	if p := d.Source.Network.Protocol; p != "iscsi" {
		return nil, fmt.Errorf("protocol %q is not iscsi", p)
	}
	return d.Source.Network, nil
}

// storageOf recovers how the host reaches the portal from one disk source.
// CHAP may sit in the source (libvirt's current form) or on the disk.
func storageOf(src *libvirtxml.DomainDiskSourceNetwork, diskAuth *libvirtxml.DomainDiskAuth) Storage {
	var s Storage
	if len(src.Hosts) > 0 {
		port := src.Hosts[0].Port
		if port == "" {
			port = "3260"
		}
		s.Portal = net.JoinHostPort(src.Hosts[0].Name, port)
	}
	if src.Initiator != nil && src.Initiator.IQN != nil {
		s.Initiator = src.Initiator.IQN.Name
	}
	auth := src.Auth
	if auth == nil {
		auth = diskAuth
	}
	s.CHAP = auth != nil && auth.Secret != nil && auth.Secret.Usage == CHAPSecretUsage
	return s
}

// splitLUN splits libvirt's "IQN/LUN" source name.
func splitLUN(name string) (string, uint64, error) {
	iqn, lunText, found := strings.Cut(name, "/")
	if !found {
		return name, 0, nil
	}
	lun, err := strconv.ParseUint(lunText, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("source %q: LUN %q is not a number", name, lunText)
	}
	return iqn, lun, nil
}

// toMiB converts a libvirt memory value (KiB when no unit is given) to MiB,
// dropping fractions.
func toMiB(v uint, unit string) int64 {
	n := int64(v)
	switch strings.ToLower(unit) {
	case "b", "bytes":
		return n >> 20
	case "k", "kib", "":
		return n >> 10
	case "kb":
		return n * 1000 >> 20
	case "m", "mib":
		return n
	case "mb":
		return n * 1000 * 1000 >> 20
	case "g", "gib":
		return n << 10
	case "gb":
		return n * 1000 * 1000 * 1000 >> 20
	case "t", "tib":
		return n << 20
	}
	return n >> 10
}
