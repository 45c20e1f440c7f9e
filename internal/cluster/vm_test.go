package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestANewVMGoesToTheEmptierHostAndRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	first, err := e.c.Create(ctx, VMSpec{VM: vm("web1", 1024), Running: true})
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.c.Create(ctx, VMSpec{VM: vm("web2", 1024), Running: false})
	if err != nil {
		t.Fatal(err)
	}
	if first.Host == second.Host {
		t.Errorf("both VMs went to %s, want them spread over alpha and beta", first.Host)
	}
	if !first.Domain.State.Active() || second.Domain.State.Active() {
		t.Errorf("states %s and %s, want web1 running and web2 defined only", first.Domain.State, second.Domain.State)
	}
	got, _, err := e.c.ReadVM(ctx, first)
	if err != nil || !got.Managed || got.Type != "qemu" {
		t.Errorf("ReadVM = %+v, %v; want Drover's VM of domain type qemu (the test hosts offer no kvm)", got, err)
	}
}

func TestAPinnedVMGoesToItsHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		v := vm(name, 512)
		v.Placement.Host = "beta"
		if _, err := e.c.Create(ctx, VMSpec{VM: v}); err != nil {
			t.Fatal(err)
		}
		e.wantOn(t, name, "beta")
	}
}

func TestCreateRefusesANameThatIsTaken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.hosts.DefineVM(ctx, e.uri["beta"], vm("taken", 128)); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.Create(ctx, VMSpec{VM: vm("taken", 128)})
	wantErr(t, err, "already defined on beta: import it")
	e.wantOn(t, "taken", "beta")
}

func TestCreateWithDisksNeedsStorage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	v := vm("disky", 128)
	v.Disks = []hypervisor.Disk{{Volume: "disky-root"}}
	if _, err := e.c.Create(context.Background(), VMSpec{VM: v}); !errors.Is(err, ErrNoStorage) {
		t.Errorf("got %v, want ErrNoStorage", err)
	}
	e.wantOn(t, "disky")
}

func TestAVMTooLargeForEveryHostIsRefusedNamingWhatEachHolds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	_, err := e.c.PlanNew(context.Background(), vm("huge", 8192))
	var tooLarge *TooLargeError
	if !errors.As(err, &tooLarge) || !strings.Contains(err.Error(), "alpha: at most 3584 MiB; beta: at most 3584 MiB") {
		t.Errorf("got %v, want a TooLargeError naming what alpha and beta hold", err)
	}
}

func TestFreeMemoryIsWhatPlacementRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	pinned := vm("base", 1000)
	pinned.Placement.Host = "alpha"
	if _, err := e.c.Create(ctx, VMSpec{VM: pinned}); err != nil {
		t.Fatal(err)
	}
	free := e.c.Survey(ctx).FreeMemoryMiB("alpha")
	if free != 3584-1000 {
		t.Fatalf("alpha has %d MiB free, want %d", free, 3584-1000)
	}
	over := vm("over", free+1)
	over.Placement.Host = "alpha"
	_, err := e.c.PlanNew(ctx, over)
	wantErr(t, err, "alpha:")
	fits := vm("fits", free)
	fits.Placement.Host = "alpha"
	if _, err := e.c.PlanNew(ctx, fits); err != nil {
		t.Errorf("a VM of exactly the free %d MiB: %v, want it to fit", free, err)
	}
}

func TestASurveyReportsAHostThatCannotBeAskedAndGoesOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.c.Create(ctx, VMSpec{VM: vm("a", 256)}); err != nil {
		t.Fatal(err)
	}
	hosts := append(slices.Clone(e.c.cfg.Hosts), HostConfig{Name: "gone", URI: "test:///nonexistent/node.xml"})
	view := Survey(ctx, e.hosts, hosts)
	gone, _ := view.Host("gone")
	if gone.Err == nil {
		t.Error("a host without a node file answered")
	}
	vms := 0
	for _, h := range view.Hosts[:2] {
		if h.Err != nil {
			t.Errorf("%s: %v", h.Config.Name, h.Err)
		}
		vms += len(h.VMs)
	}
	if vms != 1 {
		t.Errorf("found %d Drover VMs, want a", vms)
	}
	if note := view.UnreachableNote(); note != " (not asked, cannot be reached: gone)" {
		t.Errorf("note = %q", note)
	}
}

