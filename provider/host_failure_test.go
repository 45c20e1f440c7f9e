package provider

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// seedVMs are the VMs of examples/cluster and where each runs while both
// hosts are in service.
var seedVMs = map[string]string{"mail": "alpha", "web-1": "alpha", "web-2": "beta", "db-1": "alpha", "db-2": "beta"}

// alphaVMs are the seed VMs that prefer alpha.
var alphaVMs = []string{"db-1", "mail", "web-1"}

// seedDir is examples/cluster run as a user runs it: its files in a folder
// of the test's own, the terraform CLI with the lab's CLI configuration
// (dev_overrides name the provider make lab built, so no terraform init)
// and lab.tfvars.
// examples/cluster uses for_each, which terraform-plugin-testing cannot
// read back, so the CLI is run directly.
type seedDir struct {
	t   *testing.T
	l   vmLab
	dir string
}

func (l vmLab) seedDir(t *testing.T) seedDir {
	t.Helper()
	d := seedDir{t: t, l: l, dir: t.TempDir()}
	b, err := os.ReadFile(filepath.Join(l.root, "examples", "cluster", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "main.tf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// extra writes (or, with "", removes) a configuration file beside main.tf.
func (d seedDir) extra(hcl string) {
	d.t.Helper()
	f := filepath.Join(d.dir, "extra.tf")
	if hcl == "" {
		_ = os.Remove(f)
		return
	}
	if err := os.WriteFile(f, []byte(hcl), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// run runs terraform with args and the lab's variables, and returns its
// output; exit code wantCode or the test fails.
func (d seedDir) run(wantCode int, args ...string) string {
	d.t.Helper()
	args = append(args, "-input=false", "-var-file="+filepath.Join(d.l.root, ".lab", "lab.tfvars"))
	cmd := exec.Command("terraform", append(args, "-no-color")...)
	cmd.Dir = d.dir
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+filepath.Join(d.l.root, ".lab", "terraformrc"),
		"CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	out, err := cmd.CombinedOutput()
	code := 0
	if exit, ok := err.(*exec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		d.t.Fatalf("terraform %s: %v", args[0], err)
	}
	d.t.Logf("terraform %s (exit %d):\n%s", strings.Join(args, " "), code, out)
	if code != wantCode {
		d.t.Fatalf("terraform %s: exit %d, want %d:\n%s", args[0], code, wantCode, out)
	}
	return string(out)
}

// apply applies with alpha's maintenance and failed flags, checks that
// the output matches every phrase list of want, and that the next plan
// is empty.
func (d seedDir) apply(maintenance, failed bool, want ...[]string) string {
	d.t.Helper()
	vars := []string{fmt.Sprintf("-var=alpha_maintenance=%v", maintenance), fmt.Sprintf("-var=alpha_failed=%v", failed)}
	out := d.run(0, append([]string{"apply", "-auto-approve"}, vars...)...)
	for _, w := range want {
		if !words(w...).MatchString(out) {
			d.t.Errorf("the apply's output does not say %q", w)
		}
	}
	d.run(0, append([]string{"plan", "-detailed-exitcode"}, vars...)...) // 2 would be a change left to make
	return out
}

// must fails the test now on a check's error.
func must(t *testing.T, checks ...func(*terraform.State) error) {
	t.Helper()
	for _, c := range checks {
		if err := c(nil); err != nil {
			t.Fatal(err)
		}
	}
}

// checkWhere asks libvirt where each VM is: defined on exactly one host
// that answers, that host the one of where, and running.
func (l vmLab) checkWhere(where map[string]string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, name := range slices.Sorted(maps.Keys(where)) {
			locs, err := l.libvirt.Locate(ctx, l.info.HostURIs(), name)
			if err != nil {
				return err
			}
			if len(locs) != 1 || locs[0].Host != where[name] || !locs[0].Domain.State.Active() {
				return fmt.Errorf("vm %s: got %+v, want it running on %s alone", name, locs, where[name])
			}
		}
		return nil
	}
}

// allOn is every VM of names on host.
func allOn(host string, names ...string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		out[n] = host
	}
	return out
}

// ringRecord is one record of a lab guest on its disk.
type ringRecord struct {
	seq  int
	boot string
}

var ringRe = regexp.MustCompile(`DROVER seq=(\d+) sum=[0-9a-f]{32} boot=([0-9a-f]+)`)

// ring reads the records on a VM's disk through the storage box.
func (l vmLab) ring(volume string) ([]ringRecord, error) {
	b, err := l.volumeBytes(volume)
	if err != nil {
		return nil, err
	}
	var out []ringRecord
	for _, m := range ringRe.FindAllSubmatch(b[:min(len(b), 1024*512)], -1) {
		n, _ := strconv.Atoi(string(m[1]))
		out = append(out, ringRecord{seq: n, boot: string(m[2])})
	}
	return out, nil
}

var (
	bootIDRe = regexp.MustCompile(`drover-guest: boot=([0-9a-f]+)`)
	resumeRe = regexp.MustCompile(`drover-guest: resuming after seq=(\d+)`)
)

// restarted is what a VM restarted elsewhere after a host failure says on
// its new host's console: the boot id of the new copy and the record it
// resumed after.
type restarted struct {
	boot   string
	resume int
}

// restartOn waits until the console of VM name on host shows a boot other
// than the ones of not, and the record it resumed after.
func (l vmLab) restartOn(host, name string, not map[string]bool) (restarted, error) {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(l.consoleLog(host, name))
		boots, resumes := bootIDRe.FindAllSubmatchIndex(b, -1), resumeRe.FindAllSubmatchIndex(b, -1)
		if len(boots) > 0 && len(resumes) > 0 {
			lb, lr := boots[len(boots)-1], resumes[len(resumes)-1]
			boot := string(b[lb[2]:lb[3]])
			n, _ := strconv.Atoi(string(b[lr[2]:lr[3]]))
			if !not[boot] && lr[0] > lb[0] { // the resume line of this boot
				return restarted{boot: boot, resume: n}, nil
			}
		}
		time.Sleep(time.Second)
	}
	return restarted{}, fmt.Errorf("vm %s: no new boot on %s's console within 90s", name, host)
}

// failover follows the VMs of a failed host through their restart: which
// boots ran before, and where each new copy resumed.
type failover struct {
	l     vmLab
	names []string
	old   map[string]bool // boot ids seen before the failure
	new   map[string]restarted
}

func (f *failover) before() resource.TestCheckFunc {
	return func(*terraform.State) error {
		f.old = map[string]bool{}
		for _, name := range f.names {
			for _, host := range []string{"alpha", "beta"} {
				b, _ := os.ReadFile(f.l.consoleLog(host, name))
				for _, m := range bootIDRe.FindAllSubmatch(b, -1) {
					f.old[string(m[1])] = true
				}
			}
		}
		if len(f.old) == 0 {
			return fmt.Errorf("no boot ids on the consoles of %v", f.names)
		}
		return nil
	}
}

// proves checks, for each VM, that its new copy booted on host and that
// the data proves no other copy wrote after it: every record on the disk
// past the new copy's resume point was written by the new copy's boot,
// while the new copy kept writing (a few records more).
func (f *failover) proves(host string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		f.new = map[string]restarted{}
		for _, name := range f.names {
			r, err := f.l.restartOn(host, name, f.old)
			if err != nil {
				return err
			}
			f.new[name] = r
			if err := f.onlyNewWrites(name, r, r.resume+3); err != nil {
				return err
			}
		}
		return nil
	}
}

// continues checks that each VM's new copy still writes, its records past
// its resume point still all its own: it moved live, without a restart.
func (f *failover) continues() resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, name := range f.names {
			r := f.new[name]
			recs, err := f.l.ring(name + "-disk")
			if err != nil {
				return err
			}
			if err := f.onlyNewWrites(name, r, highest(recs)+3); err != nil {
				return err
			}
		}
		return nil
	}
}

