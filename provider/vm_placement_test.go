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
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// providerBlockMaintenance is the lab's provider block with alpha in
// maintenance or not.
func (l vmLab) providerBlockMaintenance(alphaMaintenance bool) string {
	return strings.Replace(l.providerBlock(), `alpha = { uri = `+strconv.Quote(l.info.AlphaURI)+`, domain_type = "qemu" }`,
		fmt.Sprintf(`alpha = { uri = %q, domain_type = "qemu", maintenance = %v }`, l.info.AlphaURI, alphaMaintenance), 1)
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
	webVMs := func(n int, alphaMaintenance bool) string {
		cfg := l.providerBlockMaintenance(alphaMaintenance)
		for i := range n {
			cfg += fmt.Sprintf(`
resource "drover_vm" "web%d" {
  name       = %q
  vcpus      = 1
  memory_mib = 64
  kernel     = %q
  initrd     = %q
  running    = false
  placement  = { spread_group = "web" }
}
`, i+1, names[i], l.info.GuestKernel, l.info.GuestInitrd)
		}
		return cfg
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone(names, nil),
		Steps: []resource.TestStep{
			{
				Config: webVMs(2, false),
				Check:  l.checkOnDistinctHosts(names[:2], "alpha", "beta"),
			},
			{
				Config:      webVMs(3, false),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Unable to place VM.*spread group "web" has 3 VMs.*only 2 hosts`),
			},
			{
				// Maintenance on alpha would leave the group one host.
				Config:      webVMs(2, true),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)Unable to place VM.*spread group "web" has 2 VMs.*only 1 host out.*Nothing\s+was\s+moved`),
			},
			{
				// Nothing moved or was created by the refused plan.
				Config:   webVMs(2, false),
				PlanOnly: true,
				Check:    l.checkOnDistinctHosts(names[:2], "alpha", "beta"),
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
  cmdline    = "console=ttyS0"
  disks      = [{ volume_id = drover_volume.%[1]s.id }]
  placement  = %[5]s
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
				Config: config(true, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("drover_vm.a", plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue("drover_vm.a", tfjsonpath.New("host")),
					plancheck.ExpectKnownValue("drover_vm.b", tfjsonpath.New("host"), knownvalue.StringExact("beta")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMOn("beta", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("beta", b, []string{b + "-disk"}, false, true),
					resource.TestCheckResourceAttr("drover_vm.a", "host", "beta"),
					resource.TestCheckResourceAttr("drover_vm.b", "host", "beta"),
					recA.check(), recB.check(),
				),
			},
			{
				// Out of maintenance, a fails back to alpha.
				Config: config(false, ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectUnknownValue("drover_vm.a", tfjsonpath.New("host")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMOn("alpha", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("beta", b, []string{b + "-disk"}, false, true),
					resource.TestCheckResourceAttr("drover_vm.a", "host", "alpha"),
					recA.check(), recB.check(),
				),
			},
			{
				// A new pin is known at plan time, and b moves there live.
				Config: config(false, "alpha"),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectKnownValue("drover_vm.b", tfjsonpath.New("host"), knownvalue.StringExact("alpha")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkVMOn("alpha", a, []string{a + "-disk"}, false, true),
					l.checkVMOn("alpha", b, []string{b + "-disk"}, false, true),
					recA.check(), recB.check(),
				),
			},
		},
	})
}
