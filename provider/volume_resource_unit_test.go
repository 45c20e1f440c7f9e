package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/drover/terraform-provider-drover/internal/cluster"
	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/apitest"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

func TestVolumeNameProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, volume, want string // want: part of the problem, "" for a good name
	}{
		{name: "letters, digits and dashes are a good name", volume: "web-1-data"},
		{name: "one character is a good name", volume: "a"},
		{name: "63 characters are a good name", volume: strings.Repeat("a", 63)},
		{name: "an empty name is refused", volume: "", want: "empty"},
		{name: "64 characters are refused", volume: strings.Repeat("a", 64), want: "64 characters"},
		{name: "a leading dash is refused", volume: "-data", want: "starts or ends"},
		{name: "a trailing dash is refused", volume: "data-", want: "starts or ends"},
		{name: "an uppercase letter is refused", volume: "Data", want: "'D' at position 1"},
		{name: "an underscore is refused", volume: "my_data", want: "'_' at position 3"},
		{name: "a dot is refused", volume: "data.raw", want: "'.'"},
		{name: "a slash is refused", volume: "a/b", want: "'/'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := volumeNameProblem(tt.volume)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("volumeNameProblem(%q) = %q, want %q", tt.volume, got, tt.want)
			}
		})
	}
}

// volumeEnv is the provider served over the plugin protocol, configured
// with an in-process drover-target.
type volumeEnv struct {
	server tfprotov6.ProviderServer
	schema *tfprotov6.Schema // drover_volume's
	target *apitest.Server
	client *storage.Client
}

// newVolumeEnv configures the provider with the given hosts and, when
// withStorage, the in-process target.
func newVolumeEnv(t *testing.T, hosts []string, withStorage bool) volumeEnv {
	t.Helper()
	return newVolumeEnvWith(t, nil, hosts, withStorage)
}

