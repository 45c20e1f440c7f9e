package schedule

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"
)

func at(t *testing.T, loc *time.Location, s string) time.Time {
	t.Helper()
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCronNextRuns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr, after string
		want        []string // the next runs, in order
	}{
		{"* * * * *", "2026-12-02 10:15", []string{"2026-12-02 10:16", "2026-12-02 10:17"}},
		{"30 2 * * *", "2026-12-02 10:15", []string{"2026-12-03 02:30", "2026-12-04 02:30"}},
		{"*/15 * * * *", "2026-12-02 10:15", []string{"2026-12-02 10:30", "2026-12-02 10:45", "2026-12-02 11:00"}},
		{"5/20 9-10 * * *", "2026-12-02 08:00", []string{"2026-12-02 09:05", "2026-12-02 09:25", "2026-12-02 09:45", "2026-12-02 10:05"}},
		{"0 0 1 jan,JUL *", "2026-12-02 00:00", []string{"2027-01-01 00:00", "2027-07-01 00:00"}},
		{"0 12 * * mon-fri", "2026-12-04 13:00", []string{"2026-12-07 12:00", "2026-12-08 12:00"}}, // Friday afternoon → Monday
		{"0 0 * * 7", "2026-12-02 00:00", []string{"2026-12-06 00:00"}},                            // 7 is Sunday
		{"0 0 29 2 *", "2026-12-02 00:00", []string{"2028-02-29 00:00"}},
		// Both day fields restricted: either matches (the 13th, or a Friday).
		{"0 0 13 * fri", "2026-12-01 00:00", []string{"2026-12-04 00:00", "2026-12-11 00:00", "2026-12-13 00:00", "2026-12-18 00:00"}},
		{"1,2,59 23 31 12 *", "2026-12-31 23:01", []string{"2026-12-31 23:02", "2026-12-31 23:59", "2027-12-31 23:01"}},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			t.Parallel()
			c, err := ParseCron(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			from := at(t, time.UTC, tt.after)
			var got []string
			for range tt.want {
				next, ok := c.Next(from)
				if !ok {
					t.Fatalf("no next run after %s", from)
				}
				got = append(got, next.Format("2006-01-02 15:04"))
				from = next
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("runs after %s:\n got %q\nwant %q", tt.after, got, tt.want)
			}
		})
	}
}

func TestCronThatNeverMatchesHasNoNextRun(t *testing.T) {
	t.Parallel()
	c, err := ParseCron("0 0 30 2 *")
	if err != nil {
		t.Fatal(err)
	}
	if next, ok := c.Next(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)); ok {
		t.Errorf("February 30th ran at %s", next)
	}
}

func TestCronAcrossDaylightSavingChanges(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin") // time/tzdata makes it there on any machine
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCron("30 2 * * *")
	// 2026-03-29: 02:00 jumps to 03:00, so 02:30 does not exist that day.
	next, _ := c.Next(at(t, berlin, "2026-03-28 12:00"))
	if got := next.Format("2006-01-02 15:04 MST"); got != "2026-03-30 02:30 CEST" {
		t.Errorf("after a skipped 02:30: got %s, want the next day's", got)
	}
	// 2026-10-25: 03:00 goes back to 02:00, so 02:30 happens twice; it runs once.
	first, _ := c.Next(at(t, berlin, "2026-10-24 12:00"))
	second, _ := c.Next(first)
	if f, s := first.Format("2006-01-02 15:04 MST"), second.Format("2006-01-02 15:04 MST"); f != "2026-10-25 02:30 CEST" || s != "2026-10-26 02:30 CET" {
		t.Errorf("around a repeated 02:30: got %s then %s, want it once on the 25th, then the 26th", f, s)
	}
}

func TestBadCronExpressionsNameTheFieldAndTheProblem(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ expr, want string }{
		{"* * * *", `has 4 fields, want 5: minute hour day-of-month month day-of-week`},
		{"60 * * * *", `minute field "60": 60 is out of 0-59`},
		{"* 24 * * *", `hour field "24": 24 is out of 0-23`},
		{"* * 0 * *", `day of month field "0": 0 is out of 1-31`},
		{"* * * 13 *", `month field "13": 13 is out of 1-12`},
		{"* * * foo *", `month field "foo": "foo" is neither a number nor a name like jan`},
		{"* * * * 8", `day of week field "8": 8 is out of 0-7`},
		{"*/0 * * * *", `minute field "*/0": step "0" is not a whole number of 1 or more`},
		{"10-5 * * * *", `minute field "10-5": range 10-5 runs backwards`},
		{"@daily", `has 1 fields, want 5`},
	} {
		_, err := ParseCron(tt.expr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseCron(%q) = %v, want an error containing %q", tt.expr, err, tt.want)
		}
	}
}

