package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

// Fencer is implemented by exporters that can fence initiators (the real
// engine does). An exporter without it answers every fence request with
// 501: a fence that is recorded but not enforced would be worse than none.
type Fencer interface {
	// Fence refuses the initiator's logins from now on, closes its
	// sessions and returns once they have ended (no command of theirs
	// runs any more), or with an error when ctx ends first; then it drops
	// the initiator's persistent-reservation registrations.
	Fence(ctx context.Context, initiator string) error
	// Unfence lets the initiator log in again.
	Unfence(initiator string)
}

func (a *API) fencer() (Fencer, error) {
	f, ok := a.exporter.(Fencer)
	if !ok {
		return nil, badf(http.StatusNotImplemented, "this drover-target's iSCSI engine cannot fence initiators")
	}
	return f, nil
}

// ApplyFences enforces every fence kept in the store, as at daemon start:
// before the volumes are exported, so that no fenced initiator logs in to
// one as it comes back, and again after, so that the fenced initiators'
// registrations go from every volume (a crash may have come between
// keeping a fence and removing them).
func (a *API) ApplyFences(ctx context.Context) error {
	fences, err := a.store.Fences()
	if err != nil || len(fences) == 0 {
		return err
	}
	f, err := a.fencer()
	if err != nil {
		return err
	}
	var errs []error
	for _, fence := range fences {
		if err := f.Fence(ctx, fence.Initiator); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pathInitiator is the {initiator} of a fence path, checked.
func pathInitiator(r *http.Request) (string, error) {
	name := r.PathValue("initiator")
	if err := store.CheckInitiator(name); err != nil {
		return "", badf(http.StatusBadRequest, "%v (in the path /v1/fences/{initiator})", err)
	}
	return name, nil
}

func (a *API) listFences(w http.ResponseWriter, r *http.Request) {
	fences, err := a.store.Fences()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]wire.Fence, 0, len(fences))
	for _, f := range fences {
		out = append(out, fenceJSON(f))
	}
	writeJSON(w, http.StatusOK, wire.FenceList{Fences: out})
}

// maxFenceWait bounds how long a PUT waits for the initiator's sessions
// to end, whatever the client's own deadline: a session whose command is
// stuck (in a hung disk, say) must not hold the fences' lock for ever.
const maxFenceWait = 30 * time.Second

// putFence fences an initiator: the fence is kept in the store first (a
// crash after that leaves it in force at the next start), then the engine
// enforces it, and only once the initiator's sessions have ended is the
// answer sent: 201 for a new fence, 200 for one that was already there.
func (a *API) putFence(w http.ResponseWriter, r *http.Request) {
	initiator, err := pathInitiator(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	req, err := readJSON(w, r, func(r *http.Request) (wire.FenceRequest, error) { return DecodeFence(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	fencer, err := a.fencer()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.fenceMu.Lock() // a PUT and a DELETE of one initiator must not interleave
	defer a.fenceMu.Unlock()
	f, created, err := a.store.PutFence(initiator, req.Reason)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), maxFenceWait)
	defer cancel()
	if err := fencer.Fence(ctx, initiator); err != nil {
		a.fail(w, r, fmt.Errorf("initiator %s is fenced (its logins are refused) but the fence is not complete: retry the PUT: %w", initiator, err))
		return
	}
	a.log.Warn("initiator fenced", "initiator", initiator, "reason", req.Reason, "new", created)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/fences/"+initiator)
	}
	writeJSON(w, status, fenceJSON(f))
}

func (a *API) deleteFence(w http.ResponseWriter, r *http.Request) {
	initiator, err := pathInitiator(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	fencer, err := a.fencer()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.fenceMu.Lock()
	defer a.fenceMu.Unlock()
	// The store first: a crash after this leaves the initiator unfenced
	// at the next start, as asked.
	if err := a.store.DeleteFence(initiator); err != nil {
		a.fail(w, r, err)
		return
	}
	fencer.Unfence(initiator)
	a.log.Warn("fence lifted", "initiator", initiator)
	w.WriteHeader(http.StatusNoContent)
}

// DecodeFence reads and checks a PUT /v1/fences/{initiator} body without
// touching any state.
func DecodeFence(r io.Reader) (wire.FenceRequest, error) {
	var req wire.FenceRequest
	if err := decodeStrict(r, &req, ""); err != nil {
		return req, err
	}
	if err := store.CheckFenceReason(req.Reason); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	return req, nil
}

func fenceJSON(f store.Fence) wire.Fence {
	return wire.Fence{Initiator: f.Initiator, Reason: f.Reason, CreatedAt: f.CreatedAt}
}
