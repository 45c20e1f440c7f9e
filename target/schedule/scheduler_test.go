package schedule

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// clock is a fake clock: time moves only when the test advances it.
type clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	return ch
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// runner is a fake Runner: its snapshot sets are names in a list.
type runner struct {
	clock *clock
	mu    sync.Mutex
	sets  map[string][]Run // by schedule
	cuts  []string         // schedule IDs, in the order cut
	dels  []string
	recs  []Result
	fail  error         // Cut fails with it when set
	gate  chan struct{} // when set, Cut waits for it
	inCut map[string]int
	most  int // most cuts of one VM under way at once
}

func newRunner(c *clock) *runner {
	return &runner{clock: c, sets: map[string][]Run{}, inCut: map[string]int{}}
}

func (r *runner) Cut(ctx context.Context, s Schedule) (string, error) {
	r.mu.Lock()
	r.inCut[s.VM]++
	r.most = max(r.most, r.inCut[s.VM])
	gate, fail := r.gate, r.fail
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inCut[s.VM]--
		r.mu.Unlock()
	}()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cuts = append(r.cuts, s.ID)
	if fail != nil {
		return "", fail
	}
	id := fmt.Sprintf("%s-set-%d", s.ID, len(r.cuts))
	r.sets[s.ID] = append(r.sets[s.ID], Run{ID: id, At: r.clock.Now()})
	return id, nil
}

func (r *runner) Runs(s Schedule) ([]Run, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sets[s.ID]), nil
}

func (r *runner) Delete(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dels = append(r.dels, id)
	for sch, runs := range r.sets {
		r.sets[sch] = slices.DeleteFunc(runs, func(x Run) bool { return x.ID == id })
	}
	return nil
}

func (r *runner) Record(_ string, res Result) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, res)
	return nil
}

func (r *runner) snapshot() (cuts, dels []string, recs []Result, sets map[string][]Run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sets = map[string][]Run{}
	for k, v := range r.sets {
		sets[k] = slices.Clone(v)
	}
	return slices.Clone(r.cuts), slices.Clone(r.dels), slices.Clone(r.recs), sets
}

// waitFor waits (in real time) until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

type fixture struct {
	clock  *clock
	runner *runner
	sched  *Scheduler
	reg    *prometheus.Registry
	stop   func()
}

func start(t *testing.T, schedules ...Schedule) *fixture {
	t.Helper()
	c := &clock{now: time.Date(2026, 12, 2, 10, 0, 30, 0, time.UTC)}
	r := newRunner(c)
	reg := prometheus.NewRegistry()
	s := New(r, Options{Now: c.Now, After: c.After, Registerer: reg})
	for _, sch := range schedules {
		s.Set(sch)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	f := &fixture{clock: c, runner: r, sched: s, reg: reg}
	f.stop = func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}
	t.Cleanup(func() {
		if f.stop != nil {
			f.stop()
		}
	})
	return f
}

func everyMinute(t *testing.T, id, vm string, keep Keep, created time.Time) Schedule {
	t.Helper()
	c, err := ParseCron("* * * * *")
	if err != nil {
		t.Fatal(err)
	}
	return Schedule{ID: id, VM: vm, Volumes: []string{vm + "-disk"}, Cron: c, Keep: keep, Created: created}
}

func TestAScheduleEveryMinuteKeepingTwoKeepsTheTwoNewest(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 2, 10, 0, 30, 0, time.UTC)
	f := start(t, everyMinute(t, "nightly", "web1", Keep{Last: 2}, created))
	for minute := 1; minute <= 3; minute++ {
		f.clock.Advance(time.Minute)
		waitFor(t, fmt.Sprintf("run %d", minute), func() bool { _, _, recs, _ := f.runner.snapshot(); return len(recs) == minute })
	}
	cuts, dels, recs, sets := f.runner.snapshot()
	if len(cuts) != 3 {
		t.Errorf("cuts: got %d, want 3", len(cuts))
	}
	if got := sets["nightly"]; len(got) != 2 || got[0].ID != "nightly-set-2" || got[1].ID != "nightly-set-3" {
		t.Errorf("sets kept: got %v, want nightly-set-2 and nightly-set-3", got)
	}
	if !slices.Equal(dels, []string{"nightly-set-1"}) {
		t.Errorf("deleted: got %q, want the oldest run only", dels)
	}
	for _, r := range recs {
		if r.Status != StatusOK || r.SetID == "" || r.Error != "" {
			t.Errorf("recorded %+v, want an ok run with its set", r)
		}
	}
	sch, _ := f.sched.Get("nightly")
	if sch.LastRun == nil || sch.LastRun.SetID != "nightly-set-3" {
		t.Errorf("last run: got %+v, want the third", sch.LastRun)
	}
	if next, _ := sch.Next(); !next.After(f.clock.Now()) {
		t.Errorf("next run %s is not after now %s", next, f.clock.Now())
	}
	if got := runsCounted(t, f.reg, "nightly", StatusOK); got != 3 {
		t.Errorf("drover_backup_schedule_runs_total{status=ok}: got %v, want 3", got)
	}
}

