package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/iscsi"
	"github.com/drover/terraform-provider-drover/target/schedule"
	"github.com/drover/terraform-provider-drover/target/store"
)

// Defaults of the listen addresses.
const (
	DefaultISCSIListen = ":3260"
	DefaultAPIListen   = "127.0.0.1:3261"
)

// Exporter is the iSCSI engine as the server drives it: the API's needs
// plus shutdown.
type Exporter interface {
	api.Exporter
	api.Fencer
	Close() error
}

// EngineConfig is what an iSCSI engine is started with.
type EngineConfig struct {
	Listen     string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Logins     LoginLimits
	// Reservations keeps the volumes' persistent reservations (the store),
	// so that they survive a restart.
	Reservations iscsi.ReservationStore
	// WriteGuards gives each volume's writes the store's copy-before-write
	// guard, so that snapshots on filesystems without reflinks are instant.
	WriteGuards iscsi.WriteGuards
}

// LoginLimits bound the connections that have not finished logging in
// (see iscsi.Config); each zero means the engine's default.
type LoginLimits struct {
	Timeout           time.Duration // to finish logging in
	MaxPending        int           // in all; the oldest makes room
	MaxPendingPerAddr int           // from one source address; more are refused
}

// Config configures a Server.
type Config struct {
	DataDir     string
	ISCSIListen string // default DefaultISCSIListen
	APIListen   string // default DefaultAPIListen
	Token       string // bearer token of the API; required
	TLSCert     string // both or neither: serve the API over HTTPS
	TLSKey      string
	IQNPrefix   string // default api.DefaultIQNPrefix
	NoReflink   bool   // always copy for snapshots and clones
	// MaxHold bounds how long writes are held to cut a snapshot or a
	// snapshot set; default api.DefaultMaxHold.
	MaxHold time.Duration
	// Logins bounds the connections that have not logged in yet.
	Logins LoginLimits
	// Restic is the restic command that backup schedules with a restic
	// block run; default "restic" from PATH.
	Restic string
	// Now and After are the clock of the backup schedules (time.Now and
	// time.After when nil); tests pass a fake one.
	Now    func() time.Time
	After  func(time.Duration) <-chan time.Time
	Logger *slog.Logger
	// NewEngine starts the iSCSI engine; nil starts the real one
	// (package target/iscsi). Tests pass an in-memory engine.
	NewEngine func(EngineConfig) (Exporter, error)
}

// Validate reports the first problem of cfg, in words an admin can act on.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("no data directory: pass --data-dir DIR")
	case strings.TrimSpace(c.Token) == "":
		return errors.New("no API token: pass --token-file with a file holding a random token (e.g. `openssl rand -hex 32 > token`); the daemon does not run an open API")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("TLS needs both --tls-cert and --tls-key")
	case c.Logins.Timeout < 0:
		return fmt.Errorf("--login-timeout %s: give a positive duration", c.Logins.Timeout)
	case c.Logins.MaxPending < 0 || c.Logins.MaxPendingPerAddr < 0:
		return errors.New("--max-pending-logins and --max-pending-logins-per-addr must be positive")
	}
	if c.IQNPrefix != "" {
		if err := api.CheckIQNPrefix(c.IQNPrefix); err != nil {
			return err
		}
	}
	for _, a := range []struct{ flag, addr string }{{"--iscsi-listen", c.ISCSIListen}, {"--api-listen", c.APIListen}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: want host:port, e.g. 127.0.0.1:3261 or :3260", a.flag, a.addr)
		}
	}
	return nil
}

// ReadTokenFile reads a bearer token: the file's content without
// surrounding whitespace, refused when empty.
func ReadTokenFile(path string) (string, error) {
	if path == "" {
		return "", errors.New("no token file: pass --token-file FILE")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty: put a random token in it (e.g. `openssl rand -hex 32 > %s`)", path, path)
	}
	return tok, nil
}

