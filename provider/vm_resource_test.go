package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/lab"
	"github.com/drover/terraform-provider-drover/internal/storage"
)

// vmLab is what a VM acceptance test asks for the truth: libvirt on every
// host and the storage box.
type vmLab struct {
	info    lab.Info
	libvirt *hypervisor.Pool
	target  *storage.Client
	root    string // the repository, whose .lab holds the hosts' logs
}

func newVMLab(t *testing.T) vmLab {
	t.Helper()
	info := accLab(t)
	pool := hypervisor.NewPool(hypervisor.Options{})
	t.Cleanup(func() { pool.Close() })
	target, err := storage.New(info.StorageEndpoint, info.StorageToken)
	if err != nil {
		t.Fatal(err)
	}
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return vmLab{info: info, libvirt: pool, target: target, root: root}
}

// providerBlock is the lab's provider block.
func (l vmLab) providerBlock() string { return l.providerBlockOf(l.alpha(), l.beta()) }

// providerBlockOf is the lab's provider block with these host blocks.
func (l vmLab) providerBlockOf(hosts ...string) string {
	return fmt.Sprintf(`
provider "drover" {%s
  storage {
    endpoint = %q
    token    = %q
    portal   = %q
  }
}
`, strings.Join(hosts, ""), l.info.StorageEndpoint, l.info.StorageToken, l.info.StoragePortal)
}

// alpha and beta are the lab hosts' blocks, with extra settings such as
// "maintenance = true".
func (l vmLab) alpha(extra ...string) string { return labHostBlock("alpha", l.info.AlphaURI, extra...) }
func (l vmLab) beta(extra ...string) string  { return labHostBlock("beta", l.info.BetaURI, extra...) }

// labHostBlock is a host block of the lab, whose hosts are domain type qemu.
func labHostBlock(name, uri string, extra ...string) string {
	b := fmt.Sprintf(`
  host {
    name        = %q
    uri         = %q
    domain_type = "qemu"
`, name, uri)
	for _, e := range extra {
		b += "    " + e + "\n"
	}
	return b + "  }"
}

// consoleLog is where the lab keeps the serial console of VM name on host.
func (l vmLab) consoleLog(host, name string) string {
	return filepath.Join(l.root, ".lab", "hosts", host, "log", "qemu", name+"-console.log")
}

// accName is a name unique to this run, for VMs and volumes.
func accName(t *testing.T, what string) string {
	t.Helper()
	return fmt.Sprintf("acc-%s-%d", what, time.Now().UnixNano()%1_000_000)
}

// checkVMOn asks libvirt on every host where VM name is: on host only, with
// the disks (volume names in order), a cloud-init CD-ROM when seed, and
// running or not.
func (l vmLab) checkVMOn(host, name string, disks []string, seed, running bool) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		locs, err := l.libvirt.Locate(ctx, l.info.HostURIs(), name)
		if err != nil {
			return err
		}
		if len(locs) != 1 || locs[0].Host != host {
			return fmt.Errorf("vm %s: got locations %v, want only %s", name, locs, host)
		}
		vm, dom, err := l.libvirt.ReadVM(ctx, locs[0].URI, name)
		if err != nil {
			return err
		}
		var got []string
		for _, d := range vm.Disks {
			if d.IQN == "" || vm.Storage.Portal != l.info.StoragePortal {
				return fmt.Errorf("vm %s disk %s: not an iSCSI disk at %s: %+v", name, d.Target, l.info.StoragePortal, d)
			}
			got = append(got, d.Volume)
		}
		if strings.Join(got, ",") != strings.Join(disks, ",") {
			return fmt.Errorf("vm %s: got disks %v, want %v", name, got, disks)
		}
		if want := hypervisor.HostInitiator(host); (len(disks) > 0 || seed) && (vm.Storage.Initiator != want || !vm.Storage.CHAP) {
			return fmt.Errorf("vm %s: got initiator %q (CHAP %v), want %q with CHAP", name, vm.Storage.Initiator, vm.Storage.CHAP, want)
		}
		if (vm.CloudInit != nil) != seed {
			return fmt.Errorf("vm %s: got cloud-init CD-ROM %+v, want one: %v", name, vm.CloudInit, seed)
		}
		if dom.State.Active() != running {
			return fmt.Errorf("vm %s: state %s, want running: %v", name, dom.State, running)
		}
		return nil
	}
}

