package cluster

import (
	"strings"
	"testing"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// The target labels a schedule's runs under the keys a backup from
// Terraform uses, so drover_backups lists both: the two definitions must
// not drift apart.
func TestScheduledRunsCarryTheLabelsOfABackup(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ ours, targets string }{
		{LabelVMID, wire.LabelVMID}, {LabelConsistency, wire.LabelConsistency},
		{LabelPauseMS, wire.LabelPauseMS}, {DomainAttachment, wire.DomainAttachment},
	} {
		if tc.ours != tc.targets {
			t.Errorf("cluster's label %q, the target's %q: want one key", tc.ours, tc.targets)
		}
	}
}

func TestAScheduleIsCheckedAsTheTargetWillCheckIt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name               string
		cron               string
		keep               wire.Keep
		wantCron, wantKeep string
	}{
		{"every night keeping a week", "30 2 * * *", wire.Keep{Daily: 7}, "", ""},
		{"four fields", "30 2 * *", wire.Keep{Last: 1}, "has 4 fields, want 5", ""},
		{"hour 24", "0 24 * * *", wire.Keep{Last: 1}, "hour field", ""},
		{"keep nothing", "* * * * *", wire.Keep{}, "", "keep keeps nothing"},
		{"a negative count", "* * * * *", wire.Keep{Last: 1, Weekly: -2}, "", "keep.weekly is -2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cronErr, keepErr := CheckSchedule(tc.cron, tc.keep)
			for _, c := range []struct {
				err  error
				want string
			}{{cronErr, tc.wantCron}, {keepErr, tc.wantKeep}} {
				if (c.want == "") != (c.err == nil) || c.err != nil && !strings.Contains(c.err.Error(), c.want) {
					t.Errorf("got %v, want %q", c.err, c.want)
				}
			}
		})
	}
}