func newVolumeEnvWith(t *testing.T, hv Hypervisors, hosts []string, withStorage bool) volumeEnv {
	t.Helper()
	target := apitest.New(t)
	client, err := storage.New(target.URL, apitest.Token)
	if err != nil {
		t.Fatal(err)
	}
	server := protocolServer(t, hv)
	sch := schemas(t, server)
	var hostsCfg []any
	for _, h := range hosts {
		hostsCfg = append(hostsCfg, obj{"name": h, "uri": "test:///" + h})
	}
	cfg := obj{"host": hostsCfg}
	if withStorage {
		cfg["storage"] = obj{"endpoint": target.URL, "token": apitest.Token, "portal": "127.0.0.1:3260"}
	}
	resp, err := server.ConfigureProvider(context.Background(), &tfprotov6.ConfigureProviderRequest{
		Config: dynamicValue(t, sch.Provider, cfg),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Diagnostics) > 0 {
		t.Fatalf("ConfigureProvider:%s", diagnosticsString(resp.Diagnostics))
	}
	return volumeEnv{server: server, schema: sch.ResourceSchemas["drover_volume"], target: target, client: client}
}

// stateOf is the state drover_volume keeps of v.
func stateOf(v wire.Volume) obj {
	return obj{"id": v.Name, "name": v.Name, "size_mib": int(v.SizeMiB), "iqn": v.IQN, "lun": int(v.LUN)}
}

// plan plans config over prior (nil: create), as Terraform would.
func (e volumeEnv) plan(t *testing.T, prior, config obj) *tfprotov6.PlanResourceChangeResponse {
	t.Helper()
	proposed := obj{}
	for k, v := range config {
		proposed[k] = v
	}
	for _, k := range []string{"id", "iqn", "lun", "size_mib"} {
		if _, set := config[k]; !set && prior != nil {
			proposed[k] = prior[k]
		}
	}
	priorState := dynamicValue(t, e.schema, prior)
	if prior == nil {
		dv, err := tfprotov6.NewDynamicValue(e.schema.ValueType(), tftypes.NewValue(e.schema.ValueType(), nil))
		if err != nil {
			t.Fatal(err)
		}
		priorState = &dv
	}
	resp, err := e.server.PlanResourceChange(context.Background(), &tfprotov6.PlanResourceChangeRequest{
		TypeName:         "drover_volume",
		PriorState:       priorState,
		ProposedNewState: dynamicValue(t, e.schema, proposed),
		Config:           dynamicValue(t, e.schema, config),
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// planned decodes a plan's new state.
func (e volumeEnv) planned(t *testing.T, resp *tfprotov6.PlanResourceChangeResponse) map[string]tftypes.Value {
	t.Helper()
	v, err := resp.PlannedState.Unmarshal(e.schema.ValueType())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]tftypes.Value
	if err := v.As(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// wantError checks that diags hold exactly one error, at attribute at
// (nil: anywhere), whose text has every one of texts.
func wantError(t *testing.T, diags []*tfprotov6.Diagnostic, at *tftypes.AttributePath, texts ...string) {
	t.Helper()
	if len(diags) != 1 || diags[0].Severity != tfprotov6.DiagnosticSeverityError {
		t.Fatalf("got %d diagnostics, want one error:%s", len(diags), diagnosticsString(diags))
	}
	d := diags[0]
	if at != nil && !d.Attribute.Equal(at) {
		t.Errorf("error is at %v, want %v", d.Attribute, at)
	}
	for _, s := range texts {
		if !strings.Contains(d.Summary+": "+d.Detail, s) {
			t.Errorf("error %q: %q does not say %q", d.Summary, d.Detail, s)
		}
	}
}

func wantNoDiagnostics(t *testing.T, diags []*tfprotov6.Diagnostic) {
	t.Helper()
	if len(diags) > 0 {
		t.Fatalf("unexpected diagnostics:%s", diagnosticsString(diags))
	}
}

func TestVolumePlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newVolumeEnv(t, []string{"alpha"}, true)
	existing, err := env.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "existing", SizeMiB: 100})
	if err != nil {
		t.Fatal(err)
	}
	sizeAt := tftypes.NewAttributePath().WithAttributeName("size_mib")

	t.Run("shrinking is refused at plan time, naming size_mib", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, stateOf(existing), obj{"name": "existing", "size_mib": 50})
		wantError(t, resp.Diagnostics, sizeAt, "size_mib is 50 MiB", "100 MiB", "create a new volume")
	})
	t.Run("growing is an in-place update", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, stateOf(existing), obj{"name": "existing", "size_mib": 200})
		wantNoDiagnostics(t, resp.Diagnostics)
		if len(resp.RequiresReplace) > 0 {
			t.Errorf("growing replaces the volume because of %v", resp.RequiresReplace)
		}
		got := env.planned(t, resp)
		if !got["size_mib"].Equal(tftypes.NewValue(tftypes.Number, 200)) || !got["iqn"].Equal(tftypes.NewValue(tftypes.String, existing.IQN)) {
			t.Errorf("planned size_mib %v, iqn %v; want 200 and %s", got["size_mib"], got["iqn"], existing.IQN)
		}
	})
	t.Run("a new name replaces the volume, and a smaller size is then fine", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, stateOf(existing), obj{"name": "renamed", "size_mib": 10})
		wantNoDiagnostics(t, resp.Diagnostics)
		if len(resp.RequiresReplace) != 1 || !resp.RequiresReplace[0].Equal(tftypes.NewAttributePath().WithAttributeName("name")) {
			t.Errorf("RequiresReplace = %v, want name", resp.RequiresReplace)
		}
		// The new volume's id is known after apply, so that a VM referring to
		// a literal id can be checked against the storage box at plan time.
		if got := env.planned(t, resp); got["id"].IsKnown() || got["iqn"].IsKnown() {
			t.Errorf("planned id %v, iqn %v; want both unknown", got["id"], got["iqn"])
		}
	})
	t.Run("a source added later replaces the volume", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, stateOf(existing), obj{"name": "existing", "size_mib": 100, "source": obj{"volume_id": "other"}})
		if len(resp.RequiresReplace) != 1 || !resp.RequiresReplace[0].Equal(tftypes.NewAttributePath().WithAttributeName("source")) {
			t.Errorf("RequiresReplace = %v, want source", resp.RequiresReplace)
		}
	})
	t.Run("a clone without size_mib plans the source's size", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, nil, obj{"name": "clone", "source": obj{"volume_id": "existing"}})
		wantNoDiagnostics(t, resp.Diagnostics)
		if got := env.planned(t, resp)["size_mib"]; !got.Equal(tftypes.NewValue(tftypes.Number, 100)) {
			t.Errorf("planned size_mib %v, want 100", got)
		}
	})
	t.Run("a clone smaller than its source is refused", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, nil, obj{"name": "clone", "size_mib": 10, "source": obj{"volume_id": "existing"}})
		wantError(t, resp.Diagnostics, sizeAt, "needs 100 MiB")
	})
	t.Run("a source volume that does not exist is refused at plan time", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, nil, obj{"name": "clone", "source": obj{"volume_id": "nowhere"}})
		wantError(t, resp.Diagnostics, tftypes.NewAttributePath().WithAttributeName("source").WithAttributeName("volume_id"),
			`"nowhere" does not exist`)
	})
	t.Run("an upload plans the image's size", func(t *testing.T) {
		t.Parallel()
		file := filepath.Join(t.TempDir(), "disk.raw")
		if err := os.WriteFile(file, make([]byte, 2*storage.MiB+1), 0o644); err != nil {
			t.Fatal(err)
		}
		resp := env.plan(t, nil, obj{"name": "upload", "source": obj{"file": file}})
		wantNoDiagnostics(t, resp.Diagnostics)
		if got := env.planned(t, resp)["size_mib"]; !got.Equal(tftypes.NewValue(tftypes.Number, 3)) {
			t.Errorf("planned size_mib %v, want 3", got)
		}
	})
	t.Run("an upload of a missing file is refused at plan time", func(t *testing.T) {
		t.Parallel()
		resp := env.plan(t, nil, obj{"name": "upload", "source": obj{"file": "/nonexistent/disk.raw"}})
		wantError(t, resp.Diagnostics, nil, "/nonexistent/disk.raw")
	})
}