// waitConsole waits until the console log of VM name on host has a line
// matching re that the log did not have after the line count skip, and
// returns the submatches of the last such line.
func (l vmLab) waitConsole(host, name string, skip *int, re *regexp.Regexp, within time.Duration) ([]string, error) {
	deadline := time.Now().Add(within)
	path := l.consoleLog(host, name)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(string(b), "\n")
		var match []string
		for _, line := range lines[min(*skip, len(lines)):] {
			if m := re.FindStringSubmatch(line); m != nil {
				match = m
			}
		}
		if match != nil {
			return match, nil
		}
		if time.Now().After(deadline) {
			tail := lines[max(0, len(lines)-8):]
			return nil, fmt.Errorf("console of %s on %s: no line matching %q within %s; it ends:\n%s",
				name, host, re, within, strings.Join(tail, "\n"))
		}
		time.Sleep(time.Second)
	}
}

var (
	pairRe     = regexp.MustCompile(`drover-guest: pair seq=(\d+)`)
	bootedRe   = regexp.MustCompile(`drover-guest: booted`)
	resumingRe = regexp.MustCompile(`drover-guest: resuming after seq=(\d+)`)
)

// lastPair returns the sequence number of the guest's last pair record.
func (l vmLab) lastPair(host, name string) (int, error) {
	zero := 0
	m, err := l.waitConsole(host, name, &zero, pairRe, 90*time.Second)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(m[1])
}

func countMatches(path string, re *regexp.Regexp) int {
	b, _ := os.ReadFile(path)
	return len(re.FindAll(b, -1))
}

// checkVMGone proves that the VMs are defined on no host and their
// cloud-init volumes are gone; volumes lists volumes that must be gone too
// (nil: must still exist is checked elsewhere).
func (l vmLab) checkVMGone(names []string, volumes []string) func(*terraform.State) error {
	return func(*terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, name := range names {
			locs, err := l.libvirt.Locate(ctx, l.info.HostURIs(), name)
			if err != nil {
				return err
			}
			if len(locs) > 0 {
				return fmt.Errorf("vm %s is still defined on %s", name, locs[0].Host)
			}
			volumes = append(volumes, cluster.SeedVolumeName(name))
		}
		for _, v := range volumes {
			if _, err := l.target.GetVolume(ctx, v); !errors.Is(err, storage.ErrNotFound) {
				return fmt.Errorf("volume %s: got %v, want not found", v, err)
			}
		}
		return nil
	}
}

func (l vmLab) checkVolumesExist(names ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, v := range names {
			if _, err := l.target.GetVolume(context.Background(), v); err != nil {
				return fmt.Errorf("volume %s: %w", v, err)
			}
		}
		return nil
	}
}

// checkNoSnapshots checks that the storage box keeps no snapshot of volume.
func (l vmLab) checkNoSnapshots(volume string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		snaps, err := l.target.ListSnapshots(context.Background(), volume)
		if err != nil {
			return fmt.Errorf("snapshots of volume %s: %w", volume, err)
		}
		if len(snaps) > 0 {
			return fmt.Errorf("volume %s has %d snapshots left, want none: %+v", volume, len(snaps), snaps)
		}
		return nil
	}
}

// vmConfig is the lifecycle test's configuration.
type vmConfig struct {
	name, boot, data     string
	memory, max, vcpus   int
	bootSize             int
	running, allowRestar bool
	noVM                 bool
	// noTimeouts leaves the timeouts block out: Terraform keeps it in
	// state only, so an imported VM has none.
	noTimeouts bool
}

