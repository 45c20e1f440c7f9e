package provider

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"
)

// The lab reached as real hosts are: the provider block's hosts are the
// qemu+ssh URIs of .lab/ssh.tfvars (an sshd of the lab's own on each host,
// key authentication), and every check asks the hosts over ssh too.

// sshHosts returns the lab's host blocks over ssh, with extra settings per
// host ("maintenance = true").
func (l vmLab) sshHosts(alphaExtra, betaExtra []string) []string {
	return []string{
		labHostBlock("alpha", l.info.AlphaSSHURI, alphaExtra...),
		labHostBlock("beta", l.info.BetaSSHURI, betaExtra...),
	}
}

// sshLab is the VM lab after checking that its hosts have ssh URIs (a lab
// started before they existed has none).
func sshLab(t *testing.T) vmLab {
	t.Helper()
	l := newVMLab(t)
	for name, uri := range l.info.HostSSHURIs() {
		if !strings.HasPrefix(uri, "qemu+ssh://") {
			t.Fatalf("lab host %s has no ssh URI (%q): restart the lab with make lab", name, uri)
		}
	}
	return l
}

func TestAccSSHHostsDataSource(t *testing.T) {
	l := sshLab(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf("provider \"drover\" {%s\n}\n\ndata \"drover_hosts\" \"all\" {}\n",
				strings.Join(l.sshHosts(nil, nil), "")),
			Check: resource.ComposeAggregateTestCheckFunc(
				checkHostMatchesLibvirt(l.libvirt, "alpha", l.info.AlphaSSHURI, 512, 1),
				checkHostMatchesLibvirt(l.libvirt, "beta", l.info.BetaSSHURI, 512, 1),
			),
		}},
	})
}

// checkOnlyOnOverSSH asks every host over ssh with virsh: VM name runs on
// host, and no other host has it, running or defined.
func (l vmLab) checkOnlyOnOverSSH(host, name string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for h, uri := range l.info.HostSSHURIs() {
			out, err := virsh(uri, "list", "--all", "--name")
			if err != nil {
				return err
			}
			defined := slices.Contains(strings.Fields(out), name)
			if h != host {
				if defined {
					return fmt.Errorf("vm %s: virsh over ssh finds it on %s too, want it on %s only", name, h, host)
				}
				continue
			}
			if !defined {
				return fmt.Errorf("vm %s: virsh -c %s list --all does not show it, want it on %s:\n%s", name, uri, host, out)
			}
			state, err := virsh(uri, "domstate", name)
			if err != nil {
				return err
			}
			if s := strings.TrimSpace(state); s != "running" {
				return fmt.Errorf("vm %s on %s: state %q over ssh, want running", name, host, s)
			}
		}
		return nil
	}
}

func TestAccSSHVMLifecycleLiveMigrationAndBackup(t *testing.T) {
	l := sshLab(t)
	name := accName(t, "ssh")
	disk := name + "-disk"
	rec := &records{l: l, name: name, seen: map[int]bool{}}
	// config is a lab guest writing records to its disk, preferring alpha,
	// with the hosts over ssh; alpha in maintenance or not, beta's
	// migration_address, and what else the step adds.
	config := func(memory int, maintenance bool, betaAddress, extra string) string {
		var beta []string
		if betaAddress != "" {
			beta = append(beta, fmt.Sprintf("migration_address = %q", betaAddress))
		}
		return l.providerBlockOf(l.sshHosts([]string{fmt.Sprintf("maintenance = %v", maintenance)}, beta)...) + fmt.Sprintf(`
resource "drover_volume" "disk" {
  name     = %[1]q
  size_mib = 16
}

resource "drover_vm" "test" {
  name           = %[2]q
  vcpus          = 1
  memory_mib     = %[3]d
  max_memory_mib = 160
  kernel         = %[4]q
  initrd         = %[5]q
  cmdline        = "console=ttyS0 no_timer_check"
  disks          = [{ volume_id = drover_volume.disk.id }]
  placement {
    preferred_hosts = ["alpha"]
  }
  timeouts {
    update = "5m"
  }
}
`, disk, name, memory, l.info.GuestKernel, l.info.GuestInitrd) + extra
	}
	backup := `
resource "drover_backup" "b" {
  vm_id = drover_vm.test.id
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		CheckDestroy: func(s *terraform.State) error {
			if err := l.checkVMGone([]string{name}, []string{disk})(s); err != nil {
				return err
			}
			for h, uri := range l.info.HostSSHURIs() {
				out, err := virsh(uri, "list", "--all", "--name")
				if err != nil {
					return err
				}
				if slices.Contains(strings.Fields(out), name) {
					return fmt.Errorf("vm %s is still on %s after destroy (virsh over ssh)", name, h)
				}
			}
			return nil
		},
		Steps: []resource.TestStep{
			{
				// Created over ssh on its preferred host, its disk on the
				// storage box, writing records.
				Config: config(128, false, "", ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "host", "alpha"),
					l.checkOnlyOnOverSSH("alpha", name),
					l.checkVMOn("alpha", name, []string{disk}, false, true),
					rec.check(),
				),
			},
			{
				// Changed over ssh: memory grows live within max_memory_mib.
				Config: config(160, false, "", ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "memory_mib", "160"),
					l.checkMemory("alpha", name, 160),
					rec.check(),
				),
			},
			{
				// Beta's migration address is one beta does not have
				// (TEST-NET-1, on no interface: nothing is sent): beta's
				// QEMU cannot listen there, so the address is the one the
				// provider gave libvirt, and the VM keeps running on alpha.
				Config: config(160, true, "192.0.2.1", ""),
				ExpectError: words("Unable to update VM", "from alpha to beta (maintenance)",
					"Failed to bind socket: Cannot assign requested address", "still running on alpha; nothing was moved"),
			},
			{
				// Alpha in maintenance, beta's own migration address: the
				// VM goes live between the two ssh URIs, runs on beta and
				// on beta only, and its records go on without a gap.
				PreConfig: func() {
					if err := l.checkOnlyOnOverSSH("alpha", name)(nil); err != nil {
						t.Fatalf("after the refused move: %v", err)
					}
				},
				Config: config(160, true, "127.0.0.3", ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectUnknownValue("drover_vm.test", tfjsonpath.New("host")),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_vm.test", "host", "beta"),
					l.checkOnlyOnOverSSH("beta", name),
					rec.check(),
				),
			},
			{
				// A whole-VM backup over ssh: the disk is cut on the
				// storage box while the VM runs on beta.
				Config: config(160, true, "127.0.0.3", backup),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("drover_backup.b", "disks.#", "1"),
					resource.TestCheckResourceAttr("drover_backup.b", "disks.0.volume_id", disk),
					resource.TestCheckResourceAttrSet("drover_backup.b", "pause_ms"),
					l.checkOnlyOnOverSSH("beta", name),
					func(s *terraform.State) error {
						id := s.RootModule().Resources["drover_backup.b"].Primary.Attributes["disks.0.snapshot_id"]
						ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
						defer cancel()
						snap, err := l.target.WaitSnapshot(ctx, id)
						if err != nil {
							return fmt.Errorf("backup snapshot %s: %w", id, err)
						}
						if snap.Volume != disk {
							return fmt.Errorf("backup snapshot %s is of volume %q, want %q", id, snap.Volume, disk)
						}
						return nil
					},
					rec.check(),
				),
			},
			{
				// The backup goes with its snapshot; the VM stays.
				Config: config(160, true, "127.0.0.3", ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					l.checkNoSnapshots(disk),
					l.checkOnlyOnOverSSH("beta", name),
				),
			},
		},
	})
}
