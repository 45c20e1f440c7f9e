package provider

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// TestHostsDataSourceWithoutLab reads drover_hosts over the plugin protocol
// against libvirt's in-process test driver (no daemon) and a port nobody
// listens on. The lab's acceptance test does the same against real hosts.
func TestHostsDataSourceWithoutLab(t *testing.T) {
	t.Parallel()
	// A test-driver host of its own, with no domains.
	nodeFile := filepath.Join(t.TempDir(), "node.xml")
	err := os.WriteFile(nodeFile, []byte(`<node><cpu><mhz>2000</mhz><model>i686</model>
  <active>6</active><total>6</total><nodes>1</nodes><sockets>1</sockets><cores>3</cores>
  <threads>2</threads></cpu><memory>4194304</memory></node>`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	goneURI := "qemu+tcp://" + ln.Addr().String() + "/system"
	ln.Close()
	defaultURI, emptyURI := "test:///default", "test://"+nodeFile

	pool := hypervisor.NewPool(hypervisor.Options{})
	t.Cleanup(func() { pool.Close() })
	server := protocolServer(t, pool)
	sch := schemas(t, server)
	ctx := context.Background()

	cresp, err := server.ConfigureProvider(ctx, &tfprotov6.ConfigureProviderRequest{
		Config: dynamicValue(t, sch.Provider, obj{"host": []any{
			obj{"name": "default", "uri": defaultURI, "reserved_memory_mib": 1024, "memory_overcommit": 1.5},
			obj{"name": "empty", "uri": emptyURI, "maintenance": true},
			obj{"name": "gone", "uri": goneURI},
		}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(cresp.Diagnostics) > 0 {
		t.Fatalf("ConfigureProvider:%s", diagnosticsString(cresp.Diagnostics))
	}

	dsSchema := sch.DataSourceSchemas["drover_hosts"]
	start := time.Now()
	rresp, err := server.ReadDataSource(ctx, &tfprotov6.ReadDataSourceRequest{
		TypeName: "drover_hosts",
		Config:   dynamicValue(t, dsSchema, obj{}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("reading took %s with one host refusing connections", took)
	}

	// The unreachable host is a warning that names it and its URI; nothing
	// else is reported.
	if len(rresp.Diagnostics) != 1 {
		t.Fatalf("got %d diagnostics, want one warning about host gone:%s",
			len(rresp.Diagnostics), diagnosticsString(rresp.Diagnostics))
	}
	d := rresp.Diagnostics[0]
	if d.Severity != tfprotov6.DiagnosticSeverityWarning {
		t.Errorf("the unreachable host gave a %s, want a warning", severity(d))
	}
	if text := d.Summary + " " + d.Detail; !strings.Contains(text, "gone") || !strings.Contains(text, goneURI) {
		t.Errorf("warning %q does not name host gone and its URI %s", text, goneURI)
	}

	stateValue, err := rresp.State.Unmarshal(dsSchema.ValueType())
	if err != nil {
		t.Fatal(err)
	}
	hosts := fromValue(t, stateValue).(obj)["hosts"].(obj)

	// What libvirt says, through a connection of the test's own.
	facts := func(uri string) hypervisor.Host {
		t.Helper()
		own := hypervisor.NewPool(hypervisor.Options{})
		defer own.Close()
		h, err := own.Host(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	def, empty := facts(defaultURI), facts(emptyURI)
	names := func(h hypervisor.Host) []any {
		out := []any{}
		for _, d := range h.Domains {
			out = append(out, d.Name)
		}
		return out
	}
	committed := func(h hypervisor.Host) int64 {
		var sum int64
		for _, d := range h.Domains {
			sum += d.MaxMemoryMiB
		}
		return sum
	}
	want := obj{
		"default": obj{
			"uri": defaultURI, "reachable": true, "maintenance": false, "failed": false, "fenced": nil,
			"cpus": int64(def.CPUs), "memory_mib": def.MemoryMiB,
			"committed_memory_mib": committed(def),
			"free_memory_mib":      max(0, int64(float64(def.MemoryMiB-1024)*1.5)-committed(def)),
			"vms":                  names(def),
		},
		"empty": obj{
			"uri": emptyURI, "reachable": true, "maintenance": true, "failed": false, "fenced": nil,
			"cpus": int64(empty.CPUs), "memory_mib": empty.MemoryMiB, "committed_memory_mib": int64(0),
			"free_memory_mib": empty.MemoryMiB - 512, "vms": []any{},
		},
		"gone": obj{
			"uri": goneURI, "reachable": false, "maintenance": false, "failed": false, "fenced": nil,
			"cpus": nil, "memory_mib": nil, "committed_memory_mib": nil, "free_memory_mib": nil, "vms": nil,
		},
	}
	if len(names(def)) == 0 {
		t.Fatal("test:///default has no domains; the test expects its built-in one")
	}
	for name, w := range want {
		if got := hosts[name]; !reflect.DeepEqual(got, w) {
			t.Errorf("hosts[%q]\n got %v\nwant %v", name, got, w)
		}
	}
	if len(hosts) != len(want) {
		t.Errorf("got hosts %v, want exactly default, empty and gone", hosts)
	}
}