func TestVolumeConfigValidation(t *testing.T) {
	t.Parallel()
	env := newVolumeEnv(t, []string{"alpha"}, true)
	at := func(names ...string) *tftypes.AttributePath {
		p := tftypes.NewAttributePath()
		for _, n := range names {
			p = p.WithAttributeName(n)
		}
		return p
	}
	tests := []struct {
		name   string
		config obj
		at     *tftypes.AttributePath // nil: valid
		text   string
	}{
		{name: "an empty volume with a size is valid", config: obj{"name": "a", "size_mib": 1}},
		{name: "a clone without a size is valid", config: obj{"name": "a", "source": obj{"volume_id": "b"}}},
		{name: "an empty volume without a size is refused", config: obj{"name": "a"},
			at: at("size_mib"), text: "size_mib is required"},
		{name: "a source with two attributes is refused", config: obj{"name": "a", "source": obj{"volume_id": "b", "file": "/x"}},
			at: at("source"), text: "set exactly one"},
		{name: "an empty source is refused", config: obj{"name": "a", "source": obj{}},
			at: at("source"), text: "set exactly one"},
		{name: "a name with an uppercase letter is refused", config: obj{"name": "Data", "size_mib": 1},
			at: at("name"), text: `"Data"`},
		{name: "a size of zero is refused", config: obj{"name": "a", "size_mib": 0},
			at: at("size_mib"), text: "at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := env.server.ValidateResourceConfig(context.Background(), &tfprotov6.ValidateResourceConfigRequest{
				TypeName: "drover_volume",
				Config:   dynamicValue(t, env.schema, tt.config),
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.at == nil {
				wantNoDiagnostics(t, resp.Diagnostics)
				return
			}
			wantError(t, resp.Diagnostics, tt.at, tt.text)
		})
	}
}

func TestVolumeWithoutStorageNamesTheStorageBlock(t *testing.T) {
	t.Parallel()
	env := newVolumeEnv(t, []string{"alpha"}, false)
	resp := env.plan(t, nil, obj{"name": "a", "size_mib": 1})
	wantError(t, resp.Diagnostics, nil, "add a storage block with endpoint, token and portal", `provider "drover" block`)
}

