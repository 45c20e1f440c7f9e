package iscsi

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CHAP holds the credentials a volume requires at login. User and Secret
// authenticate the initiator; MutualUser and MutualSecret, when set, are what
// the target answers with when the initiator asks it to authenticate itself.
type CHAP struct{ User, Secret, MutualUser, MutualSecret string }

// Export describes one volume to serve as its own iSCSI target.
type Export struct {
	Name       string   // volume name, [a-z0-9-]{1,63}
	IQN        string   // target name, e.g. iqn.2026-11.io.drover:vol1
	LUN        uint64   // must be 0: each target has exactly one logical unit, LUN 0
	Path       string   // backing sparse raw file
	Initiators []string // allowed initiator IQNs; empty means nobody may log in
	CHAP       *CHAP    // nil: no CHAP; set: CHAP required; Mutual*: mutual CHAP offered
}

// Session is one logged-in initiator.
type Session struct {
	Volume, TargetIQN, Initiator, RemoteAddr string
	Since                                    time.Time
}

// Config configures an Engine.
type Config struct {
	Listen     string // host:port, e.g. "127.0.0.1:3260"
	Logger     *slog.Logger
	Registerer prometheus.Registerer // per-volume metrics; nil disables registration
	// Reservations keeps persistent reservations across restarts (the
	// volume store); nil keeps them in memory only.
	Reservations ReservationStore
}

const loginTimeout = 30 * time.Second

// Engine serves a set of volumes over iSCSI on one listening address.
type Engine struct {
	log     *slog.Logger
	resv    ReservationStore // Config.Reservations
	ln      net.Listener
	metrics *metrics
	wg      sync.WaitGroup // accept loop and connections

	// mu guards everything below.
	mu       sync.Mutex
	volumes  map[string]*volume // by name
	byIQN    map[string]*volume
	sessions map[*session]struct{}
	nextTSIH uint16
	closed   bool
}

type volume struct {
	name    string
	unit    *logicalUnit
	store   *fileStore
	metrics *volumeMetrics

	// mu guards ex, which Update replaces.
	mu sync.Mutex
	ex Export
}

func (v *volume) export() Export {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.ex
}

// New starts serving on cfg.Listen; volumes are added with Add.
func New(cfg Config) (*Engine, error) {
	if cfg.Listen == "" {
		return nil, errors.New("iscsi: no listen address")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "iscsi")
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("iscsi: register metrics: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("iscsi: %w", err)
	}
	routeGotgtLogs(log)
	e := &Engine{
		log:      log,
		resv:     cfg.Reservations,
		ln:       ln,
		metrics:  m,
		volumes:  map[string]*volume{},
		byIQN:    map[string]*volume{},
		sessions: map[*session]struct{}{},
	}
	e.wg.Add(1)
	go e.accept()
	log.Info("iscsi listening", "addr", ln.Addr().String())
	return e, nil
}

// Addr is the address the engine listens on (useful with port 0).
func (e *Engine) Addr() net.Addr { return e.ln.Addr() }

var (
	nameRE = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	iqnRE  = regexp.MustCompile(`^(iqn\.\d{4}-\d{2}\.[^ ,]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$`)
)

func validate(ex Export) error {
	switch {
	case !nameRE.MatchString(ex.Name):
		return fmt.Errorf("volume name %q: want 1-63 of [a-z0-9-]", ex.Name)
	case len(ex.IQN) > 223 || !iqnRE.MatchString(ex.IQN):
		return fmt.Errorf("target name %q is not a valid iSCSI name", ex.IQN)
	case ex.LUN != 0:
		return fmt.Errorf("lun %d: every volume is exported at LUN 0", ex.LUN)
	case ex.Path == "":
		return errors.New("no backing file")
	case ex.CHAP != nil && (ex.CHAP.User == "" || ex.CHAP.Secret == ""):
		return errors.New("chap needs a user and a secret")
	case ex.CHAP != nil && (ex.CHAP.MutualUser == "") != (ex.CHAP.MutualSecret == ""):
		return errors.New("mutual chap needs both a user and a secret")
	case ex.CHAP != nil && ex.CHAP.MutualSecret != "" && ex.CHAP.MutualSecret == ex.CHAP.Secret:
		return errors.New("mutual chap secret must differ from the initiator's secret")
	}
	return nil
}

