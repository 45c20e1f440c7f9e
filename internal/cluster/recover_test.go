package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// failed declares the host failed; with uri set, it is also reached there
// (a URI that does not answer makes it silent).
func failed(host, uri string) envOption {
	return func(c *Config) {
		for i := range c.Hosts {
			if c.Hosts[i].Name == host {
				c.Hosts[i].Failed = true
				if uri != "" {
					c.Hosts[i].URI = uri
				}
			}
		}
	}
}

// silentURI is a host that never answers.
const silentURI = "test:///nonexistent/silent.xml"

// startOrder records, at each start of a VM, whether the failed host was
// fenced at the storage box by then.
type startOrder struct {
	Runner
	fences Fencer
	host   string
	mu     sync.Mutex
	seen   []string // "start <vm> on <uri>: fenced=<bool>"
}

func (s *startOrder) record(uri, vm string) {
	fs, err := s.fences.Fences(context.Background())
	fenced := err == nil && slices.ContainsFunc(fs, func(f wire.Fence) bool {
		return f.Initiator == hypervisor.HostInitiator(s.host)
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, fmt.Sprintf("start %s: fenced=%v", vm, fenced))
}

func (s *startOrder) CreateVM(ctx context.Context, uri string, vm hypervisor.VM) (hypervisor.Domain, error) {
	s.record(uri, vm.Name)
	return s.Runner.CreateVM(ctx, uri, vm)
}

func (s *startOrder) Start(ctx context.Context, uri, vm string) (hypervisor.Domain, error) {
	s.record(uri, vm)
	return s.Runner.Start(ctx, uri, vm)
}

// withDisk creates a volume for the VM and gives it to spec as its disk.
func (e testEnv) withDisk(t *testing.T, spec VMSpec) VMSpec {
	t.Helper()
	name := spec.VM.Name + "-root"
	if _, err := e.client.CreateVolume(context.Background(), wire.CreateVolumeRequest{Name: name, SizeMiB: 4}); err != nil {
		t.Fatal(err)
	}
	spec.VM.Disks = []hypervisor.Disk{{Volume: name}}
	return spec
}

func (e testEnv) fences(t *testing.T) []string {
	t.Helper()
	fs, err := e.client.Fences(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fs {
		out = append(out, f.Initiator)
	}
	return out
}

func TestAFailedHostIsFencedBeforeItsVMStartsElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	spec := e.pinned(t, e.withDisk(t, VMSpec{VM: vm("web1", 256), Running: true}), "alpha", false)

	// alpha still answers, but it is declared failed: never trusted.
	c := New(withHosts(e.c.cfg, failed("alpha", "")), e.c.access, e.c.hosts, e.c.storage, nil)
	order := &startOrder{Runner: e.hosts, fences: e.client, host: "alpha"}
	c.hosts.Runner = order
	planned, err := c.PlanChange(ctx, spec.VM, spec.VM, "alpha")
	if err != nil || !planned.Moves() || planned.Host != "beta" || planned.Live || !planned.SourceAnswers {
		t.Fatalf("plan: %+v, %v; want a cold restart on beta, its source still answering", planned, err)
	}
	wantErr(t, errors.New(planned.Warning("")), "by a cold restart from its shared disks, after alpha is fenced",
		"because its host alpha is declared failed", "maintenance = true instead of failed = true would move its VMs live")

	after, err := c.Update(ctx, spec, spec, "", "alpha", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if after.Host != "beta" || after.Domain.UUID != spec.VM.UUID || !after.Domain.State.Active() {
		t.Errorf("after recovery: %+v; want running on beta with the same UUID %s", after, spec.VM.UUID)
	}
	e.wantOn(t, "web1", "beta") // its copy on the failed host is gone
	if got, want := order.seen, []string{"start web1: fenced=true"}; !slices.Equal(got, want) {
		t.Errorf("starts: %q, want %q (the fence comes first)", got, want)
	}
	if got := e.fences(t); !slices.Equal(got, []string{hypervisor.HostInitiator("alpha")}) {
		t.Errorf("fences: %q, want alpha's", got)
	}
	vol, err := e.client.GetVolume(ctx, "web1-root")
	if err != nil || !slices.Contains(vol.Initiators, hypervisor.HostInitiator("beta")) {
		t.Errorf("volume %+v, %v: beta is not let in", vol, err)
	}
}

func TestAVMOfASilentFailedHostRestartsAndItsStaleCopyGoesWhenTheHostIsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	spec := e.pinned(t, e.withDisk(t, VMSpec{VM: vm("db1", 256)}), "alpha", false) // stopped: the test driver cannot migrate live
	spec.VM.Placement.PreferredHosts = []string{"alpha"}

	// alpha stops answering; its VM is still defined there.
	silent := New(withHosts(e.c.cfg, func(c *Config) { c.Hosts[0].URI = silentURI }), e.c.access, e.c.hosts, e.c.storage, nil)
	mv, err := silent.PlanChange(ctx, spec.VM, spec.VM, "alpha")
	if err != nil || mv.Found {
		t.Fatalf("plan while alpha is silent: %+v, %v; want nothing decided for its VM", mv, err)
	}
	var na *NotAnsweredError
	if _, _, _, err := silent.Locate(ctx, spec.VM.UUID); !errors.As(err, &na) {
		t.Fatalf("locate: %v, want a NotAnsweredError", err)
	}

	// Declared failed: the plan restarts it on beta, the apply does.
	dead := New(withHosts(e.c.cfg, failed("alpha", silentURI)), e.c.access, e.c.hosts, e.c.storage, nil)
	mv, err = dead.PlanChange(ctx, spec.VM, spec.VM, "alpha")
	if err != nil || !mv.Moves() || mv.Host != "beta" || mv.Reason != "host failed" || mv.SourceAnswers {
		t.Fatalf("plan with alpha failed: %+v, %v; want a restart on beta", mv, err)
	}
	after, err := dead.Update(ctx, spec, spec, "", "alpha", time.Second)
	if err != nil || after.Host != "beta" {
		t.Fatalf("recovery: %+v, %v", after, err)
	}
	e.wantOn(t, "db1", "alpha", "beta") // alpha's stale copy is still there: nobody could reach it

	// alpha is back, failed = false: the stale copy is seen as stale, not
	// as a VM defined twice; the plan says it goes, and where db1 fails back.
	back := New(withHosts(e.c.cfg), e.c.access, e.c.hosts, e.c.storage, nil)
	loc, found, _, err := back.Locate(ctx, spec.VM.UUID)
	if err != nil || !found || loc.Host != "beta" {
		t.Fatalf("locate after alpha is back: %+v %v %v; want beta (alpha's copy is stale)", loc, found, err)
	}
	planned, err := back.PlanChange(ctx, spec.VM, spec.VM, "beta")
	if err != nil || !planned.Moves() || planned.Host != "alpha" || planned.Reason != "failback to preferred host" {
		t.Fatalf("plan after alpha is back: %+v, %v; want a failback to alpha", planned, err)
	}
	if !slices.Equal(planned.Stale, []string{"alpha"}) {
		t.Errorf("stale copies on %q, want alpha", planned.Stale)
	}
	after, err = back.Update(ctx, spec, spec, "", "beta", time.Second)
	if err != nil || after.Host != "alpha" {
		t.Fatalf("failback: %+v, %v", after, err)
	}
	e.wantOn(t, "db1", "alpha")
	if got := e.fences(t); len(got) != 0 {
		t.Errorf("fences after alpha is back: %q, want none", got)
	}
}

func TestAFencedHostIsLetBackInOnlyWithoutStaleCopies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true)
	ctx := context.Background()
	spec := e.pinned(t, e.withDisk(t, VMSpec{VM: vm("mail", 256), Running: true}), "alpha", false)
	dead := New(withHosts(e.c.cfg, failed("alpha", silentURI)), e.c.access, e.c.hosts, e.c.storage, nil)
	if _, err := dead.Update(ctx, spec, spec, "", "alpha", time.Second); err != nil {
		t.Fatal(err)
	}
	// While alpha is still declared failed, nothing is let in.
	stillFailed := New(withHosts(e.c.cfg, failed("alpha", "")), e.c.access, e.c.hosts, e.c.storage, nil)
	wantErr(t, stillFailed.readmit(ctx, "alpha"), "host alpha is declared failed")
	e.wantOn(t, "mail", "alpha", "beta")

	// Back and in service: no failback wanted, but the apply of the VM
	// removes the stale copy, then lifts the fence; the VM stays on beta.
	back := New(withHosts(e.c.cfg), e.c.access, e.c.hosts, e.c.storage, nil)
	planned, err := back.PlanChange(ctx, spec.VM, spec.VM, "beta")
	if err != nil || planned.Moves() || !slices.Equal(planned.Stale, []string{"alpha"}) {
		t.Fatalf("plan: %+v, %v; want it to stay with alpha's stale copy named", planned, err)
	}
	after, err := back.Update(ctx, spec, spec, "", "beta", time.Second)
	if err != nil || after.Host != "beta" {
		t.Fatalf("apply: %+v, %v", after, err)
	}
	e.wantOn(t, "mail", "beta")
	if got := e.fences(t); len(got) != 0 {
		t.Errorf("fences: %q, want none", got)
	}
}