func TestRunsMissedWhileTheDaemonWasDownAreMadeUpOnce(t *testing.T) {
	t.Parallel()
	// Last run two hours before the daemon starts: 119 runs were missed.
	sch := everyMinute(t, "s", "db", Keep{Last: 5}, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	sch.LastRun = &Result{At: time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC), Status: StatusOK, SetID: "old"}
	f := start(t, sch)
	waitFor(t, "the make-up run", func() bool { _, _, recs, _ := f.runner.snapshot(); return len(recs) == 1 })
	time.Sleep(50 * time.Millisecond) // room for a wrong second run
	if cuts, _, _, _ := f.runner.snapshot(); len(cuts) != 1 {
		t.Fatalf("after a long stop: %d runs, want one", len(cuts))
	}
	f.clock.Advance(time.Minute)
	waitFor(t, "the next run", func() bool { _, _, recs, _ := f.runner.snapshot(); return len(recs) == 2 })
}

func TestOneRunAtATimePerVM(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f := start(t)
	f.runner.mu.Lock()
	f.runner.gate = make(chan struct{})
	gate := f.runner.gate
	f.runner.mu.Unlock()
	f.sched.Set(everyMinute(t, "a", "web1", Keep{Last: 9}, created))
	f.sched.Set(everyMinute(t, "b", "web1", Keep{Last: 9}, created))
	f.sched.Set(everyMinute(t, "c", "web2", Keep{Last: 9}, created))
	f.clock.Advance(time.Minute)
	waitFor(t, "two cuts under way", func() bool {
		f.runner.mu.Lock()
		defer f.runner.mu.Unlock()
		return f.runner.inCut["web1"] == 1 && f.runner.inCut["web2"] == 1
	})
	time.Sleep(50 * time.Millisecond)
	close(gate)
	waitFor(t, "all three runs", func() bool { _, _, recs, _ := f.runner.snapshot(); return len(recs) == 3 })
	if f.runner.most != 1 {
		t.Errorf("at most %d cuts of one VM ran at once, want 1", f.runner.most)
	}
}

func TestAFailedRunIsRecordedWithItsReasonAndCounted(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f := start(t)
	f.runner.mu.Lock()
	f.runner.fail = errors.New("hold writes of web1-disk: no answer within 10s")
	f.runner.mu.Unlock()
	f.sched.Set(everyMinute(t, "s", "web1", Keep{Last: 2}, created))
	f.clock.Advance(time.Minute)
	waitFor(t, "the run", func() bool { _, _, recs, _ := f.runner.snapshot(); return len(recs) == 1 })
	_, dels, recs, _ := f.runner.snapshot()
	if r := recs[0]; r.Status != StatusFailed || !strings.Contains(r.Error, "no answer within 10s") || r.SetID != "" {
		t.Errorf("recorded %+v, want a failed run with the cut's reason", r)
	}
	if len(dels) != 0 {
		t.Errorf("a failed run pruned %q", dels)
	}
	sch, _ := f.sched.Get("s")
	if sch.LastRun == nil || sch.LastRun.Status != StatusFailed {
		t.Errorf("last run: %+v, want the failure", sch.LastRun)
	}
	if got := runsCounted(t, f.reg, "s", StatusFailed); got != 1 {
		t.Errorf("drover_backup_schedule_runs_total{status=failed}: got %v, want 1", got)
	}
}

func TestARemovedScheduleRunsNoMoreAndItsRunsStay(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f := start(t, everyMinute(t, "s", "web1", Keep{Last: 1}, created))
	f.clock.Advance(time.Minute)
	waitFor(t, "the first run", func() bool { _, _, recs, _ := f.runner.snapshot(); return len(recs) == 1 })
	f.sched.Remove("s")
	f.clock.Advance(5 * time.Minute)
	time.Sleep(50 * time.Millisecond)
	cuts, dels, _, sets := f.runner.snapshot()
	if len(cuts) != 1 || len(dels) != 0 || len(sets["s"]) != 1 {
		t.Errorf("after remove: %d cuts, deleted %q, %d sets; want 1 cut, nothing deleted, its set kept", len(cuts), dels, len(sets["s"]))
	}
}

func TestStoppingWaitsForTheRunUnderWay(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	f := start(t)
	f.runner.mu.Lock()
	f.runner.gate = make(chan struct{}) // never opened: only the context ends the cut
	f.runner.mu.Unlock()
	f.sched.Set(everyMinute(t, "s", "web1", Keep{Last: 1}, created))
	f.clock.Advance(time.Minute)
	waitFor(t, "the cut", func() bool {
		f.runner.mu.Lock()
		defer f.runner.mu.Unlock()
		return f.runner.inCut["web1"] == 1
	})
	f.stop()
	f.stop = nil
	_, _, recs, _ := f.runner.snapshot()
	if len(recs) != 1 || recs[0].Status != StatusFailed || !strings.Contains(recs[0].Error, "context canceled") {
		t.Errorf("the run cut short by the stop: %+v, want it recorded as failed (context canceled) before Run returned", recs)
	}
}

// runsCounted is drover_backup_schedule_runs_total for one schedule and
// status, as a scrape of reg would show it.
func runsCounted(t *testing.T, reg *prometheus.Registry, schedule, status string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "drover_backup_schedule_runs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["schedule"] == schedule && labels["status"] == status {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
