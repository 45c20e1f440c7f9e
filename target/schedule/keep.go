package schedule

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Keep says which of a schedule's runs pruning keeps, as Proxmox Backup
// Server prunes: the Last newest runs, then the newest run of each of the
// Daily last days, Weekly last ISO weeks (Monday to Sunday) and Monthly last
// months that have a run not kept already. Periods are counted in the
// location of the runs' times (the storage box's time zone), and a period
// without a run does not count.
type Keep struct {
	Last, Daily, Weekly, Monthly int
}

// Validate refuses negative counts and a Keep that keeps nothing: pruning
// with it would delete every run, the newest included.
func (k Keep) Validate() error {
	for _, c := range []struct {
		name string
		n    int
	}{{"last", k.Last}, {"daily", k.Daily}, {"weekly", k.Weekly}, {"monthly", k.Monthly}} {
		if c.n < 0 {
			return fmt.Errorf("keep.%s is %d: a count of runs, 0 or more", c.name, c.n)
		}
	}
	if k == (Keep{}) {
		return errors.New("keep keeps nothing: set at least one of last, daily, weekly or monthly above 0, or every run would be deleted")
	}
	return nil
}

// Run is one run of a schedule, as pruning sees it.
type Run struct {
	ID string
	At time.Time
}

// Prune splits runs into those keep keeps and those it removes, each newest
// first. Runs with the same time are ordered by ID, so the split is the same
// for the same runs in any order.
func Prune(runs []Run, keep Keep) (kept, removed []Run) {
	runs = slices.Clone(runs)
	slices.SortFunc(runs, func(a, b Run) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	mark := make([]int8, len(runs)) // 0 undecided, 1 kept, -1 removed
	rule := func(n int, period func(time.Time) string) {
		if n <= 0 {
			return
		}
		covered := make(map[string]bool) // periods a run kept earlier covers
		for i, r := range runs {
			if mark[i] == 1 {
				covered[period(r.At)] = true
			}
		}
		chosen := make(map[string]bool)
		for i, r := range runs {
			if mark[i] != 0 {
				continue
			}
			p := period(r.At)
			switch {
			case covered[p]:
			case chosen[p]:
				mark[i] = -1 // an older run of a period kept by this rule
			case len(chosen) < n:
				chosen[p] = true
				mark[i] = 1
			}
		}
	}
	for i := 0; i < len(runs) && i < keep.Last; i++ {
		mark[i] = 1 // the newest runs, each its own period
	}
	rule(keep.Daily, func(t time.Time) string { return t.Format("2006-01-02") })
	rule(keep.Weekly, func(t time.Time) string {
		y, w := t.ISOWeek()
		return fmt.Sprintf("%d-W%02d", y, w)
	})
	rule(keep.Monthly, func(t time.Time) string { return t.Format("2006-01") })
	for i, r := range runs {
		if mark[i] == 1 {
			kept = append(kept, r)
		} else {
			removed = append(removed, r)
		}
	}
	return kept, removed
}
