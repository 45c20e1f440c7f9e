package provider

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
)

// providerBlockMaintenance is the lab's provider block with alpha in
// maintenance or not.
func (l vmLab) providerBlockMaintenance(alphaMaintenance bool) string {
	return l.providerBlockOf(l.alpha(fmt.Sprintf("maintenance = %v", alphaMaintenance)), l.beta())
}

// checkOnDistinctHosts asks libvirt where each VM is: each on exactly one
// host, no two on the same host, and together on exactly the hosts want.
func (l vmLab) checkOnDistinctHosts(names []string, want ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var got []string
		for _, name := range names {
			locs, err := l.libvirt.Locate(ctx, l.info.HostURIs(), name)
			if err != nil {
				return err
			}
			if len(locs) != 1 {
				return fmt.Errorf("vm %s: got locations %v, want exactly one", name, locs)
			}
			got = append(got, locs[0].Host)
		}
		sort.Strings(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("vms %v: on hosts %v, want one each on %v", names, got, want)
		}
		return nil
	}
}

func TestAccPlacementSpreadGroup(t *testing.T) {
	l := newVMLab(t)
	prefix := accName(t, "web")
	names := []string{prefix + "-1", prefix + "-2", prefix + "-3"}
	// webVMs declares the first n web VMs, not running and without disks
	// (cheap), in spread group "web", without pins. They are created in
	// parallel: the provider's placement lock keeps them apart.
	webVMs := func(n int, alphaMaintenance bool, strict ...bool) string {
		cfg := l.providerBlockMaintenance(alphaMaintenance)
		if len(strict) > 0 && strict[0] {
			cfg = l.providerBlockOf(l.alpha(fmt.Sprintf("maintenance = %v", alphaMaintenance)), l.beta(),
				"\n  placement {\n    strict_spread = true\n  }")
		}
		for i := range n {
			cfg += fmt.Sprintf(`
resource "drover_vm" "web%d" {
  name       = %q
  vcpus      = 1
  memory_mib = 64
  kernel     = %q
  initrd     = %q
  running    = false
  placement {
    spread_group = "web"
  }
}
`, i+1, names[i], l.info.GuestKernel, l.info.GuestInitrd)
		}
		return cfg
	}
	warnings := &planWarnings{}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProvidersWarnings(t, warnings),
		CheckDestroy:             l.checkVMGone(names, nil),
		Steps: []resource.TestStep{
			{
				Config: webVMs(2, false),
				Check:  l.checkOnDistinctHosts(names[:2], "alpha", "beta"),
			},
			{
				Config:      webVMs(3, false),
				PlanOnly:    true,
				ExpectError: words(`Unable to place VM`, `spread group "web" has 3 VMs`, `only 2 hosts (alpha, beta), all in service`),
			},
			{
				// Maintenance on alpha leaves the group one host: with
				// strict_spread, that is refused before anything moves.
				Config:      webVMs(2, true, true),
				PlanOnly:    true,
				ExpectError: words(`Unable to place VM`, `spread group "web" has 2 VMs`, `placement.strict_spread = true never lets`, `Nothing was moved`),
			},
			{
				// Nothing moved or was created by the refused plan.
				Config:   webVMs(2, false),
				PlanOnly: true,
				Check:    l.checkOnDistinctHosts(names[:2], "alpha", "beta"),
			},
			{
				// Without it, the group shares beta while alpha is in
				// maintenance (one apply), with a warning ...
				PreConfig: warnings.reset,
				Config:    webVMs(2, true),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					warnings.expect(words(fmt.Sprintf(`Spread group "web" shares hosts while alpha is in maintenance: beta runs %s, %s`, names[0], names[1]))),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkOnDistinctHosts(names[:1], "beta"), l.checkOnDistinctHosts(names[1:2], "beta")),
			},
			{
				// ... and spreads again by itself when alpha is back (one apply).
				Config: webVMs(2, false),
				Check:  l.checkOnDistinctHosts(names[:2], "alpha", "beta"),
			},
		},
	})
}

