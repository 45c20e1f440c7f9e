package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/schedule"
	"github.com/drover/terraform-provider-drover/target/store"
)

// LUN is the logical unit number of every volume: each volume is its own
// iSCSI target with a single LU at LUN 0, so a QEMU disk source reads
// "<iqn>/0".
const LUN = 0

// DefaultIQNPrefix is prepended to a volume's name to form its target IQN.
const DefaultIQNPrefix = "iqn.2026-11.io.drover:"

// Export is what the iSCSI engine needs to serve one volume.
type Export struct {
	Name       string
	IQN        string
	LUN        uint64
	Path       string
	Initiators []string // empty: nobody may log in
	CHAP       *wire.CHAP
}

// Exporter is what the API needs of the iSCSI engine: start, change and
// stop serving a volume at runtime, and list who is logged in.
type Exporter interface {
	Add(ex Export) error
	Update(ex Export) error
	Remove(name string) error
	Sessions() []wire.Session
}

// Holder is implemented by exporters that can hold writes to volumes, so
// that a snapshot, or a snapshot set, is cut at one instant. An exporter
// without it (a test fake, an engine that cannot) gets them cut without a
// hold.
type Holder interface {
	// HoldWrites stops the commands that change data on the named volumes,
	// waits for those running to finish (giving up with an error at limit),
	// and returns with the volumes quiet. The hold ends by itself at limit.
	HoldWrites(ctx context.Context, volumes []string, limit time.Duration) (WriteHold, error)
}

// WriteHold is writes held by a Holder.
type WriteHold interface {
	// Expired is closed when the hold ends at its time limit.
	Expired() <-chan struct{}
	// Release lets the held writes go on; it reports an error if the hold
	// had already ended at its limit.
	Release() error
}

// DefaultScheduleRunTimeout bounds one run of a backup schedule: the cut,
// its copy, the copy to restic and pruning.
const DefaultScheduleRunTimeout = 24 * time.Hour

// DefaultMaxHold bounds how long writes are held for a snapshot or a
// snapshot set, draining included: no initiator waits longer.
const DefaultMaxHold = 10 * time.Second

// Config configures an API.
type Config struct {
	Store     *store.Store
	Exporter  Exporter
	Token     string // required: every path but /v1/health needs it
	IQNPrefix string // default DefaultIQNPrefix
	Logger    *slog.Logger
	Metrics   http.Handler // served at GET /metrics (behind the token); nil: 404
	// MaxHold bounds the write hold of a snapshot or a snapshot set;
	// default DefaultMaxHold.
	MaxHold time.Duration
	// Schedules tunes the scheduler of backup schedules (its metric goes
	// to Schedules.Registerer); RunSchedules starts it.
	Schedules schedule.Options
	// Restic is the restic command of schedules with a restic block;
	// default "restic" from PATH.
	Restic string
}

// API is the management API's http.Handler.
type API struct {
	store     *store.Store
	exporter  Exporter
	tokenHash [sha256.Size]byte
	iqnPrefix string
	maxHold   time.Duration
	log       *slog.Logger
	mux       *http.ServeMux
	fenceMu   sync.Mutex // serialises fence changes (fences.go)
	scheduler *schedule.Scheduler
	restic    string
	// resticMu serialises the runs' work in each restic repository (by
	// repository): restic 0.14 does not wait for a lock, so two schedules
	// sending to one repository at once would fail each other's prune.
	resticMu keyedMutex
}

// New checks cfg and builds the API.
func New(cfg Config) (*API, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("api: no store")
	case cfg.Exporter == nil:
		return nil, errors.New("api: no exporter")
	case strings.TrimSpace(cfg.Token) == "":
		return nil, errors.New("api: no token: the API refuses to run without one")
	}
	if cfg.IQNPrefix == "" {
		cfg.IQNPrefix = DefaultIQNPrefix
	}
	if cfg.MaxHold < 0 {
		return nil, fmt.Errorf("api: max hold %s: give a positive duration, or 0 for the default %s", cfg.MaxHold, DefaultMaxHold)
	}
	if cfg.MaxHold == 0 {
		cfg.MaxHold = DefaultMaxHold
	}
	if err := CheckIQNPrefix(cfg.IQNPrefix); err != nil {
		return nil, err
	}
	a := &API{
		store:     cfg.Store,
		exporter:  cfg.Exporter,
		tokenHash: sha256.Sum256([]byte(cfg.Token)),
		iqnPrefix: cfg.IQNPrefix,
		maxHold:   cfg.MaxHold,
		log:       cfg.Logger,
		mux:       http.NewServeMux(),
		restic:    cfg.Restic,
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Schedules.Logger == nil {
		cfg.Schedules.Logger = a.log
	}
	if cfg.Schedules.RunTimeout == 0 {
		// A run sends whole disk images to restic: hours for large
		// disks, not the scheduler's default half hour.
		cfg.Schedules.RunTimeout = DefaultScheduleRunTimeout
	}
	a.scheduler = schedule.New(scheduleRunner{a}, cfg.Schedules)
	a.routes(cfg.Metrics)
	return a, nil
}