func highest(recs []ringRecord) int {
	h := 0
	for _, r := range recs {
		h = max(h, r.seq)
	}
	return h
}

// onlyNewWrites waits until VM name's disk has a record of seq at least
// upTo, and fails if a record past r.resume was written by another boot.
func (f *failover) onlyNewWrites(name string, r restarted, upTo int) error {
	deadline := time.Now().Add(90 * time.Second)
	for {
		recs, err := f.l.ring(name + "-disk")
		if err != nil {
			return err
		}
		var foreign []string
		for _, rec := range recs {
			if rec.seq > r.resume && rec.boot != r.boot {
				foreign = append(foreign, fmt.Sprintf("seq=%d boot=%s", rec.seq, rec.boot))
			}
		}
		if len(foreign) > 0 {
			return fmt.Errorf("vm %s: records past the new copy's resume point seq=%d were written by another boot than its %s: %v",
				name, r.resume, r.boot, foreign)
		}
		if highest(recs) >= upTo {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vm %s: its disk has no record seq=%d within 90s (highest %d)", name, upTo, highest(recs))
		}
		time.Sleep(2 * time.Second)
	}
}

// checkNoSessionOf fails if the storage box has a session of host's
// initiator.
func (l vmLab) checkNoSessionOf(host string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		sessions, err := l.target.Sessions(context.Background())
		if err != nil {
			return err
		}
		for _, s := range sessions {
			if s.Initiator == hypervisor.HostInitiator(host) {
				return fmt.Errorf("the fenced host %s still has a session to volume %s", host, s.Volume)
			}
		}
		return nil
	}
}