// records follows a lab guest's record sequence across hosts: the console
// log follows the VM to each host's log folder, so both are read.
type records struct {
	l    vmLab
	name string
	seen map[int]bool
	last int
}

var (
	recordRe      = regexp.MustCompile(`drover-guest: record seq=(\d+)`)
	writeFailedRe = regexp.MustCompile(`drover-guest: write failed`)
)

// check waits until the guest has written a few records past the last
// check, then proves that every record from the first seen to the last is
// there (no gap), that no write failed, and that the guest booted once.
func (r *records) check() resource.TestCheckFunc {
	return func(*terraform.State) error {
		deadline := time.Now().Add(90 * time.Second)
		for {
			var boots, failed int
			for _, host := range []string{"alpha", "beta"} {
				b, _ := os.ReadFile(r.l.consoleLog(host, r.name))
				for _, m := range recordRe.FindAllSubmatch(b, -1) {
					n, _ := strconv.Atoi(string(m[1]))
					r.seen[n] = true
				}
				boots += len(bootedRe.FindAll(b, -1))
				failed += len(writeFailedRe.FindAll(b, -1))
			}
			if failed > 0 {
				return fmt.Errorf("vm %s: %d failed writes on its disk", r.name, failed)
			}
			if boots > 1 {
				return fmt.Errorf("vm %s booted %d times, want once: it restarted", r.name, boots)
			}
			seqs := make([]int, 0, len(r.seen))
			for n := range r.seen {
				seqs = append(seqs, n)
			}
			sort.Ints(seqs)
			if len(seqs) > 0 && seqs[len(seqs)-1] >= r.last+3 {
				first, last := seqs[0], seqs[len(seqs)-1]
				if len(seqs) != last-first+1 {
					var missing []int
					for n := first; n <= last; n++ {
						if !r.seen[n] {
							missing = append(missing, n)
						}
					}
					return fmt.Errorf("vm %s: records %d to %d have gaps, missing %v", r.name, first, last, missing)
				}
				r.last = last
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("vm %s: no new records past seq=%d within 90s", r.name, r.last)
			}
			time.Sleep(time.Second)
		}
	}
}

