package provider

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

func TestProviderConfigValidation(t *testing.T) {
	t.Parallel()
	hosts := func(h ...any) obj { return obj{"host": h} }
	alpha := func(settings obj) obj {
		host := obj{"name": "alpha", "uri": "qemu+ssh://root@alpha/system"}
		for k, v := range settings {
			host[k] = v
		}
		return hosts(host)
	}
	withStorage := func(s obj) obj {
		cfg := alpha(nil)
		cfg["storage"] = s
		return cfg
	}
	withPlacement := func(p obj) obj {
		cfg := alpha(nil)
		cfg["placement"] = p
		return cfg
	}
	at := func(steps ...any) *tftypes.AttributePath {
		p := tftypes.NewAttributePath()
		for _, s := range steps {
			switch s := s.(type) {
			case string:
				p = p.WithAttributeName(s)
			case int:
				p = p.WithElementKeyInt(s)
			}
		}
		return p
	}
	alphaAt := func(attr string) *tftypes.AttributePath { return at("host", 0, attr) }
	named := func(name string) obj { return obj{"name": name, "uri": "qemu:///system"} }

	tests := []struct {
		name     string
		config   obj
		wantPath *tftypes.AttributePath // nil: the configuration is valid
		wantText string                 // the bad value, as the error must quote it
	}{
		{name: "a host with only a name and a URI is valid", config: alpha(nil)},
		{name: "a host with every setting is valid", config: alpha(obj{
			"maintenance": true, "failed": false, "migration_address": "10.0.0.2", "reserved_memory_mib": 1024,
			"cpu_overcommit": 2.5, "memory_overcommit": 1.2, "domain_type": "qemu",
		})},
		{name: "local, tcp and test URIs are valid", config: hosts(
			obj{"name": "a", "uri": "qemu:///system"}, obj{"name": "b", "uri": "qemu+tcp://127.0.0.2/system"},
			obj{"name": "c", "uri": "test:///default"}, obj{"name": "d-2", "uri": "qemu+ssh://root@d:2222/system?keyfile=/k"},
		)},
		{name: "a full storage block is valid", config: withStorage(obj{
			"endpoint": "https://storage.lan:3261", "token": "secret", "portal": "storage.lan:3260",
			"ca_file": "/etc/drover/storage-ca.pem",
		})},
		{name: "reserving no memory is valid", config: alpha(obj{"reserved_memory_mib": 0})},
		{name: "host names, IPv4 and IPv6 migration addresses are valid", config: hosts(
			obj{"name": "a", "uri": "qemu:///system", "migration_address": "alpha.lan"},
			obj{"name": "b", "uri": "qemu:///system", "migration_address": "10.0.0.2"},
			obj{"name": "c", "uri": "qemu:///system", "migration_address": "fd00::2"},
		)},
		{name: "pack with 4 moves per host, strictly spread, is valid", config: withPlacement(obj{
			"strategy": "pack", "migrations_per_host": 4, "strict_spread": true})},
		{name: "an unknown strategy is refused", config: withPlacement(obj{"strategy": "fill"}),
			wantPath: at("placement", "strategy"), wantText: `"fill"`},
		{name: "no moves per host is refused", config: withPlacement(obj{"migrations_per_host": 0}),
			wantPath: at("placement", "migrations_per_host"), wantText: "between 1 and 16"},

		{name: "a provider block without a host block is refused", config: hosts(),
			wantPath: at("host"), wantText: "at least one host block"},
		{name: "two host blocks of one name are refused, naming it", config: hosts(named("alpha"), named("beta"), named("alpha")),
			wantPath: at("host", 2, "name"), wantText: `both named "alpha"`},
		{name: "a host name with capitals is refused", config: hosts(named("Alpha")),
			wantPath: at("host", 0, "name"), wantText: "Alpha"},
		{name: "a host name with an underscore is refused", config: hosts(named("al_pha")),
			wantPath: at("host", 0, "name"), wantText: "al_pha"},
		{name: "an empty host name is refused", config: hosts(named("")),
			wantPath: at("host", 0, "name"), wantText: "lowercase letters"},
		{name: "a migration address with a port is refused", config: alpha(obj{"migration_address": "10.0.0.2:49152"}),
			wantPath: alphaAt("migration_address"), wantText: `"10.0.0.2:49152"`},
		{name: "a migration address with a scheme is refused", config: alpha(obj{"migration_address": "tcp://10.0.0.2"}),
			wantPath: alphaAt("migration_address"), wantText: `"tcp://10.0.0.2"`},
		{name: "an empty URI is refused", config: alpha(obj{"uri": ""}),
			wantPath: alphaAt("uri"), wantText: "it is empty"},
		{name: "a URI without a scheme is refused", config: alpha(obj{"uri": "alpha"}),
			wantPath: alphaAt("uri"), wantText: `"alpha"`},
		{name: "a URI with a space in its host is refused", config: alpha(obj{"uri": "qemu+ssh://root@al pha/system"}),
			wantPath: alphaAt("uri"), wantText: `"qemu+ssh://root@al pha/system"`},
		{name: "a URI with a malformed scheme is refused", config: alpha(obj{"uri": "qemu+ssh+tls://alpha/system"}),
			wantPath: alphaAt("uri"), wantText: `"qemu+ssh+tls"`},
		{name: "a URI without // after its scheme is refused", config: alpha(obj{"uri": "qemu:system"}),
			wantPath: alphaAt("uri"), wantText: `"qemu:system"`},
		{name: "negative reserved memory is refused", config: alpha(obj{"reserved_memory_mib": -1}),
			wantPath: alphaAt("reserved_memory_mib"), wantText: "-1"},
		{name: "cpu overcommit below 1 is refused", config: alpha(obj{"cpu_overcommit": 0.5}),
			wantPath: alphaAt("cpu_overcommit"), wantText: "0.5"},
		{name: "memory overcommit below 1 is refused", config: alpha(obj{"memory_overcommit": 0.9}),
			wantPath: alphaAt("memory_overcommit"), wantText: "0.9"},
		{name: "an unknown domain type is refused", config: alpha(obj{"domain_type": "xen"}),
			wantPath: alphaAt("domain_type"), wantText: `"xen"`},
		{name: "a storage endpoint that is not an http URL is refused", config: withStorage(obj{
			"endpoint": "ftp://storage.lan", "portal": "storage.lan:3260",
		}), wantPath: at("storage", "endpoint"), wantText: `"ftp://storage.lan"`},
		{name: "a storage portal without a port is refused", config: withStorage(obj{
			"endpoint": "https://storage.lan:3261", "portal": "storage.lan",
		}), wantPath: at("storage", "portal"), wantText: `"storage.lan"`},
		{name: "a storage block without an endpoint is refused", config: withStorage(obj{
			"token": "secret", "portal": "storage.lan:3260",
		}), wantPath: at("storage"), wantText: `"storage.endpoint" must be specified`},
	}
	server := protocolServer(t, nil)
	schema := schemas(t, server).Provider
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := server.ValidateProviderConfig(context.Background(), &tfprotov6.ValidateProviderConfigRequest{
				Config: dynamicValue(t, schema, tt.config),
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantPath == nil {
				if len(resp.Diagnostics) > 0 {
					t.Fatalf("got diagnostics for a valid configuration:%s", diagnosticsString(resp.Diagnostics))
				}
				return
			}
			if len(resp.Diagnostics) != 1 {
				t.Fatalf("got %d diagnostics, want one error at %s:%s",
					len(resp.Diagnostics), tt.wantPath, diagnosticsString(resp.Diagnostics))
			}
			d := resp.Diagnostics[0]
			if d.Severity != tfprotov6.DiagnosticSeverityError {
				t.Errorf("got a %s, want an error", severity(d))
			}
			if !d.Attribute.Equal(tt.wantPath) {
				t.Errorf("error is at %s, want %s", d.Attribute, tt.wantPath)
			}
			if !strings.Contains(d.Detail, tt.wantText) {
				t.Errorf("error %q does not name the bad value %s", d.Detail, tt.wantText)
			}
		})
	}
}

func TestConfigureGivesTheStorageClientItsCAFile(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "storage-ca.pem")
	server := protocolServer(t, nil)
	resp, err := server.ConfigureProvider(context.Background(), &tfprotov6.ConfigureProviderRequest{
		Config: dynamicValue(t, schemas(t, server).Provider, obj{
			"host": []any{obj{"name": "alpha", "uri": "test:///default"}},
			"storage": obj{"endpoint": "https://127.0.0.1:3261", "token": "t", "portal": "127.0.0.1:3260",
				"ca_file": missing},
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Diagnostics) != 1 || !strings.Contains(resp.Diagnostics[0].Detail, missing) {
		t.Fatalf("got%s\nwant one error naming the CA file %s", diagnosticsString(resp.Diagnostics), missing)
	}
}
