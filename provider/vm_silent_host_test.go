package provider

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/drover/terraform-provider-drover/internal/hypervisor/hypervisortest"
)

// TestAChangeToAVMOnASilentHostFailsItsPlanSayingWhatToDo runs the real
// terraform CLI against libvirt's test driver (no lab): a VM on alpha,
// then alpha stops answering. Its state is kept and a plan with no change
// to it is empty; a change to it fails the plan, saying to wait or to
// declare the host failed; once alpha answers again, the change applies.
func TestAChangeToAVMOnASilentHostFailsItsPlanSayingWhatToDo(t *testing.T) {
	alpha := hypervisortest.NewHost(t)
	config := func(uri string, memory int) string {
		return fmt.Sprintf(`
provider "drover" {
  host {
    name        = "alpha"
    uri         = %q
    domain_type = "qemu"
  }
  host {
    name        = "beta"
    uri         = %q
    domain_type = "qemu"
  }
}

resource "drover_vm" "db" {
  name       = "db"
  vcpus      = 1
  memory_mib = %d
  kernel     = "/boot/vmlinuz"
  running    = false
  placement {
    host = "alpha"
  }
}
`, uri, hypervisortest.NewHost(t), memory)
	}
	resource.UnitTest(t, resource.TestCase{
		ProtoV6ProviderFactories: accProviders(t),
		Steps: []resource.TestStep{
			{
				Config: config(alpha, 128),
				Check:  resource.TestCheckResourceAttr("drover_vm.db", "host", "alpha"),
			},
			{
				// alpha is silent: its VM keeps its state, nothing to do.
				Config:   config("test:///nonexistent/silent.xml", 128),
				PlanOnly: true,
			},
			{
				Config:      config("test:///nonexistent/silent.xml", 256),
				PlanOnly:    true,
				ExpectError: regexp.MustCompile(`(?s)VM is on a host that does not answer.*VM db was last seen on host alpha.*failed\s+=\s+true`),
			},
			{
				// alpha answers again: the change applies.
				Config: config(alpha, 256),
				Check:  resource.TestCheckResourceAttr("drover_vm.db", "memory_mib", "256"),
			},
		},
	})
}