func TestAccPlacementMaintenance(t *testing.T) {
	l := newVMLab(t)
	prefix := accName(t, "mnt")
	a, b := prefix+"-a", prefix+"-b"
	recA := &records{l: l, name: a, seen: map[int]bool{}}
	recB := &records{l: l, name: b, seen: map[int]bool{}}
	watch := l.watchTwoHosts(t, a, b)
	// config runs a (preferring alpha) and b (preferring beta, or pinned
	// to pinB), each writing records to its own disk, with alpha in
	// maintenance or not.
	config := func(maintenance bool, pinB string) string {
		cfg := l.providerBlockMaintenance(maintenance)
		for _, vm := range []struct{ key, name, place string }{
			{"a", a, `{ preferred_hosts = ["alpha"] }`},
			{"b", b, `{ preferred_hosts = ["beta"] }`},
		} {
			if vm.key == "b" && pinB != "" {
				vm.place = fmt.Sprintf(`{ host = %q }`, pinB)
			}
			cfg += fmt.Sprintf(`
resource "drover_volume" "%[1]s" {
  name     = "%[2]s-disk"
  size_mib = 16
}

resource "drover_vm" "%[1]s" {
  name       = %[2]q
  vcpus      = 1
  memory_mib = 128
  kernel     = %[3]q
  initrd     = %[4]q
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.%[1]s.id }]
  placement %[5]s
  timeouts {
    update = "5m"
  }
}
`, vm.key, vm.name, l.info.GuestKernel, l.info.GuestInitrd, vm.place)
		}
		return cfg
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone([]string{a, b}, []string{a + "-disk", b + "-disk"}),
		Steps: []resource.TestStep{
			{
				Config: config(false, ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMOn("alpha", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("beta", b, []string{b + "-disk"}, false, true),
					resource.TestCheckResourceAttr("drover_vm.a", "host", "alpha"),
					recA.check(), recB.check(),
				),
			},
			{
				// The plan shows a leaving alpha, its destination known
				// after apply; apply migrates it live.
				PreConfig: watch.start,
				Config:    config(true, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("drover_vm.a", plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue("drover_vm.a", tfjsonpath.New("host")),
					plancheck.ExpectKnownValue("drover_vm.b", tfjsonpath.New("host"), knownvalue.StringExact("beta")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					watch.check(),
					l.checkVMOn("beta", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("beta", b, []string{b + "-disk"}, false, true),
					resource.TestCheckResourceAttr("drover_vm.a", "host", "beta"),
					resource.TestCheckResourceAttr("drover_vm.b", "host", "beta"),
					recA.check(), recB.check(),
				),
			},
			{
				// Out of maintenance, a fails back to alpha.
				PreConfig: watch.start,
				Config:    config(false, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectUnknownValue("drover_vm.a", tfjsonpath.New("host")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					watch.check(),
					l.checkVMOn("alpha", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("beta", b, []string{b + "-disk"}, false, true),
					resource.TestCheckResourceAttr("drover_vm.a", "host", "alpha"),
					recA.check(), recB.check(),
				),
			},
			{
				// A new pin is known at plan time, and b moves there live.
				PreConfig: watch.start,
				Config:    config(false, "alpha"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectKnownValue("drover_vm.b", tfjsonpath.New("host"), knownvalue.StringExact("alpha")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					watch.check(),
					l.checkVMOn("alpha", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("alpha", b, []string{b + "-disk"}, false, true),
					recA.check(), recB.check(),
				),
			},
		},
	})
}

// planWarnings records the warnings of every plan the provider makes, so
// that a test can read what the user is told about a move.
type planWarnings struct {
	mu   sync.Mutex // guards seen: Terraform plans resources in parallel
	seen []string
}

func (w *planWarnings) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = nil
}

// expect is a plan check that some warning of the plan matches re.
func (w *planWarnings) expect(re *regexp.Regexp) plancheck.PlanCheck { return warningCheck{w, re} }

type warningCheck struct {
	w  *planWarnings
	re *regexp.Regexp
}

func (c warningCheck) CheckPlan(_ context.Context, _ plancheck.CheckPlanRequest, resp *plancheck.CheckPlanResponse) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	for _, s := range c.w.seen {
		if c.re.MatchString(s) {
			return
		}
	}
	resp.Error = fmt.Errorf("no plan warning matches %q; got %q", c.re, c.w.seen)
}

// warningServer is the provider, with the warnings of its plans recorded.
type warningServer struct {
	tfprotov6.ProviderServer
	w *planWarnings
}

func (s warningServer) PlanResourceChange(ctx context.Context, req *tfprotov6.PlanResourceChangeRequest) (*tfprotov6.PlanResourceChangeResponse, error) {
	resp, err := s.ProviderServer.PlanResourceChange(ctx, req)
	if resp != nil {
		s.w.mu.Lock()
		for _, d := range resp.Diagnostics {
			if d.Severity == tfprotov6.DiagnosticSeverityWarning {
				s.w.seen = append(s.w.seen, d.Summary+": "+d.Detail)
			}
		}
		s.w.mu.Unlock()
	}
	return resp, err
}

// accProvidersWarnings is accProviders with the plans' warnings recorded in w.
func accProvidersWarnings(t *testing.T, w *planWarnings) map[string]func() (tfprotov6.ProviderServer, error) {
	t.Helper()
	factories := accProviders(t)
	serve := factories["drover"]
	factories["drover"] = func() (tfprotov6.ProviderServer, error) {
		s, err := serve()
		if err != nil {
			return nil, err
		}
		return warningServer{ProviderServer: s, w: w}, nil
	}
	return factories
}

// alphaReservedFor returns the reserved_memory_mib that leaves room MiB
// placeable on alpha with what libvirt reports for it now: its memory and
// the maximum memory of every domain defined there.
func (l vmLab) alphaReservedFor(t *testing.T, room int64) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := l.libvirt.Host(ctx, l.info.AlphaURI)
	if err != nil {
		t.Fatalf("ask libvirt about alpha: %v", err)
	}
	reserved := h.MemoryMiB - h.CommittedMemoryMiB() - room
	if reserved < 0 {
		t.Fatalf("alpha has %d MiB with %d MiB committed: less than %d MiB of room", h.MemoryMiB, h.CommittedMemoryMiB(), room)
	}
	return reserved
}

// checkMovedThenRestarted proves, from the console logs of both hosts, that
// the guest's records before its restart have no gap (the live move lost
// none), that it booted once more on host and resumed after the last record
// it had written (no lost record), and that it writes records past it.
func (l vmLab) checkMovedThenRestarted(host, name string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		deadline := time.Now().Add(90 * time.Second)
		for {
			err := l.movedThenRestarted(host, name)
			if err == nil || time.Now().After(deadline) {
				return err
			}
			time.Sleep(time.Second)
		}
	}
}

func (l vmLab) movedThenRestarted(host, name string) error {
	before := map[int]bool{} // records written before the restart
	var resumed, after, boots int
	resumed = -1
	for _, h := range []string{"alpha", "beta"} {
		b, _ := os.ReadFile(l.consoleLog(h, name))
		for _, line := range strings.Split(string(b), "\n") {
			if writeFailedRe.MatchString(line) {
				return fmt.Errorf("vm %s: a write failed on %s: %s", name, h, line)
			}
			if bootedRe.MatchString(line) {
				boots++
			}
			if m := resumingRe.FindStringSubmatch(line); m != nil && h == host && boots == 2 {
				resumed, _ = strconv.Atoi(m[1])
				continue
			}
			m := recordRe.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			n, _ := strconv.Atoi(m[1])
			if resumed >= 0 {
				after = max(after, n)
			} else {
				before[n] = true
			}
		}
	}
	if boots != 2 || resumed < 0 {
		return fmt.Errorf("vm %s: %d boots and resumed: %v, want a second boot on %s that resumed", name, boots, resumed >= 0, host)
	}
	first, last := -1, 0
	for n := range before {
		if first < 0 || n < first {
			first = n
		}
		last = max(last, n)
	}
	for n := first; n <= last; n++ {
		if !before[n] {
			return fmt.Errorf("vm %s: records %d to %d before the restart miss seq=%d", name, first, last, n)
		}
	}
	if resumed < last {
		return fmt.Errorf("vm %s resumed after seq=%d, but it had written seq=%d: a record was lost", name, resumed, last)
	}
	if after < resumed+3 {
		return fmt.Errorf("vm %s: records after the restart reach seq=%d, want past %d", name, after, resumed+2)
	}
	return nil
}

func TestAccPlacementOutgrowsHost(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "grow")
	disk := name + "-disk"
	rec := &records{l: l, name: name, seen: map[int]bool{}}
	// Alpha gets room for the VM at 128 MiB but not at 256 MiB; beta keeps
	// its defaults.
	reserved := l.alphaReservedFor(t, 200)
	config := func(memory int) string {
		cfg := l.providerBlockOf(l.alpha(fmt.Sprintf("reserved_memory_mib = %d", reserved)), l.beta())
		return cfg + fmt.Sprintf(`
resource "drover_volume" "disk" {
  name     = %[2]q
  size_mib = 16
}

resource "drover_vm" "test" {
  name           = %[1]q
  vcpus          = 1
  memory_mib     = %[5]d
  max_memory_mib = %[5]d
  allow_restart  = true
  kernel         = %[3]q
  initrd         = %[4]q
  cmdline        = "console=ttyS0 no_timer_check"
  disks          = [{ volume_id = drover_volume.disk.id }]
  placement {
    preferred_hosts = ["alpha"]
  }
  timeouts {
    update = "5m"
  }
}
`, name, disk, l.info.GuestKernel, l.info.GuestInitrd, memory)
	}
	warnings := &planWarnings{}
	watch := l.watchTwoHosts(t, name)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProvidersWarnings(t, warnings),
		CheckDestroy:             l.checkVMGone([]string{name}, []string{disk}),
		Steps: []resource.TestStep{
			{
				Config: config(128),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMOn("alpha", name, []string{disk}, false, true),
					resource.TestCheckResourceAttr("drover_vm.test", "host", "alpha"),
					rec.check(),
				),
			},
			{
				// 256 MiB do not fit in alpha's 200: the plan says the VM
				// moves live to beta, apply moves it, then restarts it there
				// with its new maximum.
				PreConfig: func() { warnings.reset(); watch.start() },
				Config:    config(256),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("drover_vm.test", plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue("drover_vm.test", tfjsonpath.New("host")),
					warnings.expect(regexp.MustCompile(`(?s)^VM ` + regexp.QuoteMeta(name) + ` will move: .*moves from alpha, ` +
						`by a live migration.*because it no longer fits on alpha with its new size\. It is expected to go to beta`)),
					warnings.expect(regexp.MustCompile(`^VM will restart: VM ` + regexp.QuoteMeta(name) + ` will be shut down`)),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					watch.check(),
					l.checkVMOn("beta", name, []string{disk}, false, true),
					resource.TestCheckResourceAttr("drover_vm.test", "host", "beta"),
					resource.TestCheckResourceAttr("drover_vm.test", "memory_mib", "256"),
					l.checkMemory("beta", name, 256),
					l.checkMovedThenRestarted("beta", name),
				),
			},
			{
				// Alpha still cannot take it back: nothing to do.
				Config:   config(256),
				PlanOnly: true,
			},
		},
	})
}

