package hypervisor

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// labVM is a complete VM spec: every default is spelled out, so it must
// come back from its XML exactly as it went in.
func labVM() VM {
	return VM{
		Name:         "web1",
		UUID:         "6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a11",
		Type:         "qemu",
		MemoryMiB:    256,
		MaxMemoryMiB: 1024,
		VCPUs:        1,
		MaxVCPUs:     4,
		Storage: Storage{
			Portal:    "storage.lan:3260",
			Initiator: HostInitiator("alpha"),
			CHAP:      true,
		},
		Disks: []Disk{
			{Volume: "web1-root", IQN: "iqn.2026-11.io.drover:web1-root", LUN: 0, Target: "vda"},
			{Volume: "web1-data", IQN: "iqn.2026-11.io.drover:web1-data", LUN: 0, Target: "vdb"},
		},
		CloudInit: &CDROM{Volume: "web1-seed", IQN: "iqn.2026-11.io.drover:web1-seed", Bus: "ide"},
		NICs: []NIC{
			{Network: "default", MAC: "52:54:00:12:34:56"},
			{Bridge: "br0", MAC: "52:54:00:ab:cd:ef"},
		},
		Boot:       Boot{Firmware: FirmwareBIOS, Kernel: "/lab/vmlinuz", Initrd: "/lab/initrd.img", Cmdline: "console=ttyS0"},
		ConsoleLog: "/var/log/drover/web1.log",
		Placement: Placement{
			Host:           "alpha",
			PreferredHosts: []string{"alpha", "beta"},
			SpreadGroup:    "web",
		},
		AllowRestart: true,
		Managed:      true,
	}
}

func TestVMXMLMatchesGoldenFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		golden string
		vm     func() VM
	}{
		{"a kernel-boot VM with two disks, a seed and two NICs", "vm_kernel_boot.xml", labVM},
		{"a UEFI VM without CHAP boots from its first disk", "vm_uefi.xml", func() VM {
			vm := labVM()
			vm.Boot = Boot{Firmware: FirmwareUEFI}
			vm.Storage.CHAP = false
			vm.CloudInit = nil
			vm.NICs = nil
			vm.Placement = Placement{}
			return vm
		}},
		{"a VM at its maxima has no current attributes", "vm_at_max.xml", func() VM {
			vm := labVM()
			vm.MemoryMiB, vm.MaxMemoryMiB = 512, 0
			vm.VCPUs, vm.MaxVCPUs = 2, 0
			vm.Disks = vm.Disks[:1]
			vm.CloudInit.Bus = "sata"
			vm.ConsoleLog = ""
			return vm
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.vm().XML()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if got+"\n" != string(want) {
				t.Errorf("XML differs from %s (go test -update rewrites it after review)\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

func TestVMRoundTripsThroughItsXML(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*VM)
	}{
		{"a complete VM comes back unchanged", func(*VM) {}},
		{"a UEFI VM comes back as UEFI", func(vm *VM) { vm.Boot = Boot{Firmware: FirmwareUEFI} }},
		{"a VM without CHAP comes back without CHAP", func(vm *VM) { vm.Storage.CHAP = false }},
		{"a VM without seed, NICs, console and placement comes back bare", func(vm *VM) {
			vm.CloudInit, vm.NICs, vm.ConsoleLog = nil, nil, ""
			vm.Placement, vm.AllowRestart = Placement{}, false
		}},
		{"a SATA seed keeps its bus", func(vm *VM) { vm.CloudInit.Bus = "sata" }},
		{"a disk on a LUN other than 0 keeps its LUN", func(vm *VM) { vm.Disks[1].LUN = 3 }},
		{"disks keep targets with a gap", func(vm *VM) { vm.Disks[1].Target = "vdd" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := labVM()
			tt.change(&want)
			xml, err := want.XML()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseVM(xml)
			if err != nil {
				t.Fatal(err)
			}
			checkVM(t, got, want)
		})
	}
}

// checkVM fails, naming the fields that differ, unless got equals want.
func checkVM(t *testing.T, got, want VM) {
	t.Helper()
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if !reflect.DeepEqual(g, w) {
			if gp, ok := g.(*CDROM); ok && gp != nil {
				g = *gp
			}
			if wp, ok := w.(*CDROM); ok && wp != nil {
				w = *wp
			}
			t.Errorf("%s = %+v, want %+v", gv.Type().Field(i).Name, g, w)
		}
	}
}

func TestVMDefaultsAreFilledIn(t *testing.T) {
	t.Parallel()
	vm := labVM()
	vm.MaxMemoryMiB, vm.MaxVCPUs = 0, 0
	vm.Disks[0].Target, vm.Disks[1].Target = "", ""
	vm.Boot.Firmware = ""
	vm.CloudInit.Bus = ""
	xml, err := vm.XML()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseVM(xml)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("max memory", got.MaxMemoryMiB, vm.MemoryMiB)
	check("max vcpus", got.MaxVCPUs, vm.VCPUs)
	check("disk targets", []string{got.Disks[0].Target, got.Disks[1].Target}, []string{"vda", "vdb"})
	check("firmware", got.Boot.Firmware, FirmwareBIOS)
	check("seed bus", got.CloudInit.Bus, "ide")
}

func TestDiskTargetsFillTheGaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		targets []string
		want    []string
	}{
		{"no targets count up from vda", []string{"", "", ""}, []string{"vda", "vdb", "vdc"}},
		{"a taken target is skipped", []string{"", "vda", ""}, []string{"vdb", "vda", "vdc"}},
		{"a removed disk leaves its target free", []string{"vda", "vdc", ""}, []string{"vda", "vdc", "vdb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vm VM
			for _, target := range tt.targets {
				vm.Disks = append(vm.Disks, Disk{Target: target})
			}
			if got := vm.DiskTargets(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DiskTargets = %v, want %v", got, tt.want)
			}
		})
	}
	if got := virtioName(27); got != "vdab" {
		t.Errorf("virtioName(27) = %s, want vdab", got)
	}
}

func TestVMValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*VM)
		want   string // in the error; empty means valid
	}{
		{"a complete spec is valid", func(*VM) {}, ""},
		{"a diskless VM needs no storage", func(vm *VM) { vm.Disks, vm.CloudInit, vm.Storage = nil, nil, Storage{} }, ""},
		{"a nameless VM is refused", func(vm *VM) { vm.Name = "" }, "name is empty"},
		{"an unknown domain type is refused", func(vm *VM) { vm.Type = "xen" }, `"xen"`},
		{"zero memory is refused", func(vm *VM) { vm.MemoryMiB = 0 }, "memory must be positive"},
		{"a max memory below memory is refused", func(vm *VM) { vm.MaxMemoryMiB = 128 }, "max memory 128 MiB is below"},
		{"zero vcpus are refused", func(vm *VM) { vm.VCPUs = 0 }, "vcpus must be positive"},
		{"max vcpus below vcpus are refused", func(vm *VM) { vm.VCPUs = 8 }, "max vcpus 4 are below vcpus 8"},
		{"an unknown firmware is refused", func(vm *VM) { vm.Boot.Firmware = "coreboot" }, `"coreboot"`},
		{"a cmdline without a kernel is refused", func(vm *VM) { vm.Boot.Kernel = "" }, "need a kernel"},
		{"a portal without a port is refused", func(vm *VM) { vm.Storage.Portal = "storage.lan" }, "not host:port"},
		{"a disk needs an initiator", func(vm *VM) { vm.Storage.Initiator = "" }, "initiator"},
		{"a disk IQN must look like one", func(vm *VM) { vm.Disks[0].IQN = "web1-root" }, "not an iSCSI target IQN"},
		{"a disk target must be a virtio name", func(vm *VM) { vm.Disks[0].Target = "sda" }, "not a virtio disk name"},
		{"two disks on one target are refused", func(vm *VM) { vm.Disks[1].Target = "vda" }, "used twice"},
		{"a seed on an unknown bus is refused", func(vm *VM) { vm.CloudInit.Bus = "scsi" }, `"scsi"`},
		{"a NIC on both a network and a bridge is refused", func(vm *VM) { vm.NICs[0].Bridge = "br0" }, "exactly one"},
		{"a NIC on neither is refused", func(vm *VM) { vm.NICs[0].Network = "" }, "exactly one"},
		{"a malformed MAC is refused", func(vm *VM) { vm.NICs[0].MAC = "52:54:00:12:34" }, "not a MAC address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := labVM()
			tt.change(&vm)
			err := vm.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate = nil, want an error about %s", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Validate = %q, want it to mention %s", err, tt.want)
			}
		})
	}
}