// checkFenced checks whether host is fenced at the storage box.
func (l vmLab) checkFenced(host string, want bool) resource.TestCheckFunc {
	return func(*terraform.State) error {
		fences, err := l.target.Fences(context.Background())
		if err != nil {
			return err
		}
		got := slices.ContainsFunc(fences, func(f wire.Fence) bool { return f.Initiator == hypervisor.HostInitiator(host) })
		if got != want {
			return fmt.Errorf("host %s fenced = %v, want %v (fences: %+v)", host, got, want, fences)
		}
		return nil
	}
}

// checkStillRunning fails unless every pid still runs: the stale copies on
// the cut-off host kept running, so the fence, not their death, kept them
// off the disks.
func checkStillRunning(pids *[]int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, pid := range *pids {
			if err := syscall.Kill(pid, 0); err != nil {
				return fmt.Errorf("the stale QEMU %d on the cut-off host is gone (%v): the test proves nothing", pid, err)
			}
		}
		return nil
	}
}

// libvirtdPID is the pid of a lab host's libvirtd, as the lab records it.
func (l vmLab) libvirtdPID(t *testing.T, host string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.root, ".lab", "hosts", host, "pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Fatalf("no pid of %s's libvirtd: %v", host, err)
	}
	return pid
}

// qemuPIDs are the pids of the QEMU processes running the named guests.
func qemuPIDs(t *testing.T, names ...string) []int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "qemu-system") {
			continue
		}
		for _, name := range names {
			if strings.Contains(string(b), "guest="+name+",") {
				pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
				out = append(out, pid)
			}
		}
	}
	if len(out) != len(names) {
		t.Fatalf("found QEMU pids %v for %v, want one each", out, names)
	}
	return out
}

// kill sends SIGKILL to each pid and waits until it is gone.
func kill(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// reviveLab runs `drover-lab up` again, as a user would run make lab: it
// starts the libvirtd of a host that died and leaves the rest as it is.
func (l vmLab) reviveLab(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(l.root, ".lab", "bin", "drover-lab"), "-dir", filepath.Join(l.root, ".lab"), "up")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("drover-lab up: %v: %s", err, out)
	}
}