func TestLocateRefusesAVMDefinedOnTwoHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	twice := vm("twice", 128)
	twice.UUID = "11111111-2222-4333-8444-555555555555"
	for _, uri := range e.uri {
		if _, err := e.hosts.DefineVM(ctx, uri, twice); err != nil {
			t.Fatal(err)
		}
	}
	_, _, _, err := e.c.Locate(ctx, twice.UUID)
	var defined *DefinedTwiceError
	if !errors.As(err, &defined) {
		t.Fatalf("got %v, want a DefinedTwiceError", err)
	}
	want := "VM " + twice.UUID + " is defined on alpha and beta: a VM may be defined on one host only (domain twice)"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %q, want it to start %q", err, want)
	}
	// Planning finds the same, in the same words.
	_, err = e.c.PlanChange(ctx, twice, twice, "alpha")
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("PlanChange: got %v, want %q", err, want)
	}
}

func TestARunningVMGrowsLiveWithinItsMaximum(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	had := VMSpec{VM: vm("grow", 256), Running: true}
	had.VM.MaxMemoryMiB = 1024
	loc, err := e.c.Create(ctx, had)
	if err != nil {
		t.Fatal(err)
	}
	had.VM.UUID = loc.Domain.UUID
	want := had
	want.VM.MemoryMiB = 768
	want.VM.Placement.SpreadGroup = "web"
	after, err := e.c.Update(ctx, had, want, loc.Host, loc.Host, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, dom, err := e.c.ReadVM(ctx, after)
	if err != nil {
		t.Fatal(err)
	}
	if after.Host != loc.Host || got.MemoryMiB != 768 || dom.MemoryMiB != 768 || !dom.State.Active() || dom.UUID != loc.Domain.UUID {
		t.Errorf("after the update: on %s, %d MiB defined, %d live, %s; want still running on %s with 768 MiB",
			after.Host, got.MemoryMiB, dom.MemoryMiB, dom.State, loc.Host)
	}
	if got.Placement.SpreadGroup != "web" {
		t.Errorf("spread group = %q, want web (metadata changes live)", got.Placement.SpreadGroup)
	}
}

func TestAStoppedVMMovesColdOffAHostInMaintenance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	spec := e.pinned(t, VMSpec{VM: vm("db", 512)}, "alpha", false)

	// The same hosts, alpha now in maintenance: the next apply's cluster.
	c := New(withHosts(e.c.cfg, inMaintenance("alpha")), e.c.access, e.c.hosts, e.c.storage, nil)
	mv, err := c.PlanChange(ctx, spec.VM, spec.VM, "alpha")
	if err != nil || !mv.Moves() || mv.Host != "beta" || mv.Live {
		t.Fatalf("plan: %+v, %v; want a cold move to beta", mv, err)
	}
	after, err := c.Update(ctx, spec, spec, "", "alpha", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after.Host != "beta" {
		t.Errorf("after the update it is on %s, want beta", after.Host)
	}
	e.wantOn(t, "db", "beta")
}

func TestAnApplyRefusesAMoveThePlanDidNotShow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	spec := e.pinned(t, VMSpec{VM: vm("db", 512)}, "alpha", true)
	want := spec
	want.VM.Placement.Host = ""
	c := New(withHosts(e.c.cfg, inMaintenance("alpha")), e.c.access, e.c.hosts, e.c.storage, nil)
	_, err := c.Update(ctx, spec, want, "alpha", "alpha", time.Second)
	wantErr(t, err, "was planned on alpha, but the cluster changed since the plan")
	e.wantOn(t, "db", "alpha")
}

