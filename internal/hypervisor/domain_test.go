package hypervisor

import (
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"
)

func TestDomainSpecXML(t *testing.T) {
	t.Parallel()
	spec := DomainSpec{
		Name:       "vm1",
		UUID:       "6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a11",
		Type:       "qemu",
		MemoryMiB:  128,
		VCPUs:      1,
		Kernel:     "/lab/vmlinuz",
		Initrd:     "/lab/initrd.img",
		Cmdline:    "console=ttyS0",
		ConsoleLog: "/tmp/vm1.log",
	}
	s, err := spec.XML()
	if err != nil {
		t.Fatal(err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(s); err != nil {
		t.Fatalf("the XML does not parse back: %v\n%s", err, s)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("type", dom.Type, "qemu")
	check("name", dom.Name, "vm1")
	check("uuid", dom.UUID, spec.UUID)
	check("memory", dom.Memory.Value, uint(128))
	check("memory unit", dom.Memory.Unit, "MiB")
	check("vcpus", dom.VCPU.Value, uint(1))
	check("kernel", dom.OS.Kernel, "/lab/vmlinuz")
	check("initrd", dom.OS.Initrd, "/lab/initrd.img")
	check("cmdline", dom.OS.Cmdline, "console=ttyS0")
	check("has acpi", dom.Features.ACPI != nil, true)
	check("has apic", dom.Features.APIC != nil, true)
	check("disks", len(dom.Devices.Disks), 0)
	if len(dom.Devices.Serials) != 1 || dom.Devices.Serials[0].Source.Pty == nil || dom.Devices.Serials[0].Log == nil {
		t.Fatalf("serials = %+v, want one pty with a log file", dom.Devices.Serials)
	}
	check("console log", dom.Devices.Serials[0].Log.File, "/tmp/vm1.log")
}

func TestDomainSpecValidate(t *testing.T) {
	t.Parallel()
	good := DomainSpec{Name: "vm1", Type: "kvm", MemoryMiB: 128, VCPUs: 1, Kernel: "/k"}
	tests := []struct {
		name   string
		change func(*DomainSpec)
		want   string // in the error; empty means valid
	}{
		{"a complete spec is valid", func(*DomainSpec) {}, ""},
		{"a nameless domain is refused", func(s *DomainSpec) { s.Name = "" }, "name is empty"},
		{"an unknown domain type is refused", func(s *DomainSpec) { s.Type = "xen" }, `"xen"`},
		{"zero memory is refused", func(s *DomainSpec) { s.MemoryMiB = 0 }, "memory"},
		{"zero vcpus are refused", func(s *DomainSpec) { s.VCPUs = 0 }, "vcpus"},
		{"a domain without a kernel is refused", func(s *DomainSpec) { s.Kernel = "" }, "kernel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.change(&s)
			err := s.Validate()
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

func TestLooksLikeUUID(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a11": true,
		"6F1C1A4E-8E8B-4A0C-9D57-1F1B7E0F2A11": true,
		"vm1":                                  false,
		"6f1c1a4e-8e8b-4a0c-9d57-1f1b7e0f2a1g": false,
		"6f1c1a4e08e8b-4a0c-9d57-1f1b7e0f2a11": false,
	} {
		if got := looksLikeUUID(s); got != want {
			t.Errorf("looksLikeUUID(%q) = %v, want %v", s, got, want)
		}
	}
}
