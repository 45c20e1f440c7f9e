package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/server"
)

// errUsage reports a usage error that has already been printed.
var errUsage = errors.New("usage error")

const usage = `drover-target: the Drover storage box daemon and its admin CLI.

Daemon:
  drover-target serve --data-dir DIR --token-file FILE [--iscsi-listen ADDR] [--api-listen ADDR]
                      [--tls-cert FILE --tls-key FILE] [--iqn-prefix PREFIX] [--config FILE]
                      [--max-hold DURATION] [--log-level debug|info|warn|error]
                      [--login-timeout DURATION] [--max-pending-logins N]
                      [--max-pending-logins-per-addr N] [--restic COMMAND]

Admin (talks to the API; --endpoint, default http://127.0.0.1:3261, the token from
--token-file or $DROVER_STORAGE_TOKEN, and --ca-file for an https API whose certificate
a CA of your own signed):
  drover-target volume ls
  drover-target volume create NAME SIZE_MIB [--initiator IQN]...
  drover-target volume grow NAME SIZE_MIB
  drover-target volume upload NAME IMAGE_FILE [--format raw|qcow2]
  drover-target volume rm NAME [--force]
  drover-target snapshot ls VOLUME
  drover-target snapshot create VOLUME
  drover-target snapshot rm ID
  drover-target snapshot-set ls [--label KEY=VALUE]...
  drover-target snapshot-set label ID KEY=VALUE...
  drover-target snapshot-set rm ID
  drover-target session ls
  drover-target fence ls
  drover-target fence add INITIATOR REASON...
  drover-target fence rm INITIATOR
  drover-target schedule ls
  drover-target schedule rm ID

  drover-target version
`

// run is the whole program; main only adds the signal context and the exit
// code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "volume", "snapshot", "snapshot-set", "session", "fence", "schedule":
		return admin(ctx, args[0], args[1:], getenv, stdout, stderr)
	case "version":
		return printVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
	return errUsage
}

// fileConfig is the --config file: JSON with the flags' names in snake case.
type fileConfig struct {
	DataDir     string `json:"data_dir"`
	ISCSIListen string `json:"iscsi_listen"`
	APIListen   string `json:"api_listen"`
	TokenFile   string `json:"token_file"`
	TLSCert     string `json:"tls_cert"`
	TLSKey      string `json:"tls_key"`
	IQNPrefix   string `json:"iqn_prefix"`
	MaxHold     string `json:"max_hold"` // a Go duration, e.g. "30s"
	LogLevel    string `json:"log_level"`
	Restic      string `json:"restic"`

	LoginTimeout            string `json:"login_timeout"` // a Go duration
	MaxPendingLogins        int    `json:"max_pending_logins"`
	MaxPendingLoginsPerAddr int    `json:"max_pending_logins_per_addr"`
}

// Bounds of --max-hold. Below the floor, writes already running cannot be
// counted on to drain in time; above the ceiling, the guests' writes would
// stall for longer than any backup is worth.
const (
	maxHoldFloor   = 100 * time.Millisecond
	maxHoldCeiling = 10 * time.Minute
)

// Bounds of --login-timeout: a login over a slow link takes well under a
// second; a connection that has not logged in holds a slot until then.
const (
	loginTimeoutFloor   = time.Second
	loginTimeoutCeiling = 5 * time.Minute
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := serveConfig(args, stderr)
	if err != nil {
		return err
	}
	return server.Run(ctx, cfg)
}