func TestAVMPinnedToAFailedHostStaysDownAndThePlanSaysSo(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	spec := e.pinned(t, VMSpec{VM: vm("pinned", 256), Running: true}, "alpha", true)
	other := e.pinned(t, VMSpec{VM: vm("free", 256), Running: true}, "alpha", false)
	dead := New(withHosts(e.c.cfg, failed("alpha", "")), e.c.access, e.c.hosts, e.c.storage, nil)
	planned, err := dead.PlanChange(ctx, spec.VM, spec.VM, "alpha")
	if err != nil || planned.Moves() {
		t.Fatalf("plan: %+v, %v; want it to stay", planned, err)
	}
	if len(planned.Warnings) != 1 || planned.Warnings[0].Summary != "VM pinned stays down" {
		t.Fatalf("warnings %+v, want one that VM pinned stays down", planned.Warnings)
	}
	wantErr(t, errors.New(planned.Warnings[0].Detail), "VM pinned is pinned to alpha, which is declared failed: it stays down")
	// The pinned VM does not stop the others from leaving.
	mv, err := dead.PlanChange(ctx, other.VM, other.VM, "alpha")
	if err != nil || mv.Host != "beta" {
		t.Errorf("the other VM of alpha: %+v, %v; want it restarted on beta", mv, err)
	}
}