// twoHostWatch polls alpha and beta for some VMs while a step moves them,
// and fails the step if a VM is ever running on both hosts at once.
//
// During a live migration libvirt defines the VM on both hosts: the
// destination's domain is paused (incoming) until the switch-over, and the
// source's is paused after it until it goes away. That is accepted: a VM
// counts as running on a host in state running or blocked only (blocked is
// a running VM whose vCPUs are idle). The hosts cannot be asked at one
// instant, so each sample asks alpha, beta, alpha, beta in turn and calls it
// a double run only when a host answers running on both sides of the other
// host's running answer: a switch-over between two calls is not one.
type twoHostWatch struct {
	t     *testing.T
	l     vmLab
	names []string
	stop  chan struct{}
	done  chan struct{}

	// Written by the polling goroutine, read after done is closed.
	samples, failedCalls, calls int
	onBoth                      []string // samples where a VM was defined on both hosts
	doubleRun                   []string
}

func (l vmLab) watchTwoHosts(t *testing.T, names ...string) *twoHostWatch {
	w := &twoHostWatch{t: t, l: l, names: names}
	t.Cleanup(func() { w.halt() })
	return w
}

// start begins polling every 100 ms (a step's PreConfig).
func (w *twoHostWatch) start() {
	w.halt()
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	w.samples, w.failedCalls, w.calls, w.onBoth, w.doubleRun = 0, 0, 0, nil, nil
	go w.poll(w.stop, w.done)
}

