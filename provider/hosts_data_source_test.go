package provider

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/lab"
)

// deadURI is a host nobody listens on: a loopback address the lab does not use.
const deadURI = "qemu+tcp://127.0.0.9/system"

// accLab returns the running lab for an acceptance test. Without TF_ACC the
// test is skipped; with TF_ACC and no lab it fails, so that a missing lab
// never passes as a green run.
func accLab(t *testing.T) lab.Info {
	t.Helper()
	if os.Getenv(resource.EnvTfAcc) == "" {
		t.Skipf("acceptance test: set %s=1 and start the lab (make lab)", resource.EnvTfAcc)
	}
	info, err := lab.Find()
	if err != nil {
		t.Fatalf("%s is set but the lab is not running: %v", resource.EnvTfAcc, err)
	}
	return info
}

// accProviders serves the provider in-process to the terraform CLI, with a
// host pool closed when the test ends.
func accProviders(t *testing.T) map[string]func() (tfprotov6.ProviderServer, error) {
	t.Helper()
	pool := hypervisor.NewPool(hypervisor.Options{})
	t.Cleanup(func() { pool.Close() })
	return map[string]func() (tfprotov6.ProviderServer, error){
		"drover": providerserver.NewProtocol6WithError(New("acc", pool)()),
	}
}

func TestAccHostsDataSource(t *testing.T) {
	info := accLab(t)
	ctx := context.Background()

	// A libvirt connection of the test's own, to ask the hosts for the truth.
	libvirt := hypervisor.NewPool(hypervisor.Options{})
	t.Cleanup(func() { libvirt.Close() })

	// A defined but stopped domain on alpha: it must show among the VMs and
	// count in the committed memory.
	stopped := hypervisor.VM{
		Name: "drover-acc-hosts-stopped", Type: "qemu", MemoryMiB: 96, VCPUs: 1,
		Boot: hypervisor.Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd},
	}
	if err := libvirt.Remove(ctx, info.AlphaURI, stopped.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := libvirt.DefineVM(ctx, info.AlphaURI, stopped); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := libvirt.Remove(context.Background(), info.AlphaURI, stopped.Name); err != nil {
			t.Error(err)
		}
	})

	var start time.Time
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		Steps: []resource.TestStep{{
			PreConfig: func() { start = time.Now() },
			Config: fmt.Sprintf(`
provider "drover" {
  host {
    name                = "alpha"
    uri                 = %q
    domain_type         = "qemu"
    reserved_memory_mib = 256
    memory_overcommit   = 1.5
  }
  host {
    name        = "beta"
    uri         = %q
    domain_type = "qemu"
    maintenance = true
  }
  host {
    name = "gamma"
    uri  = %q
  }
}

data "drover_hosts" "all" {}
`, info.AlphaURI, info.BetaURI, deadURI),
			Check: resource.ComposeAggregateTestCheckFunc(
				checkHostMatchesLibvirt(libvirt, "alpha", info.AlphaURI, 256, 1.5),
				checkHostMatchesLibvirt(libvirt, "beta", info.BetaURI, 512, 1),
				resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts.alpha.maintenance", "false"),
				resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts.beta.maintenance", "true"),
				resource.TestCheckTypeSetElemAttr("data.drover_hosts.all", "hosts.alpha.vms.*", stopped.Name),

				resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts.gamma.uri", deadURI),
				resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts.gamma.reachable", "false"),
				resource.TestCheckNoResourceAttr("data.drover_hosts.all", "hosts.gamma.cpus"),
				func(*terraform.State) error {
					// Plan, apply and refresh each read the hosts; a dead host
					// must cost seconds, not the minutes of a TCP timeout.
					if took := time.Since(start); took > 60*time.Second {
						return fmt.Errorf("the step took %s with host gamma dead", took)
					}
					return nil
				},
			),
		}},
	})
}

// checkHostMatchesLibvirt compares the state of one host with what libvirt
// reports for it now.
func checkHostMatchesLibvirt(libvirt *hypervisor.Pool, name, uri string, reservedMiB int64, overcommit float64) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h, err := libvirt.Host(ctx, uri)
		if err != nil {
			return fmt.Errorf("ask libvirt about %s: %w", name, err)
		}
		var committed int64
		for _, d := range h.Domains {
			committed += d.MaxMemoryMiB
		}
		usable := int64(float64(h.MemoryMiB-reservedMiB) * overcommit)
		want := map[string]string{
			"uri":                  uri,
			"reachable":            "true",
			"cpus":                 strconv.Itoa(h.CPUs),
			"memory_mib":           strconv.FormatInt(h.MemoryMiB, 10),
			"committed_memory_mib": strconv.FormatInt(committed, 10),
			"free_memory_mib":      strconv.FormatInt(max(0, usable-committed), 10),
			"vms.#":                strconv.Itoa(len(h.Domains)),
		}
		for i, d := range h.Domains {
			want["vms."+strconv.Itoa(i)] = d.Name
		}
		checks := make([]resource.TestCheckFunc, 0, len(want))
		for attr, v := range want {
			checks = append(checks, resource.TestCheckResourceAttr("data.drover_hosts.all", "hosts."+name+"."+attr, v))
		}
		return resource.ComposeAggregateTestCheckFunc(checks...)(s)
	}
}
