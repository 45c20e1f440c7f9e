package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/server"
)

func TestServeTakesLoginLimitsFromTheFlagsOrTheConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("serve-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	defaults := server.LoginLimits{Timeout: server.DefaultLoginTimeout, MaxPending: server.DefaultMaxPendingLogins, MaxPendingPerAddr: server.DefaultMaxPendingLoginsPerAddr}
	for _, tc := range []struct {
		name    string
		args    []string
		file    string // the config file's JSON; "" for no file
		want    server.LoginLimits
		wantErr string
	}{
		{name: "no flags are the defaults", want: defaults},
		{name: "the flags", args: []string{"--login-timeout", "3s", "--max-pending-logins", "10", "--max-pending-logins-per-addr", "2"},
			want: server.LoginLimits{Timeout: 3 * time.Second, MaxPending: 10, MaxPendingPerAddr: 2}},
		{name: "the config file", file: `{"login_timeout":"20s","max_pending_logins":50,"max_pending_logins_per_addr":5}`,
			want: server.LoginLimits{Timeout: 20 * time.Second, MaxPending: 50, MaxPendingPerAddr: 5}},
		{name: "the flags win over the config file", args: []string{"--max-pending-logins", "40"}, file: `{"max_pending_logins":50}`,
			want: server.LoginLimits{Timeout: defaults.Timeout, MaxPending: 40, MaxPendingPerAddr: defaults.MaxPendingPerAddr}},
		{name: "a timeout under 1s is refused", args: []string{"--login-timeout", "500ms"}, wantErr: "--login-timeout 500ms: give 1s to 5m0s"},
		{name: "a timeout without a unit is refused", args: []string{"--login-timeout", "10"}, wantErr: `--login-timeout "10": give a duration`},
		{name: "no pending logins at all is refused", args: []string{"--max-pending-logins", "0"}, wantErr: "--max-pending-logins 0: give at least 1"},
		{name: "more per address than in all is refused", args: []string{"--max-pending-logins", "4", "--max-pending-logins-per-addr", "5"}, wantErr: "--max-pending-logins-per-addr 5: give 1 to --max-pending-logins (4)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--data-dir", dir, "--token-file", tokenFile}, tc.args...)
			if tc.file != "" {
				config := filepath.Join(t.TempDir(), "drover-target.json")
				if err := os.WriteFile(config, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", config)
			}
			cfg, err := serveConfig(args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("serve %s: error %v, want one containing %q", strings.Join(args, " "), err, tc.wantErr)
				}
				return
			}
			if err != nil || cfg.Logins != tc.want {
				t.Errorf("serve %s: Logins %+v, error %v; want %+v", strings.Join(args, " "), cfg.Logins, err, tc.want)
			}
		})
	}
}