func (l vmLab) vmConfig(c vmConfig) string {
	cfg := l.providerBlock() + fmt.Sprintf(`
resource "drover_volume" "boot" {
  name     = %q
  size_mib = %d
}

resource "drover_volume" "data" {
  name     = %q
  size_mib = 32
}
`, c.boot, c.bootSize, c.data)
	if c.noVM {
		return cfg
	}
	timeouts := `  timeouts {
    update = "30s"
    delete = "30s"
  }
`
	if c.noTimeouts {
		timeouts = ""
	}
	return cfg + fmt.Sprintf(`
resource "drover_vm" "test" {
  name           = %q
  vcpus          = %d
  memory_mib     = %d
  max_memory_mib = %d
  kernel         = %q
  initrd         = %q
  cmdline        = "console=ttyS0 no_timer_check"
  running        = %v
  allow_restart  = %v
  disks = [
    { volume_id = drover_volume.boot.id },
    { volume_id = drover_volume.data.id },
  ]
  cloud_init {
    meta_data = "instance-id: %s-id\n"
  }
  placement {
    host = "beta"
  }
%s}
`, c.name, c.vcpus, c.memory, c.max, l.info.GuestKernel, l.info.GuestInitrd, c.running, c.allowRestar, c.name, timeouts)
}

func TestAccVMLifecycle(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "vm")
	c := vmConfig{name: name, boot: name + "-boot", data: name + "-data", memory: 128, max: 192, vcpus: 1,
		bootSize: 64, running: true}
	log := l.consoleLog("beta", name)
	var seqBefore, bootsBefore int
	step := func(mod func(*vmConfig)) vmConfig { c2 := c; mod(&c2); return c2 }

	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone([]string{name}, []string{c.boot, c.data}),
		Steps: []resource.TestStep{
			{
				// Two disks and cloud-init, pinned to beta: libvirt runs it
				// there with both iSCSI disks and the CD-ROM, and the guest
				// saw its instance-id and writes records to both disks.
				Config: l.vmConfig(c),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "host", "beta"),
					resource.TestCheckResourceAttr("drover_vm.test", "running", "true"),
					resource.TestCheckResourceAttrSet("drover_vm.test", "id"),
					l.checkVMOn("beta", name, []string{c.boot, c.data}, true, true),
					func(*terraform.State) error {
						zero := 0
						if _, err := l.waitConsole("beta", name, &zero, regexp.MustCompile(
							`drover-guest: instance-id=`+regexp.QuoteMeta(name+"-id")+`\s*$`), 90*time.Second); err != nil {
							return err
						}
						var err error
						seqBefore, err = l.lastPair("beta", name)
						bootsBefore = countMatches(log, bootedRe)
						return err
					},
				),
			},
			{
				// Memory grows within max_memory_mib live: no new boot, and
				// the record sequence continues.
				Config: l.vmConfig(step(func(c *vmConfig) { c.memory = 160 })),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "memory_mib", "160"),
					l.checkMemory("beta", name, 160),
					l.checkContinues("beta", name, &seqBefore, &bootsBefore),
				),
			},
			{
				// The boot disk grows online; the guest sees it.
				Config: l.vmConfig(step(func(c *vmConfig) { c.memory = 160; c.bootSize = 96 })),
				Check: resource.ComposeAggregateTestCheckFunc(
					func(*terraform.State) error {
						zero := 0
						_, err := l.waitConsole("beta", name, &zero,
							regexp.MustCompile(`drover-guest: disk vda resized from 131072 to 196608 sectors`), 60*time.Second)
						return err
					},
					l.checkContinues("beta", name, &seqBefore, &bootsBefore),
				),
			},
			{
				Config: l.vmConfig(step(func(c *vmConfig) { c.memory = 160; c.bootSize = 96; c.running = false })),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "running", "false"),
					l.checkVMOn("beta", name, []string{c.boot, c.data}, true, false),
				),
			},
			{
				Config: l.vmConfig(step(func(c *vmConfig) { c.memory = 160; c.bootSize = 96 })),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "running", "true"),
					l.checkVMOn("beta", name, []string{c.boot, c.data}, true, true),
					l.checkRestarted("beta", name, &seqBefore, &bootsBefore),
				),
			},
			{
				// vCPUs past the maximum need a restart: refused while
				// allow_restart is false, nothing changes.
				Config:      l.vmConfig(step(func(c *vmConfig) { c.memory = 160; c.bootSize = 96; c.vcpus = 2 })),
				ExpectError: regexp.MustCompile(`(?s)VM would need a restart.*vcpus 1 → 2`),
			},
			{
				// Allowed: the plan warns and apply restarts the VM.
				Config: l.vmConfig(step(func(c *vmConfig) {
					c.memory = 160
					c.bootSize = 96
					c.vcpus = 2
					c.allowRestar = true
				})),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "vcpus", "2"),
					l.checkVCPUs("beta", name, 2),
					l.checkRestarted("beta", name, &seqBefore, &bootsBefore),
				),
			},
			{
				// Import by name finds the VM on its host, and reads
				// cloud_init back from the seed volume.
				ResourceName:            "drover_vm.test",
				ImportState:             true,
				ImportStateId:           name,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
			{
				// An import block plans no change: the imported VM is the
				// configured one. The configuration has no timeouts block,
				// which only Terraform's state keeps.
				Config: l.vmConfig(step(func(c *vmConfig) {
					c.memory = 160
					c.bootSize = 96
					c.vcpus = 2
					c.allowRestar = true
					c.noTimeouts = true
				})),
				ResourceName:    "drover_vm.test",
				ImportState:     true,
				ImportStateKind: resource.ImportBlockWithID,
				ImportStateId:   name,
			},
			{
				// The imports read the seed through snapshots, and deleted them.
				Config: l.vmConfig(step(func(c *vmConfig) { c.memory = 160; c.bootSize = 96; c.vcpus = 2; c.allowRestar = true })),
				Check:  l.checkNoSnapshots(name + "-seed"),
			},
			{
				// Destroying the VM leaves its volumes on the storage box.
				Config: l.vmConfig(step(func(c *vmConfig) { c.bootSize = 96; c.noVM = true })),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMGone([]string{name}, nil),
					l.checkVolumesExist(c.boot, c.data),
				),
			},
		},
	})
}