// runs makes one run at each time, named by its time.
func runs(t *testing.T, times ...string) []Run {
	var out []Run
	for _, s := range times {
		out = append(out, Run{ID: s, At: at(t, time.UTC, s)})
	}
	return out
}

func ids(rs []Run) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestPruneKeepsWhatEachRuleCovers(t *testing.T) {
	t.Parallel()
	// Hourly runs over three days, and one on each of two earlier weeks
	// and months.
	var times []string
	for d := 1; d <= 3; d++ {
		for h := 0; h < 24; h += 6 {
			times = append(times, fmt.Sprintf("2026-12-%02d %02d:00", d, h))
		}
	}
	times = append(times, "2026-11-20 00:00", "2026-10-15 00:00")
	tests := []struct {
		name string
		keep Keep
		want []string
	}{
		{"last keeps the newest", Keep{Last: 2}, []string{"2026-12-03 18:00", "2026-12-03 12:00"}},
		{"daily keeps the newest of each day", Keep{Daily: 3}, []string{"2026-12-03 18:00", "2026-12-02 18:00", "2026-12-01 18:00"}},
		{
			"daily does not count the day that last already covers",
			Keep{Last: 1, Daily: 2},
			[]string{"2026-12-03 18:00", "2026-12-02 18:00", "2026-12-01 18:00"},
		},
		{
			"weekly and monthly reach further back",
			Keep{Daily: 1, Weekly: 2, Monthly: 3},
			// Daily: the 3rd. Weekly (ISO weeks): Dec 1-3 is covered by it,
			// so the week of Nov 20 and the week of Oct 15. Monthly: December,
			// November and October are covered already.
			[]string{"2026-12-03 18:00", "2026-11-20 00:00", "2026-10-15 00:00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			all := runs(t, times...)
			kept, removed := Prune(all, tt.keep)
			if !slices.Equal(ids(kept), tt.want) {
				t.Errorf("kept:\n got %q\nwant %q", ids(kept), tt.want)
			}
			if len(kept)+len(removed) != len(all) {
				t.Errorf("%d kept and %d removed of %d runs", len(kept), len(removed), len(all))
			}
			for _, r := range removed {
				if slices.Contains(ids(kept), r.ID) {
					t.Errorf("%s is both kept and removed", r.ID)
				}
			}
		})
	}
}

func TestPruneIsTheSameForAnyOrderOfRuns(t *testing.T) {
	t.Parallel()
	a := runs(t, "2026-12-01 00:00", "2026-12-02 00:00", "2026-12-02 06:00", "2026-12-03 00:00")
	b := slices.Clone(a)
	slices.Reverse(b)
	ka, ra := Prune(a, Keep{Last: 1, Daily: 2})
	kb, rb := Prune(b, Keep{Last: 1, Daily: 2})
	if !slices.Equal(ids(ka), ids(kb)) || !slices.Equal(ids(ra), ids(rb)) {
		t.Errorf("order matters: %q/%q vs %q/%q", ids(ka), ids(ra), ids(kb), ids(rb))
	}
}

func TestKeepThatKeepsNothingIsRefused(t *testing.T) {
	t.Parallel()
	if err := (Keep{}).Validate(); err == nil || !strings.Contains(err.Error(), "keep keeps nothing") {
		t.Errorf("an empty keep: %v, want it refused", err)
	}
	if err := (Keep{Last: 2, Daily: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "keep.daily is -1") {
		t.Errorf("a negative count: %v, want it refused naming keep.daily", err)
	}
	if err := (Keep{Last: 2}).Validate(); err != nil {
		t.Errorf("keep last 2: %v", err)
	}
}

func TestAScheduleChangedAfterItsLastRunCountsFromTheChange(t *testing.T) {
	t.Parallel()
	c, err := ParseCron("0 8 * * *")
	if err != nil {
		t.Fatal(err)
	}
	lastRun := time.Date(2026, 12, 2, 2, 30, 0, 0, time.UTC)
	changed := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC) // from 02:30 daily to 08:00, at 10:00
	for _, tc := range []struct {
		name    string
		created time.Time
		want    time.Time
	}{
		{"changed after the last run: no run made up for 08:00 today", changed, time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)},
		{"made before the last run: from the last run", lastRun.Add(-24 * time.Hour), time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)},
	} {
		s := Schedule{Cron: c, Created: tc.created, LastRun: &Result{At: lastRun, Status: StatusOK}}
		if got, ok := s.Next(); !ok || !got.Equal(tc.want) {
			t.Errorf("%s: Next() = %s, want %s", tc.name, got, tc.want)
		}
	}
}