// Server is a running drover-target.
type Server struct {
	log      *slog.Logger
	store    *store.Store
	engine   Exporter
	api      *api.API
	registry *prometheus.Registry
	http     *http.Server
	ln       net.Listener
	tls      bool
	serveErr chan error
	// stopSchedules ends the scheduler's loop; schedulesDone is closed
	// once it and its runs are over.
	stopSchedules context.CancelFunc
	schedulesDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start opens the store, starts the iSCSI engine, exports every volume
// again and starts serving the API. On error, whatever was started is
// stopped again.
func Start(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ISCSIListen == "" {
		cfg.ISCSIListen = DefaultISCSIListen
	}
	if cfg.APIListen == "" {
		cfg.APIListen = DefaultAPIListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NewEngine == nil {
		cfg.NewEngine = newISCSIEngine
	}
	s := &Server{log: cfg.Logger, registry: prometheus.NewRegistry(), serveErr: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	s.store, err = store.Open(cfg.DataDir, store.Options{Logger: cfg.Logger.With("component", "store"), NoReflink: cfg.NoReflink, CopyBeforeWrite: true})
	if err != nil {
		return nil, err
	}
	s.engine, err = cfg.NewEngine(EngineConfig{Listen: cfg.ISCSIListen, Logger: cfg.Logger, Registerer: s.registry, Logins: cfg.Logins, Reservations: s.store, WriteGuards: s.store})
	if err != nil {
		return nil, fmt.Errorf("start iSCSI engine on %s: %w", cfg.ISCSIListen, err)
	}
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	metrics := promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)})
	s.api, err = api.New(api.Config{
		Store:     s.store,
		Exporter:  s.engine,
		Token:     cfg.Token,
		IQNPrefix: cfg.IQNPrefix,
		MaxHold:   cfg.MaxHold,
		Logger:    cfg.Logger.With("component", "api"),
		Metrics:   metrics,
		Schedules: schedule.Options{Logger: cfg.Logger.With("component", "schedules"), Registerer: s.registry, Now: cfg.Now, After: cfg.After},
		Restic:    cfg.Restic,
	})
	if err != nil {
		return nil, err
	}
	// Fences before the exports, so that no fenced initiator logs in to a
	// volume as it comes back, and after, so that its registrations go
	// from every volume (see api.ApplyFences).
	if err := s.applyFences(); err != nil {
		return nil, err
	}
	if err := s.api.ExportAll(); err != nil {
		// One broken volume must not keep the others offline.
		s.log.Error("some volumes could not be exported", "err", err)
	}
	if err := s.applyFences(); err != nil {
		return nil, err
	}

	s.ln, err = net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.APIListen, err)
	}
	s.http = &http.Server{
		Handler:           promhttp.InstrumentHandlerCounter(s.requests(), s.api),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		s.http.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.tls = true
	}
	ln := s.ln
	go func() {
		var err error
		if s.tls {
			err = s.http.ServeTLS(ln, "", "")
		} else {
			err = s.http.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.serveErr <- fmt.Errorf("serve API: %w", err)
		}
		close(s.serveErr)
	}()
	s.startSchedules()
	vols, _ := s.store.List()
	s.log.Info("drover-target started", "data_dir", s.store.Dir(), "api", s.APIURL(), "iscsi", cfg.ISCSIListen, "volumes", len(vols))
	return s, nil
}

// startSchedules runs the backup schedules in the background until Close.
func (s *Server) startSchedules() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopSchedules, s.schedulesDone = cancel, make(chan struct{})
	go func() {
		defer close(s.schedulesDone)
		if err := s.api.RunSchedules(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("backup schedules stopped", "err", err)
		}
	}()
}

// applyFences enforces the fences kept in the store. At start no session
// is there to wait for, so the bound is only a safety net.
func (s *Server) applyFences() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.api.ApplyFences(ctx); err != nil {
		return fmt.Errorf("apply the fences kept in the store: %w", err)
	}
	return nil
}

func (s *Server) requests() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "drover", Subsystem: "target", Name: "api_requests_total",
		Help: "Management API requests by method and status code.",
	}, []string{"method", "code"})
	s.registry.MustRegister(c)
	return c
}

func (s *Server) registerMetrics() error {
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "drover", Subsystem: "target", Name: "sessions",
			Help: "iSCSI sessions logged in, all volumes together.",
		}, func() float64 { return float64(len(s.engine.Sessions())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "drover", Subsystem: "target", Name: "volumes",
			Help: "Volumes in the store.",
		}, func() float64 {
			v, _ := s.store.List()
			return float64(len(v))
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "drover", Subsystem: "target", Name: "data_free_bytes",
			Help: "Bytes available on the data directory's filesystem.",
		}, func() float64 {
			f, _ := s.store.Free()
			return float64(f)
		}),
	}
	for _, c := range cs {
		if err := s.registry.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// APIURL is the base URL the API answers on.
func (s *Server) APIURL() string {
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	return scheme + "://" + s.ln.Addr().String()
}

// Store returns the server's volume store.
func (s *Server) Store() *store.Store { return s.store }

// Err delivers an error if the API stops serving on its own, and is
// closed when it stops.
func (s *Server) Err() <-chan error { return s.serveErr }

// Close stops the API (letting requests in flight finish for a few
// seconds), closes every iSCSI session and the engine, then the store. It
// is safe to call more than once and on a half-started server.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.http.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("stop API: %w", err))
				s.http.Close()
			}
			cancel()
		} else if s.ln != nil {
			s.ln.Close()
		}
		if s.stopSchedules != nil { // runs under way are cut short while the engine still holds writes
			s.stopSchedules()
			<-s.schedulesDone
		}
		if s.engine != nil {
			if err := s.engine.Close(); err != nil {
				errs = append(errs, fmt.Errorf("stop iSCSI engine: %w", err))
			}
		}
		if s.store != nil {
			if err := s.store.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("flush volumes: %w", err))
			}
			if err := s.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
		s.log.Info("drover-target stopped")
	})
	return s.closeErr
}

// Run starts a server and serves until ctx is done (SIGINT/SIGTERM in
// main), then shuts it down.
func Run(ctx context.Context, cfg Config) error {
	s, err := Start(cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		s.log.Info("shutting down", "reason", context.Cause(ctx))
	case err := <-s.Err():
		if err != nil {
			s.Close()
			return err
		}
	}
	return s.Close()
}