func (l vmLab) checkMemory(host, name string, mib int64) resource.TestCheckFunc {
	return func(*terraform.State) error {
		// The guest's balloon driver gives memory back at its own pace.
		uri := l.info.HostURIs()[host]
		deadline := time.Now().Add(60 * time.Second)
		for {
			vm, dom, err := l.libvirt.ReadVM(context.Background(), uri, name)
			if err != nil {
				return err
			}
			if vm.MemoryMiB == mib && dom.MemoryMiB >= mib-1 && dom.MemoryMiB <= mib {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("vm %s: memory %d MiB defined, %d MiB live; want %d", name, vm.MemoryMiB, dom.MemoryMiB, mib)
			}
			time.Sleep(time.Second)
		}
	}
}

func (l vmLab) checkVCPUs(host, name string, n int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		_, dom, err := l.libvirt.ReadVM(context.Background(), l.info.HostURIs()[host], name)
		if err != nil {
			return err
		}
		if dom.VCPUs != n {
			return fmt.Errorf("vm %s: %d vCPUs, want %d", name, dom.VCPUs, n)
		}
		return nil
	}
}

// checkContinues proves the guest did not restart: no new "booted" line,
// and its record sequence went on past *seq (which it then updates).
func (l vmLab) checkContinues(host, name string, seq, boots *int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		time.Sleep(3 * time.Second)
		now, err := l.lastPair(host, name)
		if err != nil {
			return err
		}
		if b := countMatches(l.consoleLog(host, name), bootedRe); b != *boots {
			return fmt.Errorf("vm %s booted again: %d boots, want %d", name, b, *boots)
		}
		if now <= *seq {
			return fmt.Errorf("vm %s: record sequence at %d, not past %d", name, now, *seq)
		}
		*seq = now
		return nil
	}
}