func cloneExport(ex Export) Export {
	ex.Initiators = slices.Clone(ex.Initiators)
	if ex.CHAP != nil {
		c := *ex.CHAP
		ex.CHAP = &c
	}
	return ex
}

// Add exports a volume. Sessions of other volumes are not affected.
func (e *Engine) Add(ex Export) error {
	if err := validate(ex); err != nil {
		return fmt.Errorf("add %s: %w", ex.Name, err)
	}
	ex = cloneExport(ex)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("add %s: engine closed", ex.Name)
	}
	if _, ok := e.volumes[ex.Name]; ok {
		return fmt.Errorf("add %s: already exported", ex.Name)
	}
	if _, ok := e.byIQN[ex.IQN]; ok {
		return fmt.Errorf("add %s: target %s already exported", ex.Name, ex.IQN)
	}
	vm := e.metrics.forVolume(ex.Name)
	store, err := openFileStore(ex.Path, vm)
	if err != nil {
		return fmt.Errorf("add %s: %w", ex.Name, err)
	}
	size, err := store.size()
	if err != nil || size == 0 {
		store.f.Close()
		if err == nil {
			err = fmt.Errorf("%s is smaller than one block", ex.Path)
		}
		return fmt.Errorf("add %s: %w", ex.Name, err)
	}
	v := &volume{name: ex.Name, store: store, metrics: vm, ex: ex}
	if v.unit, err = newLogicalUnit(ex.IQN, ex.Name, ex.LUN, store, size, e.resv, e.log.With("volume", ex.Name)); err != nil {
		store.f.Close()
		return fmt.Errorf("add %s: %w", ex.Name, err)
	}
	e.volumes[ex.Name] = v
	e.byIQN[ex.IQN] = v
	e.log.Info("volume exported", "volume", ex.Name, "iqn", ex.IQN, "size", size)
	return nil
}

// Update applies a changed export: the backing file's new size, the
// allow-list and CHAP. Sessions of initiators no longer allowed are closed;
// the others carry on. Name, IQN, LUN and Path cannot change.
func (e *Engine) Update(ex Export) error {
	if err := validate(ex); err != nil {
		return fmt.Errorf("update %s: %w", ex.Name, err)
	}
	ex = cloneExport(ex)
	e.mu.Lock()
	v, ok := e.volumes[ex.Name]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("update %s: not exported", ex.Name)
	}
	old := v.export()
	if old.IQN != ex.IQN || old.Path != ex.Path || old.LUN != ex.LUN {
		return fmt.Errorf("update %s: target name, lun and path are fixed; remove and add instead", ex.Name)
	}
	size, err := v.store.size()
	if err != nil {
		return fmt.Errorf("update %s: %w", ex.Name, err)
	}
	if size != v.unit.size() {
		v.unit.resize(size)
		e.log.Info("volume resized", "volume", ex.Name, "size", size)
	}
	v.mu.Lock()
	v.ex = ex
	v.mu.Unlock()
	var gone []*session
	e.mu.Lock()
	for s := range e.sessions {
		if s.vol == v && !slices.Contains(ex.Initiators, s.initiator) {
			gone = append(gone, s)
		}
	}
	e.mu.Unlock()
	for _, s := range gone {
		s.close()
		<-s.done
	}
	return nil
}

// Remove stops exporting a volume, closing its sessions first.
func (e *Engine) Remove(name string) error {
	e.mu.Lock()
	v, ok := e.volumes[name]
	if !ok {
		e.mu.Unlock()
		return fmt.Errorf("remove %s: not exported", name)
	}
	delete(e.volumes, name)
	delete(e.byIQN, v.export().IQN)
	var gone []*session
	for s := range e.sessions {
		if s.vol == v {
			gone = append(gone, s)
		}
	}
	e.mu.Unlock()
	for _, s := range gone {
		s.close()
		<-s.done
	}
	v.unit.close()
	e.metrics.dropVolume(name)
	if err := v.store.close(); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	e.log.Info("volume removed", "volume", name)
	return nil
}

// Sessions lists the logged-in normal sessions, oldest first.
func (e *Engine) Sessions() []Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Session, 0, len(e.sessions))
	for s := range e.sessions {
		if s.vol == nil {
			continue
		}
		out = append(out, Session{Volume: s.vol.name, TargetIQN: s.targetIQN, Initiator: s.initiator, RemoteAddr: s.remote, Since: s.since})
	}
	slices.SortFunc(out, func(a, b Session) int { return a.Since.Compare(b.Since) })
	return out
}

