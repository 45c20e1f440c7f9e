package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Schedule is one backup schedule as drover-target keeps and runs it.
type Schedule struct {
	ID      string
	VM      string   // the VM, as its runs are labelled
	Volumes []string // the VM's disks, cut together at one instant
	Cron    Cron
	Keep    Keep
	// Created is when the schedule was made, or last changed: its times
	// count from then (a change is not a reason to make up a run).
	Created time.Time
	// LastRun is the newest run's result; nil before the first.
	LastRun *Result
}

// Result is what one run of a schedule came to.
type Result struct {
	At     time.Time // when it started
	Status string    // StatusOK or StatusFailed
	SetID  string    // the snapshot set it made, if it made one
	Error  string    // why it failed
}

// The statuses of a Result.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// Next is when the schedule runs next: the first time its expression
// matches after its last run started or it was made or changed, whichever
// is later. A time in the past means a run is due: runs missed while the
// daemon was down are made up by one run, not one per missed time.
func (s Schedule) Next() (time.Time, bool) {
	from := s.Created
	if s.LastRun != nil && s.LastRun.At.After(from) {
		from = s.LastRun.At
	}
	return s.Cron.Next(from)
}

// Runner is what a run needs of the daemon.
type Runner interface {
	// Cut takes a crash-consistent snapshot set of the schedule's volumes
	// (their writes held together), labelled as the schedule's, and
	// returns its ID once it is usable. An error with an ID is a run whose
	// set was made but whose later steps failed: it is pruned after, too.
	Cut(ctx context.Context, s Schedule) (setID string, err error)
	// Runs lists the snapshot sets the schedule made.
	Runs(s Schedule) ([]Run, error)
	// Delete removes one of them.
	Delete(ctx context.Context, setID string) error
	// Record keeps the result of a run as the schedule's last run, so that
	// a restart neither loses nor repeats it.
	Record(scheduleID string, r Result) error
}

// Options tune a Scheduler; the zero value is usable.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now and After are the clock (time.Now and time.After when nil).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
	// RunTimeout bounds one run (cut and prune); 30 minutes when zero.
	RunTimeout time.Duration
}

// Scheduler runs schedules when they are due, one run at a time per VM.
type Scheduler struct {
	runner  Runner
	log     *slog.Logger
	now     func() time.Time
	after   func(time.Duration) <-chan time.Time
	timeout time.Duration
	runs    *prometheus.CounterVec

	mu        sync.Mutex          // guards schedules and busy
	schedules map[string]Schedule // by ID
	busy      map[string]bool     // VMs with a run under way
	wake      chan struct{}       // a schedule or a run changed: look again
	wg        sync.WaitGroup      // runs under way
}

// New returns a Scheduler that runs nothing until Run.
func New(r Runner, opts Options) *Scheduler {
	s := &Scheduler{
		runner: r, log: opts.Logger, now: opts.Now, after: opts.After, timeout: opts.RunTimeout,
		schedules: make(map[string]Schedule), busy: make(map[string]bool), wake: make(chan struct{}, 1),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_backup_schedule_runs_total",
			Help: "Runs of backup schedules, by schedule and status (ok or failed).",
		}, []string{"schedule", "status"}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.after == nil {
		s.after = time.After
	}
	if s.timeout <= 0 {
		s.timeout = 30 * time.Minute
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.runs)
	}
	return s
}

// Set adds a schedule or replaces the one with its ID (a run under way
// finishes as it began).
func (s *Scheduler) Set(sch Schedule) {
	s.mu.Lock()
	s.schedules[sch.ID] = sch
	s.mu.Unlock()
	s.poke()
}

// Remove forgets a schedule; the runs it made stay.
func (s *Scheduler) Remove(id string) {
	s.mu.Lock()
	delete(s.schedules, id)
	s.mu.Unlock()
	s.poke()
}

// Get returns a schedule as the scheduler has it now (its last run
// included).
func (s *Scheduler) Get(id string) (Schedule, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sch, ok := s.schedules[id]
	return sch, ok
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run starts the schedules that are due, and each later one when it is,
// until ctx ends; then it waits for the runs under way (their contexts end
// with ctx) and returns ctx's error.
func (s *Scheduler) Run(ctx context.Context) error {
	defer s.wg.Wait()
	for {
		wait := s.startDue(ctx)
		var timer <-chan time.Time
		if wait >= 0 {
			timer = s.after(wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		case <-timer:
		}
	}
}

// startDue starts a run of every due schedule whose VM has none under way,
// in ID order, and returns how long until the next one is due (-1: none
// is).
func (s *Scheduler) startDue(ctx context.Context) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	ids := make([]string, 0, len(s.schedules))
	for id := range s.schedules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	wait := time.Duration(-1)
	for _, id := range ids {
		sch := s.schedules[id]
		next, ok := sch.Next()
		if !ok || s.busy[sch.VM] {
			continue // never again; or after the VM's run under way (which wakes us)
		}
		if d := next.Sub(now); d > 0 {
			if wait < 0 || d < wait {
				wait = d
			}
			continue
		}
		s.busy[sch.VM] = true
		s.wg.Add(1)
		go s.run(ctx, sch, now)
	}
	return wait
}

// run makes one run of sch, records it, and frees its VM.
func (s *Scheduler) run(ctx context.Context, sch Schedule, at time.Time) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res := Result{At: at, Status: StatusOK}
	setID, err := s.runner.Cut(ctx, sch)
	res.SetID = setID
	// A cut that made its set prunes, even if what came after it (the copy
	// to restic) failed: a failing off-box copy must not pile up sets.
	if setID != "" {
		if perr := s.prune(ctx, sch); perr != nil {
			err = errors.Join(err, fmt.Errorf("the snapshot set %s was made, but pruning failed: %w", setID, perr))
		}
	}
	if err != nil {
		res.Status, res.Error = StatusFailed, err.Error()
		s.log.Warn("backup schedule run failed", "schedule", sch.ID, "vm", sch.VM, "err", err)
	} else {
		s.log.Info("backup schedule ran", "schedule", sch.ID, "vm", sch.VM, "set", setID)
	}
	s.runs.WithLabelValues(sch.ID, res.Status).Inc()
	if err := s.runner.Record(sch.ID, res); err != nil {
		s.log.Error("record a backup schedule's run", "schedule", sch.ID, "err", err)
	}
	s.mu.Lock()
	if cur, ok := s.schedules[sch.ID]; ok {
		cur.LastRun = &res
		s.schedules[sch.ID] = cur
	}
	delete(s.busy, sch.VM)
	s.mu.Unlock()
	s.poke()
}

// prune deletes the schedule's runs that its keep does not keep.
func (s *Scheduler) prune(ctx context.Context, sch Schedule) error {
	runs, err := s.runner.Runs(sch)
	if err != nil {
		return fmt.Errorf("list the schedule's runs: %w", err)
	}
	_, removed := Prune(runs, sch.Keep)
	var errs []error
	for _, r := range slices.Backward(removed) { // oldest first
		if err := s.runner.Delete(ctx, r.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", r.ID, err))
		}
	}
	return errors.Join(errs...)
}