// serveConfig turns serve's flags and config file into the server's
// configuration, with a logger on stderr.
func serveConfig(args []string, stderr io.Writer) (server.Config, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c fileConfig
	var configFile string
	fs.StringVar(&c.DataDir, "data-dir", "", "directory of the volumes and their metadata (required)")
	fs.StringVar(&c.ISCSIListen, "iscsi-listen", server.DefaultISCSIListen, "iSCSI portal address")
	fs.StringVar(&c.APIListen, "api-listen", server.DefaultAPIListen, "management API address")
	fs.StringVar(&c.TokenFile, "token-file", "", "file holding the API's bearer token (required)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve the API over HTTPS with this certificate")
	fs.StringVar(&c.TLSKey, "tls-key", "", "private key of --tls-cert")
	fs.StringVar(&c.IQNPrefix, "iqn-prefix", "", "prefix of the volumes' IQNs (default iqn.2026-11.io.drover:)")
	fs.StringVar(&c.MaxHold, "max-hold", api.DefaultMaxHold.String(), "longest time writes are held to cut a snapshot or snapshot set, draining included (100ms to 10m)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LoginTimeout, "login-timeout", server.DefaultLoginTimeout.String(), "time an iSCSI connection has to finish logging in (1s to 5m)")
	fs.IntVar(&c.MaxPendingLogins, "max-pending-logins", server.DefaultMaxPendingLogins, "iSCSI connections that may be logging in at once; past it the oldest is closed")
	fs.IntVar(&c.MaxPendingLoginsPerAddr, "max-pending-logins-per-addr", server.DefaultMaxPendingLoginsPerAddr, "iSCSI connections one address may have logging in at once; past it new ones are refused")
	fs.StringVar(&c.Restic, "restic", "restic", "the restic command that backup schedules with a restic block run")
	fs.StringVar(&configFile, "config", "", "JSON file with the same settings (data_dir, iscsi_listen, ...); flags win")
	if err := fs.Parse(args); err != nil {
		return server.Config{}, errUsage
	}
	if fs.NArg() > 0 {
		return server.Config{}, fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	if configFile != "" {
		if err := applyConfigFile(fs, configFile, &c); err != nil {
			return server.Config{}, err
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return server.Config{}, fmt.Errorf("--log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	maxHold, err := parseMaxHold(c.MaxHold)
	if err != nil {
		return server.Config{}, err
	}
	logins, err := parseLoginLimits(c)
	if err != nil {
		return server.Config{}, err
	}
	token, err := server.ReadTokenFile(c.TokenFile)
	if err != nil {
		return server.Config{}, err
	}
	return server.Config{
		DataDir:     c.DataDir,
		ISCSIListen: c.ISCSIListen,
		APIListen:   c.APIListen,
		Token:       token,
		TLSCert:     c.TLSCert,
		TLSKey:      c.TLSKey,
		IQNPrefix:   c.IQNPrefix,
		MaxHold:     maxHold,
		Logins:      logins,
		Restic:      c.Restic,
		Logger:      slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}, nil
}

// parseMaxHold reads --max-hold (or max_hold in the config file).
func parseMaxHold(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, fmt.Errorf("--max-hold %q: give a duration such as 10s, 30s or 2m", s)
	case d < maxHoldFloor:
		return 0, fmt.Errorf("--max-hold %s is too short: writes already running need time to drain; give at least %s", s, maxHoldFloor)
	case d > maxHoldCeiling:
		return 0, fmt.Errorf("--max-hold %s is too long: guests' writes wait that long during a snapshot; give at most %s", s, maxHoldCeiling)
	}
	return d, nil
}

// parseLoginLimits reads --login-timeout and the pending-login bounds.
func parseLoginLimits(c fileConfig) (server.LoginLimits, error) {
	d, err := time.ParseDuration(c.LoginTimeout)
	switch {
	case err != nil:
		return server.LoginLimits{}, fmt.Errorf("--login-timeout %q: give a duration such as 10s or 30s", c.LoginTimeout)
	case d < loginTimeoutFloor || d > loginTimeoutCeiling:
		return server.LoginLimits{}, fmt.Errorf("--login-timeout %s: give %s to %s", c.LoginTimeout, loginTimeoutFloor, loginTimeoutCeiling)
	case c.MaxPendingLogins < 1:
		return server.LoginLimits{}, fmt.Errorf("--max-pending-logins %d: give at least 1", c.MaxPendingLogins)
	case c.MaxPendingLoginsPerAddr < 1 || c.MaxPendingLoginsPerAddr > c.MaxPendingLogins:
		return server.LoginLimits{}, fmt.Errorf("--max-pending-logins-per-addr %d: give 1 to --max-pending-logins (%d)", c.MaxPendingLoginsPerAddr, c.MaxPendingLogins)
	}
	return server.LoginLimits{Timeout: d, MaxPending: c.MaxPendingLogins, MaxPendingPerAddr: c.MaxPendingLoginsPerAddr}, nil
}

// applyConfigFile fills the settings not given as flags from a JSON file.
func applyConfigFile(fs *flag.FlagSet, path string, c *fileConfig) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	var fc fileConfig
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range []struct {
		flag     string
		dst      *string
		fromFile string
	}{
		{"data-dir", &c.DataDir, fc.DataDir},
		{"iscsi-listen", &c.ISCSIListen, fc.ISCSIListen},
		{"api-listen", &c.APIListen, fc.APIListen},
		{"token-file", &c.TokenFile, fc.TokenFile},
		{"tls-cert", &c.TLSCert, fc.TLSCert},
		{"tls-key", &c.TLSKey, fc.TLSKey},
		{"iqn-prefix", &c.IQNPrefix, fc.IQNPrefix},
		{"max-hold", &c.MaxHold, fc.MaxHold},
		{"log-level", &c.LogLevel, fc.LogLevel},
		{"login-timeout", &c.LoginTimeout, fc.LoginTimeout},
	} {
		if !set[s.flag] && s.fromFile != "" {
			*s.dst = s.fromFile
		}
	}
	for _, s := range []struct {
		flag     string
		dst      *int
		fromFile int
	}{
		{"max-pending-logins", &c.MaxPendingLogins, fc.MaxPendingLogins},
		{"max-pending-logins-per-addr", &c.MaxPendingLoginsPerAddr, fc.MaxPendingLoginsPerAddr},
	} {
		if !set[s.flag] && s.fromFile != 0 {
			*s.dst = s.fromFile
		}
	}
	return nil
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