// Close stops listening, closes every session and flushes and closes every
// backing file. It is safe to call more than once.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	sessions := make([]*session, 0, len(e.sessions))
	for s := range e.sessions {
		sessions = append(sessions, s)
	}
	e.mu.Unlock()
	err := e.ln.Close()
	for _, s := range sessions {
		s.close()
	}
	e.wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, v := range e.volumes {
		v.unit.close()
		if cerr := v.store.close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", name, cerr)
		}
		delete(e.volumes, name)
	}
	clear(e.byIQN)
	return err
}

func (e *Engine) accept() {
	defer e.wg.Done()
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Warn("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		e.mu.Lock()
		closed := e.closed
		if !closed {
			e.wg.Add(1)
		}
		e.mu.Unlock()
		if closed {
			nc.Close()
			return
		}
		go e.serve(nc)
	}
}

// serve runs one TCP connection: login, then the full feature phase. A panic
// anywhere in it closes this connection only.
func (e *Engine) serve(nc net.Conn) {
	defer e.wg.Done()
	defer nc.Close()
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("iscsi connection panicked", "remote", nc.RemoteAddr().String(), "panic", r)
		}
	}()
	nc.SetDeadline(time.Now().Add(loginTimeout))
	cr := &connReader{nc: nc}
	br := bufio.NewReaderSize(cr, 64<<10)
	l := &login{e: e, nc: nc, br: br}
	s, err := l.run()
	if err != nil {
		e.log.Info("iscsi login refused", "remote", nc.RemoteAddr().String(), "initiator", l.initiator, "target", l.targetName, "reason", err)
		return
	}
	nc.SetDeadline(time.Time{})
	if !e.register(s) {
		return
	}
	defer e.unregister(s)
	cr.beforeRead = s.flush
	s.run()
}

// connReader is the connection as the PDU reader sees it: in the full
// feature phase, beforeRead writes out the responses queued by commands that
// ran on the reader goroutine before the reader goes to the socket, where it
// may wait. So a burst of small commands is answered with one write, and no
// response waits while the reader does.
type connReader struct {
	nc         net.Conn
	beforeRead func()
}

func (c *connReader) Read(p []byte) (int, error) {
	if c.beforeRead != nil {
		c.beforeRead()
	}
	return c.nc.Read(p)
}

// lookup finds the volume exported under an IQN.
func (e *Engine) lookup(iqn string) *volume {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byIQN[iqn]
}

// visibleTargets lists the targets an initiator may log in to (SendTargets).
func (e *Engine) visibleTargets(initiator string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for iqn, v := range e.byIQN {
		if slices.Contains(v.export().Initiators, initiator) {
			out = append(out, iqn)
		}
	}
	slices.Sort(out)
	return out
}

func (e *Engine) allocTSIH() uint16 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextTSIH++
	if e.nextTSIH == 0 {
		e.nextTSIH = 1
	}
	return e.nextTSIH
}

// register adds a logged-in session. A new session with the same initiator
// port (initiator name and ISID) on the same target replaces the old one, as
// session reinstatement requires.
func (e *Engine) register(s *session) bool {
	e.mu.Lock()
	if e.closed || (s.vol != nil && e.volumes[s.vol.name] != s.vol) {
		e.mu.Unlock()
		return false
	}
	var old []*session
	for o := range e.sessions {
		if o.vol != nil && o.vol == s.vol && o.initiator == s.initiator && o.isid == s.isid {
			old = append(old, o)
		}
	}
	e.sessions[s] = struct{}{}
	e.mu.Unlock()
	for _, o := range old {
		o.close()
		<-o.done
	}
	if s.vol != nil {
		s.vol.metrics.sessions.Inc()
		e.log.Info("iscsi session started", "volume", s.vol.name, "initiator", s.initiator, "remote", s.remote)
	}
	return true
}

func (e *Engine) unregister(s *session) {
	e.mu.Lock()
	delete(e.sessions, s)
	e.mu.Unlock()
	if s.vol != nil {
		s.vol.metrics.sessions.Dec()
		e.log.Info("iscsi session ended", "volume", s.vol.name, "initiator", s.initiator, "remote", s.remote)
	}
}