func (w *twoHostWatch) halt() {
	if w.stop == nil {
		return
	}
	close(w.stop)
	<-w.done
	w.stop = nil
}

func (w *twoHostWatch) poll(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	uris := []string{w.l.info.AlphaURI, w.l.info.BetaURI}
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		w.samples++
		for _, name := range w.names {
			var running [4]bool
			var states [4]hypervisor.State
			for i := range running {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				d, found, err := w.l.libvirt.Domain(ctx, uris[i%2], name)
				cancel()
				w.calls++
				if err != nil {
					w.failedCalls++
					continue
				}
				if found {
					states[i] = d.State
				}
				running[i] = found && (d.State == hypervisor.StateRunning || d.State == hypervisor.StateBlocked)
			}
			at := time.Now().Format("15:04:05.000")
			if states[0] != "" && states[1] != "" {
				w.onBoth = append(w.onBoth, fmt.Sprintf("%s %s: alpha %s, beta %s", at, name, states[0], states[1]))
			}
			if (running[0] && running[1] && running[2] || running[1] && running[2] && running[3]) && !w.oneFenced() {
				// A copy on a fenced host is stale by definition: it
				// cannot reach the disks (invariants 1 and 5).
				w.doubleRun = append(w.doubleRun, fmt.Sprintf("%s %s: alpha %q, beta %q, alpha %q, beta %q",
					at, name, states[0], states[1], states[2], states[3]))
			}
		}
	}
}