func TestDeleteRemovesTheVMAndItsSeedButNotItsDisks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	if _, err := e.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "web1-root", SizeMiB: 4}); err != nil {
		t.Fatal(err)
	}
	spec := VMSpec{VM: vm("web1", 256), Running: true, Seed: &cloudinit.Seed{MetaData: "instance-id: web1\n"}}
	spec.VM.Disks = []hypervisor.Disk{{Volume: "web1-root"}}
	spec.VM.CloudInit = &hypervisor.CDROM{Volume: SeedVolumeName("web1")}
	loc, err := e.c.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Delete(ctx, loc.Domain.UUID, "web1", time.Second); err != nil {
		t.Fatal(err)
	}
	e.wantOn(t, "web1")
	if _, err := e.client.GetVolume(ctx, "web1-seed"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("seed volume: %v, want it gone", err)
	}
	if _, err := e.client.GetVolume(ctx, "web1-root"); err != nil {
		t.Errorf("disk volume: %v, want it kept", err)
	}
}

func TestAHostIsLetInToEveryVolumeOfItsVM(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	for _, v := range []string{"db-root", "db-data"} {
		if _, err := e.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: v, SizeMiB: 4}); err != nil {
			t.Fatal(err)
		}
	}
	spec := VMSpec{VM: vm("db", 256)}
	spec.VM.Placement.Host = "beta"
	spec.VM.Disks = []hypervisor.Disk{{Volume: "db-root"}, {Volume: "db-data"}}
	loc, err := e.c.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	initiator := hypervisor.HostInitiator("beta")
	for i, name := range []string{"db-root", "db-data"} {
		v, err := e.client.GetVolume(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(v.Initiators, initiator) || v.CHAP == nil || v.CHAP.User != e.c.access.CHAPUser {
			t.Errorf("volume %s lets in %v with CHAP %+v, want %s with user %s", name, v.Initiators, v.CHAP, initiator, e.c.access.CHAPUser)
		}
		got, _, err := e.c.ReadVM(ctx, loc)
		if err != nil {
			t.Fatal(err)
		}
		if d := got.Disks[i]; d.IQN != v.IQN || got.Storage.Initiator != initiator || !got.Storage.CHAP {
			t.Errorf("disk %d = %+v on storage %+v, want %s logged in to as %s with CHAP", i+1, d, got.Storage, v.IQN, initiator)
		}
	}
	if got := e.hosts.secret(e.uri["beta"]); got != e.c.access.CHAPSecret {
		t.Errorf("beta's CHAP secret is %q, want Drover's", got)
	}
}

func TestASeedIsWrittenToItsVolumeAndReadsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	seed := cloudinit.Seed{UserData: "#cloud-config\n", MetaData: "instance-id: web1\n"}
	spec := VMSpec{VM: vm("web1", 256), Seed: &seed}
	spec.VM.CloudInit = &hypervisor.CDROM{Volume: SeedVolumeName("web1")}
	if _, err := e.c.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	got, err := e.c.ReadSeed(ctx, "web1-seed")
	if err != nil {
		t.Fatal(err)
	}
	if got != seed {
		t.Errorf("seed read back = %+v, want %+v", got, seed)
	}
	snaps, err := e.client.ListSnapshots(ctx, "web1-seed")
	if err != nil || len(snaps) != 0 {
		t.Errorf("snapshots left: %v, %v; want none", snaps, err)
	}
}

func TestWhileInUseWaitsForSessionsToGo(t *testing.T) {
	t.Parallel()
	calls := 0
	err := WhileInUse(context.Background(), func() error {
		calls++
		if calls < 3 {
			return &storage.Error{StatusCode: 409, Message: "volume is in use"}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("got %v after %d calls, want success on the third", err, calls)
	}
	other := errors.New("boom")
	calls = 0
	if err := WhileInUse(context.Background(), func() error { calls++; return other }); err != other || calls != 1 {
		t.Errorf("another error: got %v after %d calls, want it at once", err, calls)
	}
}

// withHosts returns cfg with its own copy of the hosts, changed by opts.
func withHosts(cfg Config, opts ...envOption) Config {
	cfg.Hosts = slices.Clone(cfg.Hosts)
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}