// checkRestarted proves the guest booted again and resumed its records past
// *seq: nothing it wrote was lost.
func (l vmLab) checkRestarted(host, name string, seq, boots *int) resource.TestCheckFunc {
	return func(*terraform.State) error {
		path := l.consoleLog(host, name)
		deadline := time.Now().Add(90 * time.Second)
		for {
			b, r := countMatches(path, bootedRe), countMatches(path, resumingRe)
			if b > *boots && r == b {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("vm %s did not boot again and resume: %d boots, %d resumes, %d boots before", name, b, r, *boots)
			}
			time.Sleep(time.Second)
		}
		zero := 0
		m, err := l.waitConsole(host, name, &zero, resumingRe, time.Second)
		if err != nil {
			return err
		}
		resumed, _ := strconv.Atoi(m[1])
		if resumed < *seq {
			return fmt.Errorf("vm %s resumed after seq=%d, but it had written %d", name, resumed, *seq)
		}
		*boots = countMatches(path, bootedRe)
		*seq = resumed
		return nil
	}
}

// smallVM is a diskless VM that does not run: cheap to create in the lab.
func (l vmLab) smallVM(name, extra string) string {
	return fmt.Sprintf(`
resource "drover_vm" "test" {
  name       = %q
  vcpus      = 1
  memory_mib = 64
  kernel     = %q
  initrd     = %q
  running    = false
%s
}
`, name, l.info.GuestKernel, l.info.GuestInitrd, extra)
}

func TestAccVMPlanErrors(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "err")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone([]string{name}, nil),
		Steps: []resource.TestStep{
			{
				Config:      l.providerBlock() + l.smallVM(name, "  placement {\n    host = \"gamma\"\n  }"),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Unknown host.*"gamma" names no host.*hosts\s+are\s+alpha,\s+beta`),
			},
			{
				Config:      l.providerBlock() + l.smallVM(name+"x", `max_memory_mib = 4194304`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Memory too large.*4194304 MiB is more than any host\s+can\s+hold\s+\(alpha:\s+at\s+most\s+\d+\s+MiB;\s+beta:\s+at\s+most\s+\d+\s+MiB\)`),
			},
			{
				Config:      l.providerBlock() + l.smallVM(name, `disks = [{ volume_id = "acc-no-such-volume" }]`),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Volume not found.*"acc-no-such-volume"\s+does\s+not\s+exist\s+on\s+the\s+storage\s+box`),
			},
			{
				Config:      l.providerBlock() + l.smallVM("Acc_Bad", ""),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`must be 1 to 58 lowercase letters, digits and -`),
			},
		},
	})
}

func TestAccVMDefinedOnTwoHosts(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "twice")
	config := l.providerBlock() + l.smallVM(name, "  placement {\n    host = \"alpha\"\n  }")
	// copyToBeta defines a copy of the VM, same UUID, on beta by hand.
	copyToBeta := func() {
		ctx := context.Background()
		vm, _, err := l.libvirt.ReadVM(ctx, l.info.AlphaURI, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.libvirt.DefineVM(ctx, l.info.BetaURI, vm); err != nil {
			t.Fatal(err)
		}
	}
	removeCopy := func() {
		if err := l.libvirt.Undefine(context.Background(), l.info.BetaURI, name); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = l.libvirt.Undefine(context.Background(), l.info.BetaURI, name)
		_ = l.libvirt.Undefine(context.Background(), l.info.AlphaURI, name)
	})
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone([]string{name}, nil),
		Steps: []resource.TestStep{
			{
				Config: config,
				Check:  l.checkVMOn("alpha", name, nil, false, false),
			},
			{
				// Refresh sees both and touches neither.
				PreConfig:   copyToBeta,
				Config:      config,
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)VM [0-9a-f-]+ is defined on alpha and beta`),
			},
			{
				PreConfig: removeCopy,
				Config:    config,
				Check:     l.checkVMOn("alpha", name, nil, false, false),
			},
		},
	})
}