func TestVolumeRefreshOnlyReadsAndAPlanGivesNewHostsAccess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newVolumeEnv(t, []string{"alpha", "beta"}, true)
	old, err := env.client.CreateVolume(ctx, wire.CreateVolumeRequest{
		Name: "old", SizeMiB: 1, Initiators: []string{hypervisor.HostInitiator("alpha")},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A refresh reads the access as it is and changes nothing.
	read, err := env.server.ReadResource(ctx, &tfprotov6.ReadResourceRequest{
		TypeName:     "drover_volume",
		CurrentState: dynamicValue(t, env.schema, stateOf(old)),
	})
	if err != nil {
		t.Fatal(err)
	}
	wantNoDiagnostics(t, read.Diagnostics)
	got, err := env.client.GetVolume(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Initiators, []string{hypervisor.HostInitiator("alpha")}) || got.CHAP != nil {
		t.Fatalf("after a refresh the target has initiators %q and CHAP %+v; want them untouched", got.Initiators, got.CHAP)
	}
	nv, err := read.NewState.Unmarshal(env.schema.ValueType())
	if err != nil {
		t.Fatal(err)
	}
	refreshed := fromValue(t, nv).(obj)
	if fmt.Sprint(refreshed["initiators"]) != fmt.Sprint([]any{hypervisor.HostInitiator("alpha")}) || refreshed["chap_user"] != "" {
		t.Errorf("refreshed state has initiators %v, chap_user %q; want what the target has", refreshed["initiators"], refreshed["chap_user"])
	}

	// The plan shows beta's access coming, and CHAP; the apply makes it.
	config := obj{"name": "old", "size_mib": 1}
	plan := env.plan(t, refreshed, config)
	wantNoDiagnostics(t, plan.Diagnostics)
	planned := fromValue(t, tftypes.NewValue(env.schema.ValueType(), env.planned(t, plan))).(obj)
	want := cluster.AccessFor([]string{"alpha", "beta"}, apitest.Token)
	if fmt.Sprint(planned["initiators"]) != fmt.Sprint(want.Initiators) || planned["chap_user"] != "drover" {
		t.Fatalf("planned initiators %v, chap_user %v; want %v and drover", planned["initiators"], planned["chap_user"], want.Initiators)
	}
	applied, err := env.server.ApplyResourceChange(ctx, &tfprotov6.ApplyResourceChangeRequest{
		TypeName:     "drover_volume",
		PriorState:   dynamicValue(t, env.schema, refreshed),
		PlannedState: plan.PlannedState,
		Config:       dynamicValue(t, env.schema, config),
	})
	if err != nil {
		t.Fatal(err)
	}
	wantNoDiagnostics(t, applied.Diagnostics)
	if got, err = env.client.GetVolume(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if slices.Sort(got.Initiators); !slices.Equal(got.Initiators, want.Initiators) {
		t.Errorf("initiators on the target = %q, want %q", got.Initiators, want.Initiators)
	}
	if got.CHAP == nil || got.CHAP.User != "drover" {
		t.Errorf("CHAP on the target = %+v, want user drover", got.CHAP)
	}
}

func TestVolumeDeleteInUseNamesTheHost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := newVolumeEnv(t, []string{"alpha"}, true)
	v, err := env.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "busy", SizeMiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	env.target.Exporter.AddSession(wire.Session{
		Volume: "busy", TargetIQN: v.IQN, Initiator: hypervisor.HostInitiator("alpha"), RemoteAddr: "127.0.0.2:40000", Since: time.Now(),
	})
	null, err := tfprotov6.NewDynamicValue(env.schema.ValueType(), tftypes.NewValue(env.schema.ValueType(), nil))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := env.server.ApplyResourceChange(ctx, &tfprotov6.ApplyResourceChangeRequest{
		TypeName:     "drover_volume",
		PriorState:   dynamicValue(t, env.schema, stateOf(v)),
		PlannedState: &null,
		Config:       &null,
	})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, resp.Diagnostics, nil, "Unable to delete volume", "host alpha", "127.0.0.2:40000", "drover_vm")
	if _, err := env.client.GetVolume(ctx, "busy"); err != nil {
		t.Errorf("the volume in use is gone: %v", err)
	}
}

// fakeResizer records what it is asked to resize and answers with
// resized and err.
type fakeResizer struct {
	Hypervisors
	mu      sync.Mutex // guards calls
	calls   []string
	resized []hypervisor.Resized
	err     error
}

func (f *fakeResizer) ResizeDisks(_ context.Context, hosts map[string]string, iqn string, lun uint64, sizeMiB int64) ([]hypervisor.Resized, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%v %s/%d %d", hosts, iqn, lun, sizeMiB))
	return f.resized, f.err
}

func TestVolumeGrowTellsRunningVMs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		err         error
		wantWarning string // "" for no diagnostics
	}{
		{name: "growing tells the running VMs on every host the new size"},
		{name: "a host that cannot be told is a warning, and the volume has grown",
			err: errors.New("beta (test:///beta): connection refused"), wantWarning: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			resizer := &fakeResizer{resized: []hypervisor.Resized{{Host: "alpha", VM: "db", Target: "vdb"}}, err: tt.err}
			env := newVolumeEnvWith(t, resizer, []string{"alpha", "beta"}, true)
			v, err := env.client.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "grows", SizeMiB: 8})
			if err != nil {
				t.Fatal(err)
			}
			planned := stateOf(v)
			planned["size_mib"] = 16
			resp, err := env.server.ApplyResourceChange(ctx, &tfprotov6.ApplyResourceChangeRequest{
				TypeName:     "drover_volume",
				PriorState:   dynamicValue(t, env.schema, stateOf(v)),
				PlannedState: dynamicValue(t, env.schema, planned),
				Config:       dynamicValue(t, env.schema, obj{"name": "grows", "size_mib": 16}),
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantWarning == "" {
				wantNoDiagnostics(t, resp.Diagnostics)
			} else if len(resp.Diagnostics) != 1 || resp.Diagnostics[0].Severity != tfprotov6.DiagnosticSeverityWarning ||
				!strings.Contains(resp.Diagnostics[0].Detail, tt.wantWarning) {
				t.Errorf("got%s\nwant one warning saying %q", diagnosticsString(resp.Diagnostics), tt.wantWarning)
			}
			want := []string{fmt.Sprintf("map[alpha:test:///alpha beta:test:///beta] %s/0 16", v.IQN)}
			if !slices.Equal(resizer.calls, want) {
				t.Errorf("ResizeDisks calls = %q, want %q", resizer.calls, want)
			}
			if got, err := env.client.GetVolume(ctx, "grows"); err != nil || got.SizeMiB != 16 {
				t.Errorf("the target has %d MiB (%v), want 16", got.SizeMiB, err)
			}
		})
	}
}
