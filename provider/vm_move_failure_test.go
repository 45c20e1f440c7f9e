package provider

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
)

// words matches the phrases in order, each word for word whatever
// whitespace Terraform puts between words when it wraps a diagnostic, with
// anything between phrases.
func words(phrases ...string) *regexp.Regexp {
	re := make([]string, len(phrases))
	for i, phrase := range phrases {
		parts := strings.Fields(phrase)
		for j, p := range parts {
			parts[j] = regexp.QuoteMeta(p)
		}
		re[i] = strings.Join(parts, `\s+`)
	}
	return regexp.MustCompile(`(?s)` + strings.Join(re, `.*`))
}

// pinnedVM is one lab guest writing records to its disk, pinned to pin (or
// placed freely when pin is "").
func (l vmLab) pinnedVM(name, pin string) string {
	place := "{}"
	if pin != "" {
		place = fmt.Sprintf("{ host = %q }", pin)
	}
	return fmt.Sprintf(`
resource "drover_volume" "test" {
  name     = "%[1]s-disk"
  size_mib = 16
}

resource "drover_vm" "test" {
  name       = %[1]q
  vcpus      = 1
  memory_mib = 128
  kernel     = %[2]q
  initrd     = %[3]q
  cmdline    = "console=ttyS0 no_timer_check"
  disks      = [{ volume_id = drover_volume.test.id }]
  placement %[4]s
  timeouts {
    update = "5m"
  }
}
`, name, l.info.GuestKernel, l.info.GuestInitrd, place)
}

// virsh runs virsh against the host at uri.
func virsh(uri string, args ...string) (string, error) {
	out, err := exec.Command("virsh", append([]string{"-c", uri}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("virsh %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// killDuringMigration kills beta's libvirtd (by the pid the lab recorded)
// one second after a migration job of vm shows on alpha, as if the
// destination host crashed mid-move. It reports what it did on done.
type killDuringMigration struct {
	l    vmLab
	vm   string
	done chan string
}

func (k *killDuringMigration) start(t *testing.T) {
	// Slow the migration down so that the kill lands while memory is
	// being copied: a 128 MiB guest otherwise moves in well under a second.
	if _, err := virsh(k.l.info.AlphaURI, "migrate-setspeed", k.vm, "--bandwidth", "8"); err != nil {
		t.Fatal(err)
	}
	k.done = make(chan string, 1)
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			out, _ := virsh(k.l.info.AlphaURI, "domjobinfo", k.vm)
			if strings.Contains(out, "Unbounded") {
				time.Sleep(time.Second)
				pidFile := filepath.Join(k.l.root, ".lab", "hosts", "beta", "pid")
				b, err := os.ReadFile(pidFile)
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil || pid <= 1 {
					k.done <- fmt.Sprintf("no pid of beta's libvirtd in %s: %v", pidFile, err)
					return
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					k.done <- fmt.Sprintf("kill %d: %v", pid, err)
					return
				}
				k.done <- ""
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		k.done <- "no migration job showed on alpha within 2 minutes"
	}()
}

// check fails unless the kill happened during the step.
func (k *killDuringMigration) check(t *testing.T) {
	select {
	case problem := <-k.done:
		if problem != "" {
			t.Fatal(problem)
		}
	case <-time.After(time.Minute):
		t.Fatal("beta's libvirtd was not killed")
	}
}

// reviveBeta starts the lab again (a separate process, as a user would run
// make lab), which restarts beta's libvirtd and leaves the rest as it is,
// and lifts the migration speed limit.
func (l vmLab) reviveBeta(t *testing.T, vm string) {
	cmd := exec.Command(filepath.Join(l.root, ".lab", "bin", "drover-lab"), "-dir", filepath.Join(l.root, ".lab"), "up")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("drover-lab up: %v: %s", err, out)
	}
	if _, err := virsh(l.info.AlphaURI, "migrate-setspeed", vm, "--bandwidth", "100000"); err != nil {
		t.Fatal(err)
	}
}

// checkRunningOnlyOn asks every host: the VM runs on host, and beta has no
// copy (a leftover of the broken move would be one).
func (l vmLab) checkRunningOnlyOn(host, name string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		locs, err := l.libvirt.Locate(ctx, l.info.HostURIs(), name)
		if err != nil {
			return err
		}
		if len(locs) != 1 || locs[0].Host != host || !locs[0].Domain.State.Active() {
			return fmt.Errorf("vm %s: got %+v, want it running on %s alone", name, locs, host)
		}
		return nil
	}
}

func TestAccPlacementDestinationDiesDuringMigration(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "kill")
	rec := &records{l: l, name: name, seen: map[int]bool{}}
	kill := &killDuringMigration{l: l, vm: name}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone([]string{name}, []string{name + "-disk"}),
		Steps: []resource.TestStep{
			{
				Config: l.providerBlock() + l.pinnedVM(name, "alpha"),
				Check:  resource.ComposeAggregateTestCheckFunc(l.checkVMOn("alpha", name, []string{name + "-disk"}, false, true), rec.check()),
			},
			{
				// beta's libvirtd dies while the VM's memory is on its way:
				// the apply fails, saying where the VM is.
				PreConfig: func() { kill.start(t) },
				Config:    l.providerBlock() + l.pinnedVM(name, "beta"),
				ExpectError: words("Unable to update VM", fmt.Sprintf("move VM %s from alpha to beta (pin changed): migrate", name),
					"It is still running on alpha; nothing was moved"),
			},
			{
				// The VM is still on alpha, still writing its records,
				// booted once. With beta back, the next apply converges.
				PreConfig: func() {
					kill.check(t)
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					// beta cannot be asked yet: alpha still runs it.
					if d, found, err := l.libvirt.Domain(ctx, l.info.AlphaURI, name); err != nil || !found || !d.State.Active() {
						t.Fatalf("after the failed move, alpha has %s: found %v, %s, %v; want it running there", name, found, d.State, err)
					}
					if err := rec.check()(nil); err != nil {
						t.Fatalf("after the failed move: %v", err)
					}
					l.reviveBeta(t, name)
				},
				Config: l.providerBlock() + l.pinnedVM(name, "beta"),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkRunningOnlyOn("beta", name),
					resource.TestCheckResourceAttr("drover_vm.test", "host", "beta"),
					rec.check(),
				),
			},
		},
	})
}

func TestAccVMOnAHostRemovedFromTheProviderBlock(t *testing.T) {
	l := newVMLab(t)
	name := accName(t, "gone")
	alphaOnly := l.providerBlockOf(l.alpha())
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy:             l.checkVMGone([]string{name}, []string{name + "-disk"}),
		Steps: []resource.TestStep{
			{
				Config: l.providerBlock() + l.pinnedVM(name, "beta"),
				Check:  l.checkRunningOnlyOn("beta", name),
			},
			{
				// beta leaves the provider block: Drover cannot see the VM
				// and says so instead of forgetting it.
				Config:             alphaOnly + l.pinnedVM(name, ""),
				PlanOnly:           true,
				ExpectNonEmptyPlan: true, // without a refresh, placement.host goes
				ExpectError:        words(fmt.Sprintf("VM %s was on host beta, which is not in the provider block any more", name)),
			},
			{
				// Nothing was lost: it still runs on beta, and its volume
				// still lets beta in.
				Config: l.providerBlock() + l.pinnedVM(name, ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkRunningOnlyOn("beta", name),
					l.checkVMOn("beta", name, []string{name + "-disk"}, false, true),
				),
			},
		},
	})
}