// CheckIQNPrefix accepts prefixes like "iqn.2026-11.io.drover:": "iqn.", a
// year-month date, a dot, then lowercase letters, digits, '.', '-' and ':',
// short enough that any volume name fits within the 223 bytes of an iSCSI
// name.
func CheckIQNPrefix(p string) error {
	if !iqnPrefixRE.MatchString(p) || len(p)+store.MaxNameLen > 223 {
		return fmt.Errorf("iqn prefix %q: start with \"iqn.\" and keep it under %d characters, e.g. %q", p, 223-store.MaxNameLen, DefaultIQNPrefix)
	}
	for _, c := range p {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':') {
			return fmt.Errorf("iqn prefix %q has %q: use a-z, 0-9, '.', '-' and ':'", p, c)
		}
	}
	return nil
}

var iqnPrefixRE = regexp.MustCompile(`^iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9.:-]+$`)

func (a *API) routes(metrics http.Handler) {
	type route struct {
		methods string
		pattern string
		h       http.HandlerFunc
	}
	routes := []route{
		{"GET", "/v1/health", a.health},
		{"GET", "/v1/volumes", a.listVolumes},
		{"POST", "/v1/volumes", a.createVolume},
		{"GET", "/v1/volumes/{name}", a.getVolume},
		{"PATCH", "/v1/volumes/{name}", a.updateVolume},
		{"DELETE", "/v1/volumes/{name}", a.deleteVolume},
		{"PUT", "/v1/volumes/{name}/data", a.putData},
		{"GET", "/v1/volumes/{name}/snapshots", a.listSnapshots},
		{"POST", "/v1/volumes/{name}/snapshots", a.createSnapshot},
		{"GET", "/v1/snapshots/{id}", a.getSnapshot},
		{"DELETE", "/v1/snapshots/{id}", a.deleteSnapshot},
		{"GET", "/v1/snapshots/{id}/data", a.snapshotData},
		{"GET", "/v1/snapshots/{id}/extents", a.snapshotExtents},
		{"GET", "/v1/snapshot-sets", a.listSnapshotSets},
		{"POST", "/v1/snapshot-sets", a.createSnapshotSet},
		{"GET", "/v1/snapshot-sets/{id}", a.getSnapshotSet},
		{"PATCH", "/v1/snapshot-sets/{id}", a.updateSnapshotSet},
		{"DELETE", "/v1/snapshot-sets/{id}", a.deleteSnapshotSet},
		{"GET", "/v1/snapshot-sets/{id}/attachments/{name}", a.snapshotSetAttachment},
		{"GET", "/v1/sessions", a.sessions},
		{"GET", "/v1/fences", a.listFences},
		{"PUT", "/v1/fences/{initiator}", a.putFence},
		{"DELETE", "/v1/fences/{initiator}", a.deleteFence},
		{"GET", "/v1/schedules", a.listSchedules},
		{"POST", "/v1/schedules", a.createSchedule},
		{"GET", "/v1/schedules/{id}", a.getSchedule},
		{"PUT", "/v1/schedules/{id}", a.replaceSchedule},
		{"DELETE", "/v1/schedules/{id}", a.deleteSchedule},
		{"POST", "/v1/restic-checks", a.checkRestic},
	}
	if metrics != nil {
		routes = append(routes, route{"GET", "/metrics", metrics.ServeHTTP})
	}
	allowed := map[string][]string{}
	var order []string
	for _, r := range routes {
		a.mux.HandleFunc(r.methods+" "+r.pattern, r.h)
		if _, ok := allowed[r.pattern]; !ok {
			order = append(order, r.pattern)
		}
		allowed[r.pattern] = append(allowed[r.pattern], r.methods)
	}
	for _, p := range order {
		methods := strings.Join(allowed[p], ", ")
		a.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", methods)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s: use %s", r.Method, r.URL.Path, methods))
		})
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s: see docs/target.md for the API", r.URL.Path))
	})
}

