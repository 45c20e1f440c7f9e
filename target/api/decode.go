package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

// maxJSONBody bounds every JSON request body but that of a snapshot set.
const maxJSONBody = 64 << 10

// maxSetBody bounds the body of POST /v1/snapshot-sets: its attachments
// may hold 1 MiB, which JSON escaping (\u003c for '<', as Go encodes it)
// can grow six-fold.
const maxSetBody = 8 << 20

// UpdateVolumeRequest is wire.UpdateVolumeRequest as the daemon decodes
// it: in one pass, with absent and null "chap" told apart and a bad "chap"
// refused where it stands in the body. It is not built on the wire type
// because an embedded struct's name would show in decoding errors.
type UpdateVolumeRequest struct {
	SizeMiB    *int64       `json:"size_mib"`
	Initiators *[]string    `json:"initiators"`
	CHAP       optionalCHAP `json:"chap"`
}

// optionalCHAP tells an absent "chap" from "chap": null.
type optionalCHAP struct {
	Set   bool
	Value *wire.CHAP
}

func (o *optionalCHAP) UnmarshalJSON(b []byte) error {
	o.Set = true
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		o.Value = nil
		return nil
	}
	var c wire.CHAP
	// The outer decoder's DisallowUnknownFields does not reach here.
	if err := decodeStrict(bytes.NewReader(b), &c, "chap: "); err != nil {
		return err
	}
	o.Value = &c
	return nil
}

// badRequest is an error whose message goes to the client as is.
type badRequest struct {
	status int
	msg    string
}

func (e *badRequest) Error() string { return e.msg }

func badf(status int, format string, args ...any) error {
	return &badRequest{status: status, msg: fmt.Sprintf(format, args...)}
}

// decodeStrict decodes exactly one JSON value into v: unknown fields and
// trailing data are errors, and every error says what to fix.
func decodeStrict(r io.Reader, v any, prefix string) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, prefix)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return badf(http.StatusBadRequest, "%sthe body has data after the JSON object: send exactly one object", prefix)
	}
	return nil
}

