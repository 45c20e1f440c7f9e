package apitest

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
)

// Exporter is an in-memory api.Exporter, api.Holder and api.Fencer: it
// records exports, write holds and fences and reports whatever sessions a
// test puts in it.
type Exporter struct {
	mu       sync.Mutex // guards the fields below
	exports  map[string]api.Export
	sessions []wire.Session
	removed  []string
	holds    []*Hold
	holdErr  error
	expire   bool
	fenced   map[string]bool
	fenceErr error
}

var (
	_ api.Holder = (*Exporter)(nil)
	_ api.Fencer = (*Exporter)(nil)
)

// Fence records the initiator as fenced and, like the real engine, drops
// its sessions; or it fails with the error given to FailFences (and, like
// the engine at its deadline, leaves the initiator fenced).
func (e *Exporter) Fence(ctx context.Context, initiator string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fenced == nil {
		e.fenced = map[string]bool{}
	}
	e.fenced[initiator] = true
	if e.fenceErr != nil {
		return e.fenceErr
	}
	e.sessions = slices.DeleteFunc(e.sessions, func(s wire.Session) bool { return s.Initiator == initiator })
	return nil
}

// Unfence drops the initiator from the fenced ones.
func (e *Exporter) Unfence(initiator string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.fenced, initiator)
}

// Fenced returns the fenced initiators, sorted.
func (e *Exporter) Fenced() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.fenced))
	for name := range e.fenced {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// FailFences makes Fence fail with err (nil: succeed again).
func (e *Exporter) FailFences(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fenceErr = err
}

// Hold is a write hold as Exporter records it.
type Hold struct {
	Volumes []string
	Limit   time.Duration

	expired  chan struct{}
	mu       sync.Mutex // guards released
	released bool
}

// Expired is closed at once for holds made after ExpireHolds(true).
func (h *Hold) Expired() <-chan struct{} { return h.expired }

// Release ends the hold; it fails for a hold that expired.
func (h *Hold) Release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.released = true
	select {
	case <-h.expired:
		return errors.New("writes were held for the longest allowed time and released before the hold was over")
	default:
		return nil
	}
}

// Released reports whether Release was called.
func (h *Hold) Released() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.released
}

// HoldWrites records a hold of the volumes, or fails with the error given
// to FailHolds.
func (e *Exporter) HoldWrites(ctx context.Context, volumes []string, limit time.Duration) (api.WriteHold, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.holdErr != nil {
		return nil, e.holdErr
	}
	h := &Hold{Volumes: slices.Clone(volumes), Limit: limit, expired: make(chan struct{})}
	if e.expire {
		close(h.expired)
	}
	e.holds = append(e.holds, h)
	return h, nil
}

// FailHolds makes HoldWrites fail with err (nil: succeed again).
func (e *Exporter) FailHolds(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.holdErr = err
}

// ExpireHolds makes new holds end at once, as at their time limit.
func (e *Exporter) ExpireHolds(expire bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire = expire
}

// Holds returns the holds made so far, oldest first.
func (e *Exporter) Holds() []*Hold {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.holds)
}

// NewExporter returns an Exporter with nothing exported.
func NewExporter() *Exporter { return &Exporter{exports: map[string]api.Export{}} }

// Add records an export.
func (e *Exporter) Add(ex api.Export) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exports[ex.Name] = ex
	return nil
}

// Update replaces an export.
func (e *Exporter) Update(ex api.Export) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.exports[ex.Name] = ex
	return nil
}

// Remove drops the export and, like the real engine, its sessions.
func (e *Exporter) Remove(name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.exports, name)
	e.removed = append(e.removed, name)
	e.sessions = slices.DeleteFunc(e.sessions, func(s wire.Session) bool { return s.Volume == name })
	return nil
}

// Sessions returns the sessions added with AddSession and not removed.
func (e *Exporter) Sessions() []wire.Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.sessions)
}

// Close does nothing; it lets Exporter stand in for the whole engine.
func (e *Exporter) Close() error { return nil }

// AddSession pretends an initiator logged in.
func (e *Exporter) AddSession(s wire.Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sessions = append(e.sessions, s)
}

// Exports returns the current exports, ordered by name.
func (e *Exporter) Exports() []api.Export {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]api.Export, 0, len(e.exports))
	for _, ex := range e.exports {
		out = append(out, ex)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Export returns one export and whether it exists.
func (e *Exporter) Export(name string) (api.Export, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ex, ok := e.exports[name]
	return ex, ok
}

// Token is the bearer token of servers made by New.
const Token = "test-token-0123456789"

// Server is an in-process drover-target API.
type Server struct {
	*httptest.Server
	API      *api.API
	Store    *store.Store
	Exporter *Exporter
}

// New starts the real API on a fresh store in a temporary directory.
func New(t testing.TB) *Server { return NewWith(t, Options{}) }

// Options tune a Server made by NewWith.
type Options struct {
	Dir   string        // the data directory; a temporary one when empty
	Store store.Options // how the store is opened
	// Config is called on the API's configuration before the API is made
	// (the store, exporter and token are set already).
	Config func(*api.Config)
}

// NewWith starts the real API as opts say.
func NewWith(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := store.Open(dir, opts.Store)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	ex := NewExporter()
	cfg := api.Config{Store: st, Exporter: ex, Token: Token}
	if opts.Config != nil {
		opts.Config(&cfg)
	}
	a, err := api.New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &Server{Server: srv, API: a, Store: st, Exporter: ex}
}

// FreeAddr is a loopback address with a port nobody listens on now, for a
// server a test starts on an address it must know beforehand.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
