package provider

import (
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

// TestMisspelledSettingsAreAPlanError plans configurations with the real
// terraform CLI (no lab: the errors come before any host is asked). A
// misspelled key of an object attribute would be dropped without a word
// (terraform-plugin-framework #1210, terraform #33570); in a block it is
// an error, and that is why the settings are blocks.
func TestMisspelledSettingsAreAPlanError(t *testing.T) {
	const hosts = `
  host {
    name = "alpha"
    uri  = "test:///default"
  }
`
	tests := []struct {
		name   string
		config string
		want   string
	}{
		{"a misspelled maintenance in a host block", `
provider "drover" {
  host {
    name        = "alpha"
    uri         = "test:///default"
    maintanance = true
  }
}
data "drover_hosts" "all" {}
`, `An argument named "maintanance" is not expected here`},
		{"a misspelled strict_spread in the placement block", `
provider "drover" {` + hosts + `
  placement {
    strict_spred = true
  }
}
data "drover_hosts" "all" {}
`, `An argument named "strict_spred" is not expected here`},
		{"a misspelled ca_file in the storage block", `
provider "drover" {` + hosts + `
  storage {
    endpoint = "https://127.0.0.1:3261"
    token    = "t"
    portal   = "127.0.0.1:3260"
    cafile   = "/etc/drover/storage-ca.pem"
  }
}
data "drover_hosts" "all" {}
`, `An argument named "cafile" is not expected here`},
		{"a misspelled spread_group in a VM's placement block", `
provider "drover" {` + hosts + `}
resource "drover_vm" "web" {
  name       = "web"
  vcpus      = 1
  memory_mib = 64
  placement {
    spread_grop = "web"
  }
}
`, `An argument named "spread_grop" is not expected here`},
		{"a misspelled user_data in a VM's cloud_init block", `
provider "drover" {` + hosts + `}
resource "drover_vm" "web" {
  name       = "web"
  vcpus      = 1
  memory_mib = 64
  cloud_init {
    meta_data = "instance-id: web"
    userdata  = "#cloud-config"
  }
}
`, `An argument named "userdata" is not expected here`},
		// The object attributes that stay are safe from misspellings: a
		// misspelled key leaves a required or an exactly-one-of key unset.
		{"a misspelled volume_id in a VM's disks", `
provider "drover" {` + hosts + `}
resource "drover_vm" "web" {
  name       = "web"
  vcpus      = 1
  memory_mib = 64
  disks      = [{ volume = "web-disk" }]
}
`, `attribute "volume_id"\s+is\s+required`},
		{"a misspelled network in a VM's network_interfaces", `
provider "drover" {` + hosts + `}
resource "drover_vm" "web" {
  name               = "web"
  vcpus              = 1
  memory_mib         = 64
  network_interfaces = [{ netwrk = "default" }]
}
`, `(?s)No attribute specified when one \(and only one\) of.*network_interfaces\[0\]\.network`},
		{"a misspelled snapshot_id in a volume's source", `
provider "drover" {` + hosts + `}
resource "drover_volume" "restored" {
  name   = "restored"
  source = { snapshot = "set-1/web-disk" }
}
`, `source sets 0 of volume_id,\s+snapshot_id\s+and\s+file`},
		{"two host blocks of one name", `
provider "drover" {` + hosts + hosts + `}
data "drover_hosts" "all" {}
`, `both\s+named\s+"alpha"`},
		{"a host declared failed without a storage box to fence it", `
provider "drover" {
  host {
    name   = "alpha"
    uri    = "test:///default"
    failed = true
  }
}
data "drover_hosts" "all" {}
`, `(?s)A failed host needs a storage box.*Host\s+alpha:\s+failed\s+=\s+true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resource.UnitTest(t, resource.TestCase{
				ProtoV6ProviderFactories: accProviders(t),
				Steps: []resource.TestStep{{
					Config:      tt.config,
					PlanOnly:    true,
					ExpectError: regexp.MustCompile(tt.want),
				}},
			})
		})
	}
}