func jsonError(err error, prefix string) error {
	var br *badRequest
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var big *http.MaxBytesError
	switch {
	case errors.As(err, &br):
		return err
	case errors.As(err, &big):
		return badf(http.StatusRequestEntityTooLarge, "the request body is larger than %d bytes", big.Limit)
	case errors.Is(err, io.EOF):
		return badf(http.StatusBadRequest, "%sthe request body is empty: send a JSON object", prefix)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badf(http.StatusBadRequest, "%smalformed JSON: the body ends in the middle of a value", prefix)
	case errors.As(err, &syn):
		return badf(http.StatusBadRequest, "%smalformed JSON at byte %d: %v", prefix, syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badf(http.StatusBadRequest, "%sthe body must be a JSON object, not %s", prefix, typ.Value)
		}
		return badf(http.StatusBadRequest, "%sfield %q must be %s, not %s", prefix, typ.Field, jsonKind(typ.Type.String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badf(http.StatusBadRequest, "%sunknown field %s: check the spelling (fields are lowercase with underscores)", prefix, strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return badf(http.StatusBadRequest, "%sinvalid JSON: %v", prefix, err)
}

func jsonKind(goType string) string {
	switch goType {
	case "int", "int64", "*int64":
		return "a whole number"
	case "string":
		return "a string"
	case "[]string", "*[]string":
		return "a list of strings"
	case "map[string]string":
		return "an object of strings"
	}
	return "an object"
}

// DecodeCreateVolume reads and checks a POST /v1/volumes body without
// touching any state: syntax, fields, name, size and access settings.
func DecodeCreateVolume(r io.Reader) (wire.CreateVolumeRequest, error) {
	var req wire.CreateVolumeRequest
	if err := decodeStrict(r, &req, ""); err != nil {
		return req, err
	}
	if err := store.CheckName(req.Name); err != nil {
		return req, badf(http.StatusBadRequest, "name: %v", err)
	}
	if req.Source == nil || req.SizeMiB != 0 {
		if err := store.CheckSize(req.SizeMiB); err != nil {
			return req, badf(http.StatusBadRequest, "%v", err)
		}
	}
	if req.Source != nil {
		s := req.Source
		switch {
		case (s.Volume == "") == (s.Snapshot == ""):
			return req, badf(http.StatusBadRequest, `source: set exactly one of "volume" and "snapshot"`)
		case s.Volume != "":
			if err := store.CheckName(s.Volume); err != nil {
				return req, badf(http.StatusBadRequest, "source.volume: %v", err)
			}
		default:
			if err := store.CheckSnapshotID(s.Snapshot); err != nil {
				return req, badf(http.StatusBadRequest, "source.snapshot: %v", err)
			}
		}
	}
	if err := store.CheckAccess(accessOf(req)); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	return req, nil
}

// accessOf is who may log in to the volume req creates.
func accessOf(req wire.CreateVolumeRequest) store.Access {
	return store.Access{Initiators: req.Initiators, CHAP: req.CHAP}
}

// DecodeUpdateVolume reads and checks a PATCH /v1/volumes/{name} body.
func DecodeUpdateVolume(r io.Reader) (UpdateVolumeRequest, error) {
	var req UpdateVolumeRequest
	if err := decodeStrict(r, &req, ""); err != nil {
		return req, err
	}
	if req.SizeMiB == nil && req.Initiators == nil && !req.CHAP.Set {
		return req, badf(http.StatusBadRequest, `nothing to change: give size_mib, initiators or chap`)
	}
	if req.SizeMiB != nil {
		if err := store.CheckSize(*req.SizeMiB); err != nil {
			return req, badf(http.StatusBadRequest, "%v", err)
		}
	}
	a := store.Access{CHAP: req.CHAP.Value}
	if req.Initiators != nil {
		a.Initiators = *req.Initiators
	}
	if err := store.CheckAccess(a); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	return req, nil
}

func decodeStrictBytes(b []byte, v any) error { return decodeStrict(bytes.NewReader(b), v, "") }

// DecodeCreateSnapshotSet reads and checks a POST /v1/snapshot-sets body
// without touching any state: syntax, fields, volume names, labels and
// attachments. Whether the volumes exist is the store's to say.
func DecodeCreateSnapshotSet(r io.Reader) (wire.CreateSnapshotSetRequest, error) {
	var req wire.CreateSnapshotSetRequest
	if err := decodeStrict(r, &req, ""); err != nil {
		return req, err
	}
	if err := store.CheckSetVolumes(req.Volumes); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	if err := store.CheckLabels(req.Labels); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	if err := store.CheckAttachments(attachmentsOf(req)); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	return req, nil
}

// DecodeUpdateSnapshotSet reads and checks a PATCH /v1/snapshot-sets/{id}
// body without touching any state. "labels" must be there and not null: a
// PATCH that forgot it must not wipe the labels.
func DecodeUpdateSnapshotSet(r io.Reader) (wire.UpdateSnapshotSetRequest, error) {
	var req wire.UpdateSnapshotSetRequest
	if err := decodeStrict(r, &req, ""); err != nil {
		return req, err
	}
	if req.Labels == nil {
		return req, badf(http.StatusBadRequest, `labels is required: give the set's new labels as an object, {} to remove them all`)
	}
	if err := store.CheckLabels(req.Labels); err != nil {
		return req, badf(http.StatusBadRequest, "%v", err)
	}
	return req, nil
}

// attachmentsOf is the attachments of req as the store takes them.
func attachmentsOf(req wire.CreateSnapshotSetRequest) map[string][]byte {
	if req.Attachments == nil {
		return nil
	}
	out := make(map[string][]byte, len(req.Attachments))
	for k, v := range req.Attachments {
		out[k] = []byte(v)
	}
	return out
}