// oneFenced tells whether the storage box fences alpha or beta.
func (w *twoHostWatch) oneFenced() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fences, err := w.l.target.Fences(ctx)
	if err != nil {
		return false
	}
	for _, f := range fences {
		if f.Initiator == hypervisor.HostInitiator("alpha") || f.Initiator == hypervisor.HostInitiator("beta") {
			return true
		}
	}
	return false
}

// check stops the watch and fails if a VM ran on both hosts, or if the
// hosts could not be watched.
func (w *twoHostWatch) check() resource.TestCheckFunc {
	return func(*terraform.State) error {
		w.halt()
		w.t.Logf("watched %v for %d samples (%d libvirt calls, %d failed); defined on both hosts in %d, first: %v",
			w.names, w.samples, w.calls, w.failedCalls, len(w.onBoth), w.onBoth[:min(3, len(w.onBoth))])
		switch {
		case len(w.doubleRun) > 0:
			return fmt.Errorf("a VM ran on two hosts at once: %v", w.doubleRun)
		case w.samples < 5 || w.failedCalls*10 > w.calls:
			return fmt.Errorf("the hosts could not be watched: %d samples, %d of %d libvirt calls failed", w.samples, w.failedCalls, w.calls)
		}
		return nil
	}
}

// TestAccAPlanOfMoreVMsThanFitFailsBeforeAnythingIsCreated plans 200 new
// VMs, far more than the two lab hosts hold: every VM of the plan counts
// against the hosts' room together, so the plan fails, naming how many
// fit and what is short, and nothing is created.
func TestAccAPlanOfMoreVMsThanFitFailsBeforeAnythingIsCreated(t *testing.T) {
	l := newVMLab(t)
	prefix := accName(t, "many")
	config := l.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "disk" {
  count    = 200
  name     = "%[1]s-${count.index}-disk"
  size_mib = 16
}

resource "drover_vm" "many" {
  count      = 200
  name       = "%[1]s-${count.index}"
  vcpus      = 1
  memory_mib = 64
  kernel     = %[2]q
  initrd     = %[3]q
  disks      = [{ volume_id = drover_volume.disk[count.index].id }]
}
`, prefix, l.info.GuestKernel, l.info.GuestInitrd)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		Steps: []resource.TestStep{{
			Config:      config,
			PlanOnly:    true,
			ExpectError: words("The VMs of this plan do not fit", "of them fit (counted first)", "vCPUs free, needs 1", "Nothing was created"),
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for host, uri := range l.info.HostURIs() {
		out, err := virsh(uri, "list", "--all", "--name")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, prefix) {
			t.Errorf("host %s has domains of the refused plan:\n%s", host, out)
		}
	}
	vols, err := l.target.ListVolumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if strings.HasPrefix(v.Name, prefix) {
			t.Errorf("volume %s of the refused plan exists", v.Name)
		}
	}
}