// sessionWatch polls the storage box while a test runs and fails if a
// volume has sessions from two hosts outside a live migration (the VM
// defined on both hosts, both answering).
type sessionWatch struct {
	l       vmLab
	volumes map[string]string // volume → VM
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples int
	both    []string
	// lastMigrating is when each VM was last seen migrating; poll only.
	lastMigrating map[string]time.Time
}

func (l vmLab) watchSessions(t *testing.T, vms ...string) *sessionWatch {
	w := &sessionWatch{l: l, volumes: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{}),
		lastMigrating: map[string]time.Time{}}
	for _, vm := range vms {
		w.volumes[vm+"-disk"] = vm
	}
	go w.poll()
	t.Cleanup(w.halt)
	return w
}

func (w *sessionWatch) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *sessionWatch) poll() {
	defer close(w.done)
	host := map[string]string{hypervisor.HostInitiator("alpha"): "alpha", hypervisor.HostInitiator("beta"): "beta"}
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(250 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sessions, err := w.l.target.Sessions(ctx)
		cancel()
		if err != nil {
			continue
		}
		from := map[string]map[string]bool{}
		for _, s := range sessions {
			if _, ok := w.volumes[s.Volume]; ok && host[s.Initiator] != "" {
				if from[s.Volume] == nil {
					from[s.Volume] = map[string]bool{}
				}
				from[s.Volume][host[s.Initiator]] = true
			}
		}
		w.mu.Lock()
		w.samples++
		w.mu.Unlock()
		for vol, hosts := range from {
			vm := w.volumes[vol]
			if len(hosts) < 2 {
				continue
			}
			if w.migrating(vm) {
				w.lastMigrating[vm] = time.Now()
				continue
			}
			// At a migration's switch-over the source's domain goes a
			// moment before the storage box sees its sessions close.
			if time.Since(w.lastMigrating[vm]) < 2*time.Second {
				continue
			}
			w.mu.Lock()
			w.both = append(w.both, fmt.Sprintf("%s %s", time.Now().Format("15:04:05.000"), vol))
			w.mu.Unlock()
		}
	}
}

// migrating tells whether the VM is defined on both hosts, both answering:
// a live migration, whose two ends both open the disks.
func (w *sessionWatch) migrating(vm string) bool {
	for _, uri := range []string{w.l.info.AlphaURI, w.l.info.BetaURI} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, found, err := w.l.libvirt.Domain(ctx, uri, vm)
		cancel()
		if err != nil || !found {
			return false
		}
	}
	return true
}

func (w *sessionWatch) check() resource.TestCheckFunc {
	return func(*terraform.State) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.both) > 0 {
			return fmt.Errorf("volumes had sessions from two hosts outside a live migration: %v", w.both)
		}
		if w.samples < 5 {
			return fmt.Errorf("the storage box's sessions were sampled %d times only", w.samples)
		}
		return nil
	}
}