func TestParseVMRefusesWhatDroverCannotManage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		xml  string
		want string
	}{
		{"a disk in a local file", `<domain type='qemu'><name>x</name><devices>
			<disk type='file' device='disk'><source file='/var/lib/x.img'/><target dev='vda' bus='virtio'/></disk>
			</devices></domain>`, "not a network disk"},
		{"a disk over NBD", `<domain type='qemu'><name>x</name><devices>
			<disk type='network' device='disk'><source protocol='nbd' name='x'><host name='h'/></source><target dev='vda' bus='virtio'/></disk>
			</devices></domain>`, `protocol "nbd"`},
		{"a user-mode NIC", `<domain type='qemu'><name>x</name><devices>
			<interface type='user'><mac address='52:54:00:00:00:01'/></interface>
			</devices></domain>`, "neither on a network nor on a bridge"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			_, err := ParseVM(tt.xml)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseVM = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestParseVMReadsMetadataWhateverPrefixLibvirtUses(t *testing.T) {
	t.Parallel()
	// How libvirt shows metadata written with virDomainSetMetadata, next to
	// another application's.
	const xml = `<domain type='qemu'><name>x</name>
	  <metadata>
	    <other:app xmlns:other="https://example.com/other"><managed-by>someone</managed-by></other:app>
	    <drover:vm xmlns:drover="https://drover.dev/xmlns/vm/1">
	      <drover:managed-by>drover</drover:managed-by>
	      <drover:placement host="beta" spread-group="db"><drover:preferred-host>beta</drover:preferred-host></drover:placement>
	      <drover:allow-restart>true</drover:allow-restart>
	    </drover:vm>
	  </metadata>
	  <memory unit='KiB'>262144</memory><currentMemory unit='KiB'>131072</currentMemory>
	  <vcpu placement='static' current='1'>2</vcpu>
	</domain>`
	vm, err := ParseVM(xml)
	if err != nil {
		t.Fatal(err)
	}
	want := Placement{Host: "beta", PreferredHosts: []string{"beta"}, SpreadGroup: "db"}
	if !reflect.DeepEqual(vm.Placement, want) {
		t.Errorf("placement = %+v, want %+v", vm.Placement, want)
	}
	if !vm.Managed || !vm.AllowRestart {
		t.Errorf("managed, allow restart = %v, %v; want true, true", vm.Managed, vm.AllowRestart)
	}
	if vm.MemoryMiB != 128 || vm.MaxMemoryMiB != 256 || vm.VCPUs != 1 || vm.MaxVCPUs != 2 {
		t.Errorf("memory %d/%d MiB, vcpus %d/%d; want 128/256 MiB, 1/2", vm.MemoryMiB, vm.MaxMemoryMiB, vm.VCPUs, vm.MaxVCPUs)
	}
}

func TestDomainWithoutDroverMetadataIsNotManaged(t *testing.T) {
	t.Parallel()
	vm, err := ParseVM(`<domain type='qemu'><name>x</name><memory>131072</memory></domain>`)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Managed {
		t.Error("a domain without Drover's metadata parses as managed")
	}
	if vm.MemoryMiB != 128 {
		t.Errorf("memory without a unit = %d MiB, want 128 (KiB is libvirt's default)", vm.MemoryMiB)
	}
}

func TestWithInitiatorRewritesEveryISCSIDisk(t *testing.T) {
	t.Parallel()
	xml, err := labVM().XML()
	if err != nil {
		t.Fatal(err)
	}
	moved, err := withInitiator(xml, HostInitiator("beta"))
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(moved); err != nil {
		t.Fatal(err)
	}
	for _, d := range dom.Devices.Disks {
		if got := d.Source.Network.Initiator.IQN.Name; got != HostInitiator("beta") {
			t.Errorf("disk %s logs in as %s, want %s", d.Target.Dev, got, HostInitiator("beta"))
		}
	}
	vm, err := ParseVM(moved)
	if err != nil {
		t.Fatal(err)
	}
	want := labVM()
	want.Storage.Initiator = HostInitiator("beta")
	checkVM(t, vm, want)
}

func TestMigrationAddressSetsWhereMemoryGoesAndWhereTheDestinationListens(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ address, uri string }{
		{"10.0.0.2", "tcp://10.0.0.2"},
		{"beta.storage.lan", "tcp://beta.storage.lan"},
		{"fd00::2", "tcp://[fd00::2]"},
	} {
		p := addressParams(c.address)
		if !p.URISet || p.URI != c.uri || !p.ListenAddressSet || p.ListenAddress != c.address {
			t.Errorf("%s: got URI %q (set %v), listen %q (set %v); want %q and %q", c.address, p.URI, p.URISet, p.ListenAddress, p.ListenAddressSet, c.uri, c.address)
		}
	}
	if p := addressParams(""); p.URISet || p.ListenAddressSet {
		t.Errorf("no address: got %+v, want libvirt's defaults", p)
	}
}
