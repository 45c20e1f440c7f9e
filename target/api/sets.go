package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

func (a *API) createSnapshotSet(w http.ResponseWriter, r *http.Request) {
	req, err := readJSONUpTo(w, r, maxSetBody, func(r *http.Request) (wire.CreateSnapshotSetRequest, error) { return DecodeCreateSnapshotSet(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sreq := store.SetRequest{Volumes: req.Volumes, Labels: req.Labels, Attachments: attachmentsOf(req)}
	if h, ok := a.exporter.(Holder); ok {
		sreq.Freeze = a.freeze(h, req.Volumes, "snapshot set")
	}
	set, err := a.store.CreateSnapshotSet(r.Context(), sreq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("snapshot set created", "set", set.ID, "volumes", strings.Join(req.Volumes, ","), "method", set.Method, "hold", set.Hold)
	w.Header().Set("Location", "/v1/snapshot-sets/"+set.ID)
	writeJSON(w, http.StatusCreated, snapshotSetJSON(set))
}

// freeze holds the writes to volumes for the cut of what (a "snapshot" or
// a "snapshot set"), for at most a.maxHold. The cut's context ends when the
// hold does, so that a copy that outlasts the hold stops, and a hold that
// did not last discards what was cut: it would not be of one instant.
func (a *API) freeze(h Holder, volumes []string, what string) store.Freeze {
	advice := "a data directory on a filesystem with reflinks (XFS, btrfs) makes the cut instant; otherwise raise the daemon's --max-hold"
	if len(volumes) > 1 {
		advice += ", or snapshot fewer or smaller volumes together"
	}
	return func(ctx context.Context) (context.Context, func() error, error) {
		hold, err := h.HoldWrites(ctx, volumes, a.maxHold)
		if err != nil {
			return nil, nil, badf(http.StatusServiceUnavailable, "%v; the %s was not created", err, what)
		}
		cut, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-hold.Expired():
				cancel()
			case <-cut.Done():
			}
		}()
		thaw := func() error {
			defer cancel()
			if err := hold.Release(); err != nil {
				return badf(http.StatusServiceUnavailable, "%v: cutting the %s took longer than the %s writes may be held, so it was not kept; %s", err, what, a.maxHold, advice)
			}
			return nil
		}
		return cut, thaw, nil
	}
}

func (a *API) listSnapshotSets(w http.ResponseWriter, r *http.Request) {
	match := map[string]string{}
	impossible := false
	for _, f := range r.URL.Query()["label"] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			a.fail(w, r, badf(http.StatusBadRequest, "label=%q: filter with label=KEY=VALUE, e.g. label=drover.io/vm=web-1", f))
			return
		}
		if err := store.CheckLabelKey(k); err != nil {
			a.fail(w, r, badf(http.StatusBadRequest, "label=%q: %v", f, err))
			return
		}
		if old, ok := match[k]; ok && old != v {
			impossible = true // every filter must match: no set has two values for k
		}
		match[k] = v
	}
	out := []wire.SnapshotSet{}
	if !impossible {
		sets, err := a.store.ListSnapshotSets(match)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		for _, s := range sets {
			out = append(out, snapshotSetJSON(s))
		}
	}
	writeJSON(w, http.StatusOK, wire.SnapshotSetList{SnapshotSets: out})
}

func (a *API) getSnapshotSet(w http.ResponseWriter, r *http.Request) {
	set, err := a.store.GetSnapshotSet(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snapshotSetJSON(set))
}

func (a *API) updateSnapshotSet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := store.CheckSetID(id); err != nil {
		a.fail(w, r, err)
		return
	}
	req, err := readJSON(w, r, func(r *http.Request) (wire.UpdateSnapshotSetRequest, error) { return DecodeUpdateSnapshotSet(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	set, err := a.store.SetSnapshotSetLabels(r.Context(), id, req.Labels)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("snapshot set labels replaced", "set", id, "labels", len(set.Labels))
	writeJSON(w, http.StatusOK, snapshotSetJSON(set))
}

func (a *API) deleteSnapshotSet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.store.DeleteSnapshotSet(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("snapshot set deleted", "set", id)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) snapshotSetAttachment(w http.ResponseWriter, r *http.Request) {
	id, name := r.PathValue("id"), r.PathValue("name")
	b, err := a.store.SnapshotSetAttachment(id, name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

func (a *API) snapshotExtents(w http.ResponseWriter, r *http.Request) {
	size, ext, err := a.store.SnapshotExtents(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := wire.Extents{SizeBytes: size, Extents: make([]wire.Extent, len(ext))}
	for i, e := range ext {
		out.Extents[i] = wire.Extent{Offset: e.Offset, Length: e.Length}
	}
	writeJSON(w, http.StatusOK, out)
}