func TestAPlanOfMoreVMsThanFitFailsNamingHowManyFit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	// Each host holds 3584 MiB of VMs: three VMs of 1024 MiB each, six in all.
	var fit, refused int
	var last error
	for i := range 9 {
		_, err := e.c.PlanNew(ctx, vm(fmt.Sprintf("vm%d", i), 1024))
		var full *PlanFullError
		switch {
		case err == nil:
			fit++
		case errors.As(err, &full):
			refused++
			last = err
		default:
			t.Fatalf("vm%d: %v, want nil or a PlanFullError", i, err)
		}
	}
	if fit != 6 || refused != 3 {
		t.Fatalf("%d fit and %d were refused, want 6 and 3", fit, refused)
	}
	wantErr(t, last, "6 of them fit", "VM vm8 does not fit beside them", "3 VMs of this plan do not fit so far",
		"alpha: 512 MiB free, needs 1024", "Nothing was created")
	e.wantOn(t, "vm0") // planning creates nothing

	// A change that grows a VM counts with the new VMs too.
	spec := e.pinned(t, VMSpec{VM: vm("grows", 256)}, "beta", false)
	bigger := spec.VM
	bigger.MemoryMiB, bigger.MaxMemoryMiB = 1024, 1024
	if _, err := e.c.PlanChange(ctx, bigger, spec.VM, "beta"); err == nil {
		t.Error("a VM grown past the room the plan's new VMs left was accepted")
	}
}

func TestASpreadGroupSharingAHostIsWarnedOnceNamingItsVMsAndWhy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ctx := context.Background()
	web := hypervisor.Placement{SpreadGroup: "web"}
	w1, w2 := vm("web1", 256), vm("web2", 256)
	w1.Placement, w2.Placement = web, web
	s1 := e.pinned(t, VMSpec{VM: w1, Running: true}, "alpha", false)
	s2 := e.pinned(t, VMSpec{VM: w2, Running: true}, "beta", false)

	c := New(withHosts(e.c.cfg, inMaintenance("alpha")), e.c.access, e.c.hosts, e.c.storage, nil)
	p1, err := c.PlanChange(ctx, s1.VM, s1.VM, "alpha")
	if err != nil || p1.Host != "beta" {
		t.Fatalf("web1: %+v, %v; want it to move to beta", p1, err)
	}
	p2, err := c.PlanChange(ctx, s2.VM, s2.VM, "beta")
	if err != nil || p2.Moves() {
		t.Fatalf("web2: %+v, %v; want it to stay", p2, err)
	}
	all := append(p1.Warnings, p2.Warnings...)
	if len(all) != 1 {
		t.Fatalf("warnings %q, want one for the group", all)
	}
	if all[0].Summary != `Spread group "web" shares hosts` {
		t.Errorf("summary %q", all[0].Summary)
	}
	wantErr(t, errors.New(all[0].Detail), `Spread group "web" shares hosts while alpha is in maintenance: beta runs web1, web2`,
		"spreads again by itself", "placement.strict_spread = true")

	strict := withHosts(e.c.cfg, inMaintenance("alpha"))
	strict.Placement.StrictSpread = true
	_, err = New(strict, e.c.access, e.c.hosts, e.c.storage, nil).PlanChange(ctx, s1.VM, s1.VM, "alpha")
	wantErr(t, err, "placement.strict_spread = true never lets two VMs of one spread group share a host")
}
