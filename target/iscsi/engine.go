package iscsi

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// Export describes one volume to serve as its own iSCSI target.
type Export struct {
	Name       string     // volume name, [a-z0-9-]{1,63}
	IQN        string     // target name, e.g. iqn.2026-11.io.drover:vol1
	LUN        uint64     // must be 0: each target has exactly one logical unit, LUN 0
	Path       string     // backing sparse raw file
	Initiators []string   // allowed initiator IQNs; empty means nobody may log in
	CHAP       *wire.CHAP // nil: no CHAP; set: CHAP required (User, Secret); MutualUser, MutualSecret: what the target answers with when the initiator asks it to authenticate itself
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
	// WriteGuards, when set, gives each volume the guard every change to
	// its data passes first (the store's copy-before-write snapshots).
	WriteGuards WriteGuards

	// Bounds on connections that have not finished logging in; each zero
	// means its default. A connection gets LoginTimeout to log in. At
	// MaxPendingLogins, the oldest pending one is closed to make room (so a
	// flood cannot lock out an initiator that logs in promptly); a source
	// address at MaxPendingLoginsPerAddr has its new connections refused.
	LoginTimeout            time.Duration
	MaxPendingLogins        int
	MaxPendingLoginsPerAddr int
}

// Defaults of the pending-login bounds. A real login takes milliseconds;
// one host logs in once per volume it opens, a few at a time.
const (
	DefaultLoginTimeout            = 10 * time.Second
	DefaultMaxPendingLogins        = 128
	DefaultMaxPendingLoginsPerAddr = 16
)

// Engine serves a set of volumes over iSCSI on one listening address.
type Engine struct {
	log     *slog.Logger
	resv    ReservationStore // Config.Reservations
	guards  WriteGuards      // Config.WriteGuards
	ln      net.Listener
	metrics *metrics
	wg      sync.WaitGroup // accept loop and connections

	loginTimeout               time.Duration
	maxPending, maxPendingAddr int

	// mu guards everything below.
	mu       sync.Mutex
	volumes  map[string]*volume // by name
	byIQN    map[string]*volume
	sessions map[*session]struct{}
	pending  map[*pendingLogin]struct{} // connections not logged in yet
	perAddr  map[string]int             // len(pending) by source address
	nextTSIH uint16
	closed   bool
	fenced   map[string]bool // initiator names shut out (fence.go); nil until the first Fence
}

// pendingLogin is a connection that has not finished logging in.
type pendingLogin struct {
	nc    net.Conn
	addr  string // source IP
	since time.Time
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
	switch {
	case cfg.LoginTimeout < 0:
		return nil, fmt.Errorf("iscsi: login timeout %s: give a positive duration, or 0 for the default %s", cfg.LoginTimeout, DefaultLoginTimeout)
	case cfg.MaxPendingLogins < 0 || cfg.MaxPendingLoginsPerAddr < 0:
		return nil, errors.New("iscsi: pending login bounds must be positive, or 0 for the defaults")
	}
	loginTimeout := cmp.Or(cfg.LoginTimeout, DefaultLoginTimeout)
	maxPending := cmp.Or(cfg.MaxPendingLogins, DefaultMaxPendingLogins)
	maxPendingAddr := min(cmp.Or(cfg.MaxPendingLoginsPerAddr, DefaultMaxPendingLoginsPerAddr), maxPending)
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
		guards:   cfg.WriteGuards,
		ln:       ln,
		metrics:  m,
		volumes:  map[string]*volume{},
		byIQN:    map[string]*volume{},
		sessions: map[*session]struct{}{},
		pending:  map[*pendingLogin]struct{}{},
		perAddr:  map[string]int{},

		loginTimeout:   loginTimeout,
		maxPending:     maxPending,
		maxPendingAddr: maxPendingAddr,
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
	if e.guards != nil {
		store.guard = e.guards.WriteGuard(ex.Name)
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
	logins := make([]net.Conn, 0, len(e.pending))
	for p := range e.pending {
		logins = append(logins, p.nc)
	}
	e.mu.Unlock()
	err := e.ln.Close()
	for _, s := range sessions {
		s.close()
	}
	for _, nc := range logins { // or Close would wait for their login deadline
		nc.Close()
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
		pl, err := e.admit(nc)
		if errors.Is(err, net.ErrClosed) {
			nc.Close()
			return
		}
		if err != nil {
			e.log.Debug("iscsi connection refused", "remote", nc.RemoteAddr().String(), "reason", err)
			nc.Close()
			continue
		}
		go e.serve(nc, pl)
	}
}

// admit counts a new connection as a pending login, within the bounds (see
// Config): it refuses one from an address at its bound and closes the
// oldest pending login when all slots are taken.
func (e *Engine) admit(nc net.Conn) (*pendingLogin, error) {
	addr := nc.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, net.ErrClosed
	}
	if e.perAddr[addr] >= e.maxPendingAddr {
		e.metrics.countRefused(refusedPendingLoginsPerAddr)
		return nil, fmt.Errorf("%d logins pending from %s", e.perAddr[addr], addr)
	}
	if len(e.pending) >= e.maxPending {
		var oldest *pendingLogin
		for p := range e.pending {
			if oldest == nil || p.since.Before(oldest.since) {
				oldest = p
			}
		}
		e.dropPendingLocked(oldest)
		oldest.nc.Close() // its login fails, and serve cleans up
		e.metrics.countRefused(refusedPendingLogins)
	}
	pl := &pendingLogin{nc: nc, addr: addr, since: time.Now()}
	e.pending[pl] = struct{}{}
	e.perAddr[addr]++
	e.wg.Add(1)
	return pl, nil
}

// loginEnded removes a connection from the pending logins, if it is still
// there (admit may have dropped it already).
func (e *Engine) loginEnded(pl *pendingLogin) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropPendingLocked(pl)
}

func (e *Engine) dropPendingLocked(pl *pendingLogin) {
	if _, ok := e.pending[pl]; !ok {
		return
	}
	delete(e.pending, pl)
	if e.perAddr[pl.addr]--; e.perAddr[pl.addr] == 0 {
		delete(e.perAddr, pl.addr)
	}
}

// serve runs one TCP connection: login, then the full feature phase. A panic
// anywhere in it closes this connection only.
func (e *Engine) serve(nc net.Conn, pl *pendingLogin) {
	defer e.wg.Done()
	defer nc.Close()
	defer e.loginEnded(pl)
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("iscsi connection panicked", "remote", nc.RemoteAddr().String(), "panic", r)
		}
	}()
	nc.SetDeadline(time.Now().Add(e.loginTimeout))
	l := &login{e: e, nc: nc}
	s, err := l.run()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			e.metrics.countRefused(refusedLoginTimeout)
		}
		e.log.Info("iscsi login refused", "remote", nc.RemoteAddr().String(), "initiator", l.initiator, "target", l.targetName, "reason", err)
		return
	}
	nc.SetDeadline(time.Time{})
	e.loginEnded(pl)
	if !e.register(s) {
		return
	}
	defer e.unregister(s)
	cr := &connReader{nc: nc, beforeRead: s.flush}
	s.br = bufio.NewReaderSize(cr, 64<<10)
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
	if e.fenced[s.initiator] { // fenced while it logged in: Fence did not see it
		e.mu.Unlock()
		e.metrics.fencedLogins.Inc()
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
