package provider

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"

	"github.com/drover/terraform-provider-drover/target/api/apitest"
)

// TestBadBackupSchedulesAreAPlanError plans schedules with the real
// terraform CLI against an in-process drover-target (no lab: every error
// comes before a host or a VM is needed, though the plan asks the target
// about the restic password file).
func TestBadBackupSchedulesAreAPlanError(t *testing.T) {
	target := apitest.New(t)
	provider := fmt.Sprintf(`
provider "drover" {
  host {
    name = "alpha"
    uri  = "test:///default"
  }
  storage {
    endpoint = %q
    token    = %q
    portal   = "127.0.0.1:3260"
  }
}
`, target.URL, apitest.Token)
	schedule := func(body string) string {
		return provider + `
resource "drover_backup_schedule" "web" {
  vm_id = "6695eb01-f6a4-8304-79aa-97f8502e193f"
` + body + `
}
`
	}
	for _, tt := range []struct {
		name, body, want string
	}{
		{"a cron expression of four fields", `
  schedule = "30 2 * *"
  keep {
    last = 2
  }`, `(?s)Invalid schedule.*with drover_backup_schedule.web,.*schedule = "30 2 \* \*".*has 4 fields, want 5`},
		{"an hour of 25", `
  schedule = "0 25 * * *"
  keep {
    daily = 7
  }`, `(?s)Invalid schedule.*hour field "25"`},
		{"a keep that keeps nothing", `
  schedule = "30 2 * * *"
  keep {
    last  = 0
    daily = 0
  }`, `(?s)Invalid keep.*keep keeps nothing`},
		{"no keep block", `
  schedule = "30 2 * * *"`, `(?s)Missing keep block.*keep\s+\{ last = 7 \}`},
		{"a negative keep", `
  schedule = "30 2 * * *"
  keep {
    weekly = -1
  }`, `(?s)keep.weekly.*at least 0`},
		{"a misspelled keep", `
  schedule = "30 2 * * *"
  keep {
    dayly = 7
  }`, `An argument named "dayly" is not expected here`},
		{"a restic block without a password file", `
  schedule = "30 2 * * *"
  keep {
    last = 2
  }
  restic {
    repository = "/srv/restic"
  }`, `(?s)Missing restic setting.*needs password_file`},
		{"a restic password file the storage box cannot read", `
  schedule = "30 2 * * *"
  keep {
    last = 2
  }
  restic {
    repository    = "/tmp/h14-restic-never-made"
    password_file = "/nonexistent/h14-restic.pw"
  }`, `(?s)Unable to use the restic repository.*restic.password_file\s+"/nonexistent/h14-restic.pw"\s+cannot\s+be\s+read`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resource.UnitTest(t, resource.TestCase{
				ProtoV6ProviderFactories: accProviders(t),
				Steps: []resource.TestStep{{
					Config:      schedule(tt.body),
					PlanOnly:    true,
					ExpectError: regexp.MustCompile(tt.want),
				}},
			})
		})
	}
}