// TestAccSeedStory is the product's story on examples/cluster, one apply
// each way: alpha into maintenance (its VMs move to beta live, the spread
// groups share beta with a warning) and back (they return, the groups
// spread again); then alpha cut off (its libvirtd killed, its guests left
// running and writing): a change on beta still applies, and failed = true
// fences alpha and restarts its VMs on beta, the disks proving no stale
// copy wrote after the restart; alpha back with failed = false: its stale
// copies go, its fence is lifted, its VMs return live; then alpha dies
// whole (libvirtd and QEMU), with the same recovery.
func TestAccSeedStory(t *testing.T) {
	l := newVMLab(t)
	names := slices.Sorted(maps.Keys(seedVMs))
	// The example's names are fixed, and consoles are appended to: start
	// from empty ones, so that boots are counted from this run only.
	for _, n := range names {
		for _, host := range []string{"alpha", "beta"} {
			if err := os.Remove(l.consoleLog(host, n)); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
	}
	recs := map[string]*records{}
	for _, n := range names {
		recs[n] = &records{l: l, name: n, seen: map[int]bool{}}
	}
	unbroken := func() {
		t.Helper()
		for _, n := range names {
			must(t, recs[n].check())
		}
	}
	watch := l.watchTwoHosts(t, names...)
	sessions := l.watchSessions(t, names...)
	extra := accName(t, "beta")

	d := l.seedDir(t)
	t.Cleanup(func() {
		d.extra("")
		d.run(0, "destroy", "-auto-approve")
		must(t, l.checkVMGone(append(slices.Clone(names), extra), nil))
	})
	d.apply(false, false)
	must(t, l.checkWhere(seedVMs))
	unbroken()

	// Maintenance, one apply: alpha's VMs move to beta live, and the groups
	// share beta, warned once each.
	watch.start()
	d.apply(true, false,
		[]string{`Warning: Spread group "web" shares hosts`, `Spread group "web" shares hosts while alpha is in maintenance: beta runs web-1, web-2`},
		[]string{`Warning: Spread group "db" shares hosts`, `Spread group "db" shares hosts while alpha is in maintenance: beta runs db-1, db-2`},
		[]string{`VM mail will move`, `by a live migration`, `because its host alpha is in maintenance`})
	must(t, watch.check(), l.checkWhere(allOn("beta", names...)))
	unbroken()

	// Back, one apply: failback, and the groups spread again.
	watch.start()
	d.apply(false, false, []string{`VM web-1 will move`, `because its preferred host alpha can take it again`})
	must(t, watch.check(), l.checkWhere(seedVMs))
	unbroken()

	// alpha is cut off: its libvirtd killed, its guests left running and
	// writing. Its VMs keep their state, warned, and a change on beta applies.
	partition := &failover{l: l, names: alphaVMs}
	must(t, partition.before())
	stale := qemuPIDs(t, alphaVMs...)
	kill(t, l.libvirtdPID(t, "alpha"))
	d.extra(fmt.Sprintf(`
resource "drover_vm" "extra" {
  name       = %q
  vcpus      = 1
  memory_mib = 64
  kernel     = var.guest_kernel
  initrd     = var.guest_initrd
  running    = false
  placement {
    host = "beta"
  }
}
`, extra))
	d.apply(false, false, []string{"Warning: VM mail: host alpha does not answer", "VM mail was last seen on host alpha"},
		[]string{"Apply complete! Resources: 1 added, 0 changed, 0 destroyed."})
	must(t, checkStillRunning(&stale))

	// failed = true: fenced, then restarted on beta, cold; no session of
	// alpha is left, and the disks prove that only the new copies wrote.
	d.apply(false, true, []string{"VM mail restarts on another host", "after alpha is fenced at the storage box",
		"because its host alpha is declared failed"},
		[]string{"Apply complete! Resources: 0 added, 3 changed, 0 destroyed."})
	must(t, l.checkFenced("alpha", true), l.checkNoSessionOf("alpha"), checkStillRunning(&stale), partition.proves("beta"))

	// alpha's libvirtd is back and finds its stale guests; failed = false:
	// they go, the fence is lifted, the VMs that prefer alpha return live.
	l.reviveLab(t)
	watch.start()
	d.apply(false, false, []string{"stale copies are removed", "its copy on alpha, left from when that host was declared failed"})
	must(t, watch.check(), l.checkWhere(seedVMs), l.checkFenced("alpha", false), partition.continues())

	// alpha dies whole: libvirtd and its QEMU killed. The same recovery.
	death := &failover{l: l, names: alphaVMs}
	must(t, death.before())
	kill(t, qemuPIDs(t, alphaVMs...)...)
	kill(t, l.libvirtdPID(t, "alpha"))
	d.apply(false, true, []string{"VM web-1 restarts on another host"})
	must(t, l.checkFenced("alpha", true), l.checkNoSessionOf("alpha"), death.proves("beta"))
	l.reviveLab(t)
	watch.start()
	d.apply(false, false)
	must(t, watch.check(), l.checkWhere(seedVMs), l.checkFenced("alpha", false), death.continues(), sessions.check())
}
