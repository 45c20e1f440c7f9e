package hypervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testVM is labVM as the test driver can run it on host alpha.
func testVM(name string) VM {
	vm := labVM()
	vm.Name = name
	vm.UUID = ""
	return vm
}

// testHosts returns two test-driver hosts by name.
func testHosts(t *testing.T) map[string]string {
	t.Helper()
	return map[string]string{"alpha": newTestHost(t), "beta": newTestHost(t)}
}

func newTestPool(t *testing.T) *Pool {
	t.Helper()
	pool := NewPool(Options{ConnectTimeout: time.Second})
	t.Cleanup(func() { pool.Close() })
	return pool
}

func TestVMDefinedThroughLibvirtReadsBackAsItWentIn(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := newTestPool(t)
	ctx := context.Background()

	want := labVM()
	if _, err := pool.DefineVM(ctx, uri, want); err != nil {
		t.Fatal(err)
	}
	got, d, err := pool.ReadVM(ctx, uri, want.UUID)
	if err != nil {
		t.Fatal(err)
	}
	checkVM(t, got, want)
	if d.State != StateShutOff || d.UUID != want.UUID {
		t.Errorf("domain = %+v, want shut off with UUID %s", d, want.UUID)
	}
}

func TestCreateVMStartsItAndShutdownStopsIt(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := newTestPool(t)
	ctx := context.Background()

	d, err := pool.CreateVM(ctx, uri, testVM("web1"))
	if err != nil {
		t.Fatal(err)
	}
	if d.State != StateRunning {
		t.Fatalf("created VM is %s, want running", d.State)
	}
	if d.MemoryMiB != 256 || d.MaxMemoryMiB != 1024 || d.VCPUs != 1 {
		t.Errorf("created VM has %d of %d MiB and %d vcpus, want 256 of 1024 MiB and 1", d.MemoryMiB, d.MaxMemoryMiB, d.VCPUs)
	}
	// The test driver's guests obey the power button at once.
	forced, err := pool.Shutdown(ctx, uri, d.UUID, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if forced {
		t.Error("Shutdown forced a guest that powered off by itself")
	}
	if d, _, _ := pool.Domain(ctx, uri, d.UUID); d.State != StateShutOff {
		t.Errorf("after Shutdown the VM is %s, want shutoff", d.State)
	}
	if forced, err := pool.Shutdown(ctx, uri, d.UUID, time.Second); err != nil || forced {
		t.Errorf("Shutdown of a stopped VM = %v, %v; want nothing to do", forced, err)
	}
	if d, err := pool.Start(ctx, uri, d.UUID); err != nil || d.State != StateRunning {
		t.Errorf("Start = %+v, %v; want it running", d, err)
	}
}

func TestLocateFindsTheVMOnEveryHostItIsDefinedOn(t *testing.T) {
	t.Parallel()
	hosts := testHosts(t)
	pool := newTestPool(t)
	ctx := context.Background()
	vm := testVM("web1")
	vm.UUID = "11111111-2222-4333-8444-555555555555"

	where := func() []string {
		t.Helper()
		locs, err := pool.Locate(ctx, hosts, vm.UUID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range locs {
			out = append(out, l.Host+":"+string(l.Domain.State))
		}
		return out
	}
	if got := where(); len(got) != 0 {
		t.Errorf("before any define the VM is on %v, want nowhere", got)
	}
	if _, err := pool.CreateVM(ctx, hosts["beta"], vm); err != nil {
		t.Fatal(err)
	}
	if got, want := where(), []string{"beta:running"}; !reflect.DeepEqual(got, want) {
		t.Errorf("VM is on %v, want %v", got, want)
	}
	if _, err := pool.DefineVM(ctx, hosts["alpha"], vm); err != nil {
		t.Fatal(err)
	}
	if got, want := where(), []string{"alpha:shutoff", "beta:running"}; !reflect.DeepEqual(got, want) {
		t.Errorf("VM is on %v, want %v", got, want)
	}
}

func TestLocateNamesTheHostItCannotAsk(t *testing.T) {
	t.Parallel()
	hosts := map[string]string{"alpha": newTestHost(t), "gamma": silentHost(t)}
	pool := newTestPool(t)
	ctx := context.Background()
	d, err := pool.CreateVM(ctx, hosts["alpha"], testVM("web1"))
	if err != nil {
		t.Fatal(err)
	}
	locs, err := pool.Locate(ctx, hosts, d.UUID)
	if err == nil || !strings.Contains(err.Error(), "gamma") {
		t.Errorf("Locate error = %v, want one naming host gamma", err)
	}
	if len(locs) != 1 || locs[0].Host != "alpha" {
		t.Errorf("Locate = %+v, want the VM on alpha despite gamma", locs)
	}
}

func TestLiveChangesStayWithinTheMaximum(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := newTestPool(t)
	ctx := context.Background()
	d, err := pool.CreateVM(ctx, uri, testVM("web1")) // 256 of 1024 MiB, 1 of 4 vcpus
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func() error
		want   string // in the error; empty means it works
	}{
		{"memory grows live up to the maximum", func() error { return pool.SetMemory(ctx, uri, d.UUID, 1024) }, ""},
		{"memory shrinks live", func() error { return pool.SetMemory(ctx, uri, d.UUID, 512) }, ""},
		{"memory past the maximum needs a restart", func() error { return pool.SetMemory(ctx, uri, d.UUID, 1025) }, "without a restart"},
		{"vcpus grow live up to the maximum", func() error { return pool.SetVCPUs(ctx, uri, d.UUID, 4) }, ""},
		{"vcpus past the maximum need a restart", func() error { return pool.SetVCPUs(ctx, uri, d.UUID, 5) }, "without a restart"},
		{"a VM that is not there is named", func() error { return pool.SetVCPUs(ctx, uri, "nope", 1) }, "vm nope on test://"},
	}
	for _, tt := range tests {
		err := tt.change()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v, want one about %q", tt.name, err, tt.want)
		}
	}
	got, live, err := pool.ReadVM(ctx, uri, d.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if got.MemoryMiB != 512 || live.MemoryMiB != 512 {
		t.Errorf("memory = %d MiB defined, %d MiB live; want 512 both", got.MemoryMiB, live.MemoryMiB)
	}
	if got.VCPUs != 4 || live.VCPUs != 4 {
		t.Errorf("vcpus = %d defined, %d live; want 4 both", got.VCPUs, live.VCPUs)
	}
	if _, _, err := pool.ReadVM(ctx, uri, "nope"); !errors.Is(err, ErrNotDefined) {
		t.Errorf("ReadVM of a missing VM = %v, want ErrNotDefined", err)
	}
}

func TestSetMetadataChangesWhatEveryReaderSees(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := newTestPool(t)
	ctx := context.Background()
	d, err := pool.CreateVM(ctx, uri, testVM("web1"))
	if err != nil {
		t.Fatal(err)
	}
	vm, _, err := pool.ReadVM(ctx, uri, d.UUID)
	if err != nil {
		t.Fatal(err)
	}
	vm.Placement = Placement{Host: "beta", SpreadGroup: "db"}
	vm.AllowRestart = false
	vm.Disks[1].Volume = "web1-renamed"
	if err := pool.SetMetadata(ctx, uri, vm); err != nil {
		t.Fatal(err)
	}
	got, _, err := pool.ReadVM(ctx, uri, d.UUID)
	if err != nil {
		t.Fatal(err)
	}
	checkVM(t, got, vm)
}

func TestColdMoveDefinesOnTheDestinationThenUndefinesTheSource(t *testing.T) {
	t.Parallel()
	hosts := testHosts(t)
	pool := newTestPool(t)
	ctx := context.Background()
	vm := testVM("web1")
	vm.UUID = "11111111-2222-4333-8444-555555555555"
	if _, err := pool.DefineVM(ctx, hosts["alpha"], vm); err != nil {
		t.Fatal(err)
	}

	live, err := pool.Move(ctx, vm.UUID, hosts["alpha"], hosts["beta"], MigrateOptions{Initiator: HostInitiator("beta")})
	if err != nil {
		t.Fatal(err)
	}
	if live {
		t.Error("a stopped VM was moved live")
	}
	locs, err := pool.Locate(ctx, hosts, vm.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != 1 || locs[0].Host != "beta" {
		t.Fatalf("after the move the VM is on %+v, want beta only", locs)
	}
	got, _, err := pool.ReadVM(ctx, hosts["beta"], vm.UUID)
	if err != nil {
		t.Fatal(err)
	}
	want := vm
	want.Storage.Initiator = HostInitiator("beta")
	checkVM(t, got, want)
}

func TestColdMoveRefusesWhatItCannotMoveSafely(t *testing.T) {
	t.Parallel()
	hosts := testHosts(t)
	pool := newTestPool(t)
	ctx := context.Background()
	running := testVM("running")
	if _, err := pool.CreateVM(ctx, hosts["alpha"], running); err != nil {
		t.Fatal(err)
	}
	twice := testVM("twice")
	twice.UUID = "11111111-2222-4333-8444-555555555555"
	for _, uri := range hosts {
		if _, err := pool.DefineVM(ctx, uri, twice); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, vm, want string
	}{
		{"a running VM is left to live migration", "running", "migrate it live"},
		{"a VM already on the destination is left on both", twice.UUID, "already defined on the destination"},
	}
	for _, tt := range tests {
		err := pool.ColdMove(ctx, tt.vm, hosts["alpha"], hosts["beta"], MigrateOptions{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ColdMove = %v, want an error about %q", tt.name, err, tt.want)
		}
		if _, found, _ := pool.Domain(ctx, hosts["alpha"], tt.vm); !found {
			t.Errorf("%s: the VM is gone from the source", tt.name)
		}
	}
}

func TestUndefineRefusesARunningVM(t *testing.T) {
	t.Parallel()
	uri := newTestHost(t)
	pool := newTestPool(t)
	ctx := context.Background()
	d, err := pool.CreateVM(ctx, uri, testVM("web1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pool.Undefine(ctx, uri, d.UUID); err == nil || !strings.Contains(err.Error(), "shut it down first") {
		t.Errorf("Undefine of a running VM = %v, want a refusal", err)
	}
	if _, err := pool.Shutdown(ctx, uri, d.UUID, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := pool.Undefine(ctx, uri, d.UUID); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := pool.Domain(ctx, uri, d.UUID); found {
		t.Error("the VM is still defined after Undefine")
	}
	if err := pool.Undefine(ctx, uri, d.UUID); err != nil {
		t.Errorf("Undefine of a VM that is gone = %v, want nil", err)
	}
}

// networkNode is a test-driver host with two networks (one inactive) and a
// bridge over an ethernet interface.
const networkNode = `<node>
  <cpu><active>2</active><total>2</total><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>2097152</memory>
  <network><name>default</name><bridge name='virbr0'/></network>
  <network><name>lab</name><bridge name='virbr1'/></network>
  <interface type='ethernet' name='eth1'><start mode='onboot'/><mac address='aa:bb:cc:dd:ee:ff'/><mtu size='1492'/><protocol family='ipv4'><ip address='192.168.0.5' prefix='24'/></protocol></interface>
  <interface type='bridge' name='br0'><start mode='onboot'/><bridge stp='off'><interface type='ethernet' name='eth2'/></bridge></interface>
</node>`

func TestNetworksListsWhatAHostOffers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "node.xml")
	if err := os.WriteFile(path, []byte(networkNode), 0o644); err != nil {
		t.Fatal(err)
	}
	uri := "test://" + path
	pool := newTestPool(t)
	ctx := context.Background()

	n, err := pool.Networks(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Networks{Networks: []string{"default", "lab"}, Bridges: []string{"br0"}}); !reflect.DeepEqual(n, want) {
		t.Errorf("Networks = %+v, want %+v", n, want)
	}
	nics := []NIC{{Network: "default"}, {Network: "dmz"}, {Bridge: "br0"}, {Bridge: "br9"}}
	if got, want := n.Missing(nics), []string{"network dmz", "bridge br9"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Missing = %v, want %v", got, want)
	}
	err = pool.CheckNetworks(ctx, uri, nics)
	if err == nil || !strings.Contains(err.Error(), "lacks network dmz, bridge br9") {
		t.Errorf("CheckNetworks = %v, want it to name network dmz and bridge br9", err)
	}
	if err := pool.CheckNetworks(ctx, uri, nics[:1]); err != nil {
		t.Errorf("CheckNetworks of what the host has = %v", err)
	}
}