// ServeHTTP checks the token (except for /v1/health) and that the path is
// canonical, then routes.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		a.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", time.Since(start), "remote", r.RemoteAddr)
	}()
	if r.URL.Path != "/v1/health" && !a.authorized(r) {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="drover-target"`)
		writeError(rec, http.StatusUnauthorized, "missing or wrong bearer token: send the header Authorization: Bearer <the token in the daemon's --token-file>")
		return
	}
	if p := r.URL.Path; p == "" || p[0] != '/' || (p != "/" && path.Clean(p) != strings.TrimSuffix(p, "/")) || strings.Contains(p, "//") {
		writeError(rec, http.StatusBadRequest, fmt.Sprintf("path %q is not canonical (it has '.', '..' or '//' segments): use the plain path", p))
		return
	}
	a.mux.ServeHTTP(rec, r)
}

func (a *API) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	// Hashing first makes the comparison constant-time in the length too.
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) == 1
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, wire.ErrorBody{Error: msg})
}

// fail answers with the status that fits err's kind; its message was
// written for the client.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var br *badRequest
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &br):
		status = br.status
	case errors.Is(err, store.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, store.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrShrink), errors.Is(err, store.ErrNoSpace), errors.Is(err, store.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, store.ErrTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, store.ErrUnsupported):
		status = http.StatusNotImplemented
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusServiceUnavailable
	}
	if status >= 500 {
		a.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, status, err.Error())
}

// readJSON checks the content type and decodes a body of at most
// maxJSONBody bytes with decode.
func readJSON[T any](w http.ResponseWriter, r *http.Request, decode func(*http.Request) (T, error)) (T, error) {
	return readJSONUpTo(w, r, maxJSONBody, decode)
}

// readJSONUpTo is readJSON with another bound.
func readJSONUpTo[T any](w http.ResponseWriter, r *http.Request, limit int64, decode func(*http.Request) (T, error)) (T, error) {
	var zero T
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return zero, badf(http.StatusUnsupportedMediaType, "Content-Type %q is not JSON: send Content-Type: application/json", ct)
		}
	} else {
		return zero, badf(http.StatusUnsupportedMediaType, "Content-Type is missing: send Content-Type: application/json")
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	return decode(r)
}

// Export is the export of a volume.
func (a *API) Export(v store.Volume) Export {
	return Export{
		Name:       v.Name,
		IQN:        a.iqnPrefix + v.Name,
		LUN:        LUN,
		Path:       v.Path,
		Initiators: v.Access.Initiators,
		CHAP:       v.Access.CHAP,
	}
}

// ExportAll exports every volume of the store, as at daemon start. It
// tries them all and reports the failures together.
func (a *API) ExportAll() error {
	vols, err := a.store.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, v := range vols {
		if err := a.exporter.Add(a.Export(v)); err != nil {
			errs = append(errs, fmt.Errorf("export volume %s: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (a *API) volumeJSON(v store.Volume) wire.Volume {
	out := wire.Volume{
		Name:       v.Name,
		SizeMiB:    v.SizeMiB,
		IQN:        a.iqnPrefix + v.Name,
		LUN:        LUN,
		Initiators: v.Access.Initiators,
		CreatedAt:  v.CreatedAt,
	}
	if out.Initiators == nil {
		out.Initiators = []string{}
	}
	if c := v.Access.CHAP; c != nil {
		out.CHAP = &wire.PublicCHAP{User: c.User, MutualUser: c.MutualUser}
	}
	if v.Source != nil {
		out.Source = &wire.Source{Volume: v.Source.Volume, Snapshot: v.Source.Snapshot}
	}
	return out
}

func snapshotJSON(s store.Snapshot) wire.Snapshot {
	return wire.Snapshot{ID: s.ID, Volume: s.Volume, SizeMiB: s.SizeMiB, Method: s.Method, CreatedAt: s.CreatedAt, Set: s.Set,
		State: stateJSON(s.Copying), CopiedBytes: s.CopiedBytes, TotalBytes: s.TotalBytes}
}

func snapshotSetJSON(s store.SnapshotSet) wire.SnapshotSet {
	out := wire.SnapshotSet{
		ID:          s.ID,
		CreatedAt:   s.CreatedAt,
		Labels:      s.Labels,
		Attachments: s.Attachments,
		Snapshots:   make([]wire.Snapshot, 0, len(s.Snapshots)),
		Method:      s.Method,
		HoldMS:      (s.Hold + time.Millisecond - 1).Milliseconds(), // a hold shows as at least 1
		State:       stateJSON(s.Copying),
		CopiedBytes: s.CopiedBytes,
		TotalBytes:  s.TotalBytes,
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.Attachments == nil {
		out.Attachments = []string{}
	}
	for _, sn := range s.Snapshots {
		out.Snapshots = append(out.Snapshots, snapshotJSON(sn))
	}
	return out
}

// sessionsOf returns the sessions on one volume.
func (a *API) sessionsOf(name string) []wire.Session {
	var out []wire.Session
	for _, s := range a.exporter.Sessions() {
		if s.Volume == name {
			out = append(out, s)
		}
	}
	return out
}

func describeSessions(ss []wire.Session) string {
	names := make([]string, 0, len(ss))
	for _, s := range ss {
		names = append(names, s.Initiator+" from "+s.RemoteAddr)
	}
	return strings.Join(names, ", ")
}

func parseForce(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("force")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badf(http.StatusBadRequest, "force=%q: use force=true or force=false", v)
	}
	return b, nil
}
