package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, wire.Health{Status: "ok"})
}

func (a *API) listVolumes(w http.ResponseWriter, r *http.Request) {
	vols, err := a.store.List()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]wire.Volume, 0, len(vols))
	for _, v := range vols {
		out = append(out, a.volumeJSON(v))
	}
	writeJSON(w, http.StatusOK, wire.VolumeList{Volumes: out})
}

func (a *API) createVolume(w http.ResponseWriter, r *http.Request) {
	req, err := readJSON(w, r, func(r *http.Request) (wire.CreateVolumeRequest, error) { return DecodeCreateVolume(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var v store.Volume
	if req.Source != nil {
		src := store.Source{Volume: req.Source.Volume, Snapshot: req.Source.Snapshot}
		v, err = a.store.Clone(r.Context(), req.Name, src, req.SizeMiB, accessOf(req))
		if errors.Is(err, store.ErrNotFound) {
			err = badf(http.StatusBadRequest, "%v", err) // the URL exists; the source in the body does not
		}
	} else {
		v, err = a.store.Create(r.Context(), req.Name, req.SizeMiB, accessOf(req))
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.exporter.Add(a.Export(v)); err != nil {
		if derr := a.store.Delete(r.Context(), v.Name); derr != nil {
			a.log.Error("undo volume creation after a failed export", "volume", v.Name, "err", derr)
		}
		a.fail(w, r, fmt.Errorf("export volume %q over iSCSI: %w", v.Name, err))
		return
	}
	a.log.Info("volume created", "volume", v.Name, "size_mib", v.SizeMiB)
	w.Header().Set("Location", "/v1/volumes/"+v.Name)
	writeJSON(w, http.StatusCreated, a.volumeJSON(v))
}

func (a *API) getVolume(w http.ResponseWriter, r *http.Request) {
	v, err := a.store.Get(r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.volumeJSON(v))
}

func (a *API) updateVolume(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := store.CheckName(name); err != nil {
		a.fail(w, r, err)
		return
	}
	req, err := readJSON(w, r, func(r *http.Request) (UpdateVolumeRequest, error) { return DecodeUpdateVolume(r.Body) })
	if err != nil {
		a.fail(w, r, err)
		return
	}
	u := store.Update{SetCHAP: req.CHAP.Set, CHAP: req.CHAP.Value}
	if req.SizeMiB != nil {
		u.SizeMiB = *req.SizeMiB
	}
	if req.Initiators != nil {
		u.Initiators, u.SetInitiators = *req.Initiators, true
	}
	v, err := a.store.Update(r.Context(), name, u)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.exporter.Update(a.Export(v)); err != nil {
		a.fail(w, r, fmt.Errorf("volume %q is updated in the store but the iSCSI export did not follow (restart the daemon to re-export): %w", name, err))
		return
	}
	a.log.Info("volume updated", "volume", name, "size_mib", v.SizeMiB)
	writeJSON(w, http.StatusOK, a.volumeJSON(v))
}

func (a *API) deleteVolume(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	force, err := parseForce(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if _, err := a.store.Get(name); err != nil {
		a.fail(w, r, err)
		return
	}
	if ss := a.sessionsOf(name); len(ss) > 0 && !force {
		a.fail(w, r, badf(http.StatusConflict, "volume %q is in use by %d session(s) (%s): log them out (stop or move the VM) or delete with ?force=true", name, len(ss), describeSessions(ss)))
		return
	}
	if err := a.exporter.Remove(name); err != nil {
		a.log.Warn("stop exporting volume before delete", "volume", name, "err", err)
	}
	if err := a.store.Delete(r.Context(), name); err != nil {
		if v, gerr := a.store.Get(name); gerr == nil {
			if aerr := a.exporter.Add(a.Export(v)); aerr != nil {
				a.log.Error("re-export volume after a failed delete", "volume", name, "err", aerr)
			}
		}
		a.fail(w, r, err)
		return
	}
	a.log.Info("volume deleted", "volume", name, "force", force)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) putData(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	format := r.URL.Query().Get("format")
	if format != store.FormatAuto && format != store.FormatRaw && format != store.FormatQCOW2 {
		a.fail(w, r, badf(http.StatusBadRequest, "format=%q: use format=raw or format=qcow2, or leave it out to detect", format))
		return
	}
	v, err := a.store.Get(name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if ss := a.sessionsOf(name); len(ss) > 0 {
		a.fail(w, r, badf(http.StatusConflict, "volume %q is in use by %d session(s) (%s): uploading would change the disk under them; log them out first", name, len(ss), describeSessions(ss)))
		return
	}
	// The upload replaces the backing file: stop serving the old one and
	// serve whichever file is there afterwards.
	if err := a.exporter.Remove(name); err != nil {
		a.log.Warn("stop exporting volume before upload", "volume", name, "err", err)
	}
	err = a.store.WriteImage(r.Context(), name, r.Body, format)
	if aerr := a.exporter.Add(a.Export(v)); aerr != nil {
		a.log.Error("re-export volume after upload", "volume", name, "err", aerr)
		if err == nil {
			err = fmt.Errorf("volume %q was written but cannot be exported (restart the daemon): %w", name, aerr)
		}
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("volume content replaced", "volume", name)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) createSnapshot(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := store.CheckName(name); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := emptyOrEmptyObject(w, r); err != nil {
		a.fail(w, r, err)
		return
	}
	var freeze store.Freeze
	if h, ok := a.exporter.(Holder); ok {
		freeze = a.freeze(h, []string{name}, "snapshot")
	}
	s, err := a.store.CreateSnapshot(r.Context(), name, freeze)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("snapshot created", "snapshot", s.ID, "method", s.Method)
	w.Header().Set("Location", "/v1/snapshots/"+s.ID)
	writeJSON(w, http.StatusCreated, snapshotJSON(s))
}

// emptyOrEmptyObject accepts no body or "{}": snapshots take no options
// yet, and anything else is probably a mistake worth reporting.
func emptyOrEmptyObject(w http.ResponseWriter, r *http.Request) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		return jsonError(err, "")
	}
	if len(b) == 0 {
		return nil
	}
	var none struct{}
	return decodeStrictBytes(b, &none)
}

func (a *API) listSnapshots(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	snaps, err := a.store.ListSnapshots(name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if len(snaps) == 0 {
		if _, err := a.store.Get(name); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	out := make([]wire.Snapshot, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, snapshotJSON(s))
	}
	writeJSON(w, http.StatusOK, wire.SnapshotList{Snapshots: out})
}

func (a *API) getSnapshot(w http.ResponseWriter, r *http.Request) {
	s, err := a.store.GetSnapshot(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snapshotJSON(s))
}

func (a *API) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.store.DeleteSnapshot(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("snapshot deleted", "snapshot", id)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) snapshotData(w http.ResponseWriter, r *http.Request) {
	f, s, err := a.store.OpenSnapshot(r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", s.ID+".raw"))
	// A snapshot never changes, so its ID and creation time make a strong
	// ETag: a client resuming with Range and If-Range gets the same bytes or
	// the whole snapshot anew. ServeContent answers a single Range with 206.
	w.Header().Set("ETag", fmt.Sprintf(`"%s-%d"`, s.ID, s.CreatedAt.UnixNano()))
	http.ServeContent(w, r, "", s.CreatedAt, f)
}

func (a *API) sessions(w http.ResponseWriter, r *http.Request) {
	out := a.exporter.Sessions()
	if out == nil {
		out = []wire.Session{} // [] in JSON, not null
	}
	writeJSON(w, http.StatusOK, wire.SessionList{Sessions: out})
}
