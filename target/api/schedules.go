package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/schedule"
	"github.com/drover/terraform-provider-drover/target/store"
)

// resticCheckTimeout bounds a check (and the creation) of a restic
// repository while a client waits.
const resticCheckTimeout = 2 * time.Minute

// ScheduleRequest is a POST or PUT /v1/schedules body, decoded and
// checked: the cron expression parsed.
type ScheduleRequest struct {
	wire.ScheduleRequest
	Cron schedule.Cron
}

// DecodeSchedule reads and checks a POST /v1/schedules or PUT
// /v1/schedules/{id} body without touching any state: syntax, fields, the
// VM, volume names, the cron expression, keep, the restic block's form,
// labels and the domain XML. Every refusal names the field. Whether the
// volumes exist and the restic password file can be read is checked by
// the handler.
func DecodeSchedule(r io.Reader) (ScheduleRequest, error) {
	var req ScheduleRequest
	if err := decodeStrict(r, &req.ScheduleRequest, ""); err != nil {
		return req, err
	}
	w := req.ScheduleRequest
	if err := store.CheckVM(w.VM); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	if err := store.CheckSetVolumes(w.Volumes); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	c, err := schedule.ParseCron(w.Schedule)
	if err != nil {
		return req, badf(http.StatusBadRequest, "schedule: %v", err)
	}
	req.Cron = c
	if err := keepOf(w.Keep).Validate(); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	if w.Restic != nil {
		if err := schedule.CheckResticRepository(w.Restic.Repository); err != nil {
			return req, badf(http.StatusBadRequest, "%v", err)
		}
		if p := w.Restic.PasswordFile; p == "" || !filepath.IsAbs(p) {
			return req, badf(http.StatusBadRequest, "restic.password_file %q is not an absolute path: give the full path of the file on the storage box", p)
		}
	}
	if err := store.CheckSchedule(storeSchedule(req)); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	return req, nil
}

// DecodeResticCheck reads and checks a POST /v1/restic-checks body.
func DecodeResticCheck(r io.Reader) (wire.Restic, error) {
	var req wire.Restic
	if err := decodeStrict(r, &req, "restic: "); err != nil {
		return req, err
	}
	if err := schedule.CheckResticRepository(req.Repository); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	if p := req.PasswordFile; p == "" || !filepath.IsAbs(p) {
		return req, badf(http.StatusBadRequest, "restic.password_file %q is not an absolute path: give the full path of the file on the storage box", p)
	}
	return req, nil
}

func keepOf(k wire.Keep) schedule.Keep {
	return schedule.Keep{Last: k.Last, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly}
}

func storeSchedule(req ScheduleRequest) store.Schedule {
	return store.Schedule{VM: req.VM, Volumes: req.Volumes, Cron: req.Cron.String(), Keep: req.Keep,
		Restic: req.Restic, Labels: req.Labels, DomainXML: req.DomainXML}
}

// RunSchedules runs the schedules kept in the store, and those made
// through the API from then on, each when it is due, until ctx ends; then
// it waits for the runs under way (cut short by ctx) and returns.
func (a *API) RunSchedules(ctx context.Context) error {
	schedules, err := a.store.Schedules()
	if err != nil {
		return fmt.Errorf("load the backup schedules: %w", err)
	}
	for _, s := range schedules {
		sch, err := scheduleOf(s)
		if err != nil {
			a.log.Error("backup schedule not run", "schedule", s.ID, "err", err)
			continue
		}
		a.scheduler.Set(sch)
	}
	a.log.Info("backup schedules loaded", "schedules", len(schedules))
	return a.scheduler.Run(ctx)
}

// scheduleOf is a kept schedule as the scheduler runs it, in the storage
// box's time zone.
func scheduleOf(s store.Schedule) (schedule.Schedule, error) {
	c, err := schedule.ParseCron(s.Cron)
	if err != nil {
		return schedule.Schedule{}, err
	}
	from := s.CreatedAt // a change counts as a new start: it makes up no run
	if s.UpdatedAt.After(from) {
		from = s.UpdatedAt
	}
	out := schedule.Schedule{ID: s.ID, VM: s.VM, Volumes: s.Volumes, Cron: c, Keep: keepOf(s.Keep), Created: from.Local()}
	if r := s.LastRun; r != nil {
		out.LastRun = &schedule.Result{At: r.At.Local(), Status: r.Status, SetID: r.SetID, Error: r.Error}
	}
	return out, nil
}

func scheduleJSON(s store.Schedule) wire.Schedule {
	out := wire.Schedule{ID: s.ID, VM: s.VM, Volumes: s.Volumes, Schedule: s.Cron, Keep: s.Keep, Restic: s.Restic,
		Labels: s.Labels, CreatedAt: s.CreatedAt, LastRun: s.LastRun}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if sch, err := scheduleOf(s); err == nil {
		if next, ok := sch.Next(); ok {
			out.NextRun = &next
		}
	}
	return out
}

// checkScheduleState checks what a schedule needs of the storage box: its
// volumes exist, and its restic repository opens with the password file
// (it is created if it is not there yet).
func (a *API) checkScheduleState(ctx context.Context, req ScheduleRequest) error {
	for i, v := range req.Volumes {
		if _, err := a.store.Get(v); errors.Is(err, store.ErrNotFound) {
			return badf(http.StatusBadRequest, "volumes[%d]: volume %q does not exist", i, v)
		} else if err != nil {
			return err
		}
	}
	if req.Restic == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, resticCheckTimeout)
	defer cancel()
	if err := a.resticRepo(*req.Restic).Ensure(ctx); err != nil {
		return badf(http.StatusBadRequest, "%v", err)
	}
	return nil
}

func (a *API) resticRepo(r wire.Restic) schedule.Restic {
	return schedule.Restic{Binary: a.restic, Repository: r.Repository, PasswordFile: r.PasswordFile,
		CacheDir: filepath.Join(a.store.Dir(), "restic-cache")}
}

func (a *API) createSchedule(w http.ResponseWriter, r *http.Request) {
	req, err := readJSONUpTo(w, r, maxSetBody, func(r *http.Request) (ScheduleRequest, error) { return DecodeSchedule(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.checkScheduleState(r.Context(), req); err != nil {
		a.fail(w, r, err)
		return
	}
	s, err := a.store.CreateSchedule(storeSchedule(req))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.setScheduled(s)
	a.log.Info("backup schedule created", "schedule", s.ID, "vm", s.VM, "cron", s.Cron, "restic", s.Restic != nil)
	w.Header().Set("Location", "/v1/schedules/"+s.ID)
	writeJSON(w, http.StatusCreated, scheduleJSON(s))
}

func (a *API) setScheduled(s store.Schedule) {
	sch, err := scheduleOf(s)
	if err != nil { // checked when it was made: a bug
		a.log.Error("backup schedule not run", "schedule", s.ID, "err", err)
		return
	}
	a.scheduler.Set(sch)
}

func (a *API) listSchedules(w http.ResponseWriter, r *http.Request) {
	ss, err := a.store.Schedules()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := wire.ScheduleList{Schedules: make([]wire.Schedule, 0, len(ss))}
	for _, s := range ss {
		out.Schedules = append(out.Schedules, scheduleJSON(s))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getSchedule(w http.ResponseWriter, r *http.Request) {
	s, err := a.store.GetSchedule(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, scheduleJSON(s))
}

func (a *API) replaceSchedule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := store.CheckScheduleID(id); err != nil {
		a.fail(w, r, err)
		return
	}
	req, err := readJSONUpTo(w, r, maxSetBody, func(r *http.Request) (ScheduleRequest, error) { return DecodeSchedule(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if _, err := a.store.GetSchedule(id); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.checkScheduleState(r.Context(), req); err != nil {
		a.fail(w, r, err)
		return
	}
	s, err := a.store.ReplaceSchedule(id, storeSchedule(req))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.setScheduled(s)
	a.log.Info("backup schedule replaced", "schedule", s.ID, "vm", s.VM, "cron", s.Cron, "restic", s.Restic != nil)
	writeJSON(w, http.StatusOK, scheduleJSON(s))
}

func (a *API) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.store.DeleteSchedule(id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.scheduler.Remove(id)
	a.log.Info("backup schedule deleted; its runs stay", "schedule", id)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) checkRestic(w http.ResponseWriter, r *http.Request) {
	req, err := readJSON(w, r, func(r *http.Request) (wire.Restic, error) { return DecodeResticCheck(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), resticCheckTimeout)
	defer cancel()
	ok, err := a.resticRepo(req).Check(ctx)
	if err != nil {
		a.fail(w, r, badf(http.StatusBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, wire.ResticCheck{Repository: req.Repository, Initialized: ok})
}

// scheduleRunner is what the scheduler's runs do on this storage box.
type scheduleRunner struct{ a *API }

var _ schedule.Runner = scheduleRunner{}

// Cut snapshots the schedule's volumes as one set, their writes held
// together as for POST /v1/snapshot-sets, labelled with the VM and the
// schedule and with the domain XML attached; waits until a
// copy-before-write copy is done (a set that cannot be finished is not
// left behind); then, with restic, sends the set there and prunes restic.
func (r scheduleRunner) Cut(ctx context.Context, sch schedule.Schedule) (string, error) {
	a := r.a
	s, err := a.store.GetSchedule(sch.ID)
	if err != nil {
		return "", err
	}
	labels := maps.Clone(s.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[wire.LabelVMID], labels[wire.LabelSchedule], labels[wire.LabelConsistency] = s.VM, s.ID, "crash"
	req := store.SetRequest{Volumes: s.Volumes, Labels: labels}
	if s.DomainXML != "" {
		req.Attachments = map[string][]byte{wire.DomainAttachment: []byte(s.DomainXML)}
	}
	if h, ok := a.exporter.(Holder); ok {
		req.Freeze = a.freeze(h, s.Volumes, "scheduled backup")
	}
	set, err := a.store.CreateSnapshotSet(ctx, req)
	if err != nil {
		return "", fmt.Errorf("cut %s: %w", strings.Join(s.Volumes, ", "), err)
	}
	labels[wire.LabelPauseMS] = strconv.FormatInt((set.Hold + time.Millisecond - 1).Milliseconds(), 10)
	if _, err := a.store.SetSnapshotSetLabels(ctx, set.ID, labels); err != nil {
		a.log.Warn("could not record the hold on a scheduled backup", "set", set.ID, "err", err)
	}
	for _, sn := range set.Snapshots {
		if _, err := a.store.WaitCopied(ctx, sn.ID); err != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := a.store.DeleteSnapshotSet(dctx, set.ID); derr != nil && !errors.Is(derr, store.ErrNotFound) {
				err = fmt.Errorf("%w; deleting the unfinished set failed too: %v", err, derr)
			}
			return "", fmt.Errorf("copy of snapshot set %s: %w", set.ID, err)
		}
	}
	a.log.Info("scheduled backup cut", "schedule", s.ID, "set", set.ID, "method", set.Method, "hold", set.Hold)
	if s.Restic != nil {
		if err := r.toRestic(ctx, s, set); err != nil {
			return set.ID, fmt.Errorf("the snapshot set %s was made, but its copy to restic failed: %w", set.ID, err)
		}
	}
	return set.ID, nil
}

// toRestic streams every disk image of set (holes as zeros, not read) and
// the domain XML into the schedule's restic repository, each tagged with
// the VM, the set and the schedule, then forgets and prunes what the keep
// does not keep of the schedule's restic snapshots.
func (r scheduleRunner) toRestic(ctx context.Context, s store.Schedule, set store.SnapshotSet) error {
	repo := r.a.resticRepo(*s.Restic)
	unlock, err := r.a.resticMu.lock(ctx, repo.Repository)
	if err != nil {
		return fmt.Errorf("wait for another run using restic repository %s: %w", repo.Repository, err)
	}
	defer unlock()
	if err := repo.Ensure(ctx); err != nil {
		return err
	}
	tags := ResticTags(s.VM, set.ID, s.ID)
	for _, sn := range set.Snapshots {
		rd, _, err := r.a.store.SnapshotReader(sn.ID)
		if err != nil {
			return err
		}
		_, err = repo.Backup(ctx, sn.Volume+".raw", rd, tags, set.CreatedAt)
		rd.Close()
		if err != nil {
			return err
		}
	}
	if s.DomainXML != "" {
		if _, err := repo.Backup(ctx, wire.DomainAttachment, strings.NewReader(s.DomainXML), tags, set.CreatedAt); err != nil {
			return err
		}
	}
	r.a.log.Info("scheduled backup sent to restic", "schedule", s.ID, "set", set.ID, "repository", s.Restic.Repository)
	return repo.Forget(ctx, []string{"schedule=" + s.ID}, keepOf(s.Keep))
}

// ResticTags are the tags of the restic snapshots of one run: vm=,
// set= and schedule=.
func ResticTags(vm, setID, scheduleID string) []string {
	return []string{"vm=" + vm, "set=" + setID, "schedule=" + scheduleID}
}

// Runs lists the snapshot sets the schedule made.
func (r scheduleRunner) Runs(sch schedule.Schedule) ([]schedule.Run, error) {
	sets, err := r.a.store.ListSnapshotSets(map[string]string{wire.LabelSchedule: sch.ID})
	if err != nil {
		return nil, err
	}
	out := make([]schedule.Run, len(sets))
	for i, s := range sets {
		out[i] = schedule.Run{ID: s.ID, At: s.CreatedAt.Local()}
	}
	return out, nil
}

// Delete removes a run pruning does not keep.
func (r scheduleRunner) Delete(ctx context.Context, setID string) error {
	return r.a.store.DeleteSnapshotSet(ctx, setID)
}

// Record keeps a run's result in the store; a schedule deleted while it
// ran has nothing to record it in, which is no error.
func (r scheduleRunner) Record(id string, res schedule.Result) error {
	err := r.a.store.RecordScheduleRun(id, wire.ScheduleRun{At: res.At, Status: res.Status, SetID: res.SetID, Error: res.Error})
	if errors.Is(err, store.ErrNotFound) {
		r.a.log.Info("backup schedule deleted while it ran; its run is not recorded", "schedule", id, "set", res.SetID)
		return nil
	}
	return err
}

// keyedMutex is one mutex per key, taken with a context; the zero value
// is ready.
type keyedMutex struct {
	mu   sync.Mutex // guards held
	held map[string]chan struct{}
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.held == nil {
		k.held = map[string]chan struct{}{}
	}
	ch, ok := k.held[key]
	if !ok {
		ch = make(chan struct{}, 1)
		k.held[key] = ch
	}
	k.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
