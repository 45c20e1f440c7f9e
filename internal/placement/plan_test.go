package placement

import (
	"errors"
	"slices"
	"testing"
)

// host is a plain host: memory in MiB, 8 CPUs, nothing reserved.
func host(name string, memoryMiB int64) Host {
	return Host{Name: name, MemoryMiB: memoryMiB, CPUs: 8}
}

func inMaintenanceHost(name string, memoryMiB int64) Host {
	h := host(name, memoryMiB)
	h.Maintenance = true
	return h
}

// vm is a new VM with one vCPU.
func vm(name string, memoryMiB int64) VM {
	return VM{Name: name, MemoryMiB: memoryMiB, VCPUs: 1}
}

// on returns vm as an existing VM running on current.
func on(current string, v VM) VM {
	v.Current = current
	v.Running = true
	return v
}

func sentences(r Result) []string {
	var out []string
	for _, a := range r.Assignments {
		out = append(out, a.String())
	}
	return out
}

func TestPlan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cluster Cluster
		opts    Options
		// wantShared are the groups that share hosts, as sentences.
		wantShared []string
		want       []string // Assignment.String of every VM, by name
		wantErr    string
	}{
		{
			name: "new VM goes to the host with the least committed",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 8192, CPUs: 8, ForeignMemoryMiB: 2048}, host("beta", 8192)},
				VMs:   []VM{vm("mail", 1024)},
			},
			want: []string{"mail goes to beta (new)"},
		},
		{
			name: "ties break by host name",
			cluster: Cluster{
				Hosts: []Host{host("gamma", 4096), host("beta", 4096), host("alpha", 4096)},
				VMs:   []VM{vm("mail", 1024)},
			},
			want: []string{"mail goes to alpha (new)"},
		},
		{
			name: "pack puts a new VM on the fullest host that fits",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 4096), host("beta", 4096)},
				VMs:   []VM{on("beta", vm("db", 2048)), vm("mail", 1024)},
			},
			opts: Options{Strategy: Pack},
			want: []string{"db stays on beta", "mail goes to beta (new)"},
		},
		{
			name: "spread puts the new VMs of one plan on different hosts",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 4096), host("beta", 4096)},
				VMs:   []VM{vm("a", 1024), vm("b", 1024)},
			},
			want: []string{"a goes to alpha (new)", "b goes to beta (new)"},
		},
		{
			name: "spread group of two lands on alpha and beta",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs: []VM{
					{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"},
					{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"},
				},
			},
			opts: Options{Strategy: Pack},
			want: []string{"web1 goes to alpha (new)", "web2 goes to beta (new)"},
		},
		{
			name: "spread group of three on two hosts is refused",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs: []VM{
					{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"},
					{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"},
					{Name: "web3", MemoryMiB: 512, SpreadGroup: "web"},
				},
			},
			wantErr: `spread group "web": 3 VMs on 2 eligible hosts`,
		},
		{
			name: "a spread group shares the host left while the other is in maintenance",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), inMaintenanceHost("beta", 8192)},
				VMs: []VM{
					on("alpha", VM{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"}),
					on("beta", VM{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"}),
				},
			},
			want:       []string{"web1 stays on alpha", "web2 moves from beta to alpha (maintenance)"},
			wantShared: []string{`spread group "web" shares hosts while beta is out of service: alpha runs web1, web2`},
		},
		{
			name: "strict spread refuses to share while a host is in maintenance",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), inMaintenanceHost("beta", 8192)},
				VMs: []VM{
					on("alpha", VM{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"}),
					on("beta", VM{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"}),
				},
			},
			opts:    Options{StrictSpread: true},
			wantErr: `spread group "web": 2 VMs on 1 eligible host (strict spread)`,
		},
		{
			name: "the VMs of a failed host restart elsewhere, sharing as evenly as the hosts allow",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 8192, CPUs: 8, Failed: true}, host("beta", 8192), host("gamma", 8192)},
				VMs: []VM{
					on("alpha", VM{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"}),
					on("alpha", VM{Name: "mail", MemoryMiB: 512}),
					on("beta", VM{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"}),
					on("gamma", VM{Name: "web3", MemoryMiB: 512, SpreadGroup: "web"}),
					on("gamma", VM{Name: "web4", MemoryMiB: 512, SpreadGroup: "web"}),
				},
			},
			want: []string{
				"mail moves from alpha to beta (host failed)",
				"web1 moves from alpha to beta (host failed)",
				"web2 stays on beta", "web3 stays on gamma", "web4 stays on gamma",
			},
			wantShared: []string{`spread group "web" shares hosts while alpha is out of service: beta runs web1, web2; gamma runs web3, web4`},
		},
		{
			name: "a group as large as the cluster is refused while every host is in service",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs: []VM{
					on("alpha", VM{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"}),
					on("alpha", VM{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"}),
					on("beta", VM{Name: "web3", MemoryMiB: 512, SpreadGroup: "web"}),
				},
			},
			wantErr: `spread group "web": 3 VMs on 2 eligible hosts`,
		},
		{
			name: "when the host is back, the group spreads again",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs: []VM{
					on("alpha", VM{Name: "web1", MemoryMiB: 512, SpreadGroup: "web", PreferredHosts: []string{"alpha"}}),
					on("alpha", VM{Name: "web2", MemoryMiB: 512, SpreadGroup: "web", PreferredHosts: []string{"beta"}}),
				},
			},
			want: []string{"web1 stays on alpha", "web2 moves from alpha to beta (spread group)"},
		},
		{
			name: "two VMs of a group on one host: one of them moves",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs: []VM{
					on("alpha", VM{Name: "web1", MemoryMiB: 512, SpreadGroup: "web"}),
					on("alpha", VM{Name: "web2", MemoryMiB: 512, SpreadGroup: "web"}),
				},
			},
			want: []string{"web1 stays on alpha", "web2 moves from alpha to beta (spread group)"},
		},
		{
			name: "maintenance moves every VM off alpha",
			cluster: Cluster{
				Hosts: []Host{inMaintenanceHost("alpha", 8192), host("beta", 8192), host("gamma", 8192)},
				VMs: []VM{
					on("alpha", vm("db", 2048)),
					on("alpha", vm("mail", 1024)),
					on("alpha", vm("proxy", 512)),
					on("beta", vm("web", 1024)),
				},
			},
			want: []string{
				"db moves from alpha to gamma (maintenance)",
				"mail moves from alpha to beta (maintenance)",
				"proxy moves from alpha to gamma (maintenance)",
				"web stays on beta",
			},
		},
		{
			name: "VM prefers alpha and returns when alpha leaves maintenance",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs:   []VM{on("beta", VM{Name: "db", MemoryMiB: 2048, PreferredHosts: []string{"alpha"}})},
			},
			want: []string{"db moves from beta to alpha (failback to preferred host)"},
		},
		{
			name: "VM prefers alpha but stays on beta while alpha is in maintenance",
			cluster: Cluster{
				Hosts: []Host{inMaintenanceHost("alpha", 8192), host("beta", 8192)},
				VMs:   []VM{on("beta", VM{Name: "db", MemoryMiB: 2048, PreferredHosts: []string{"alpha"}})},
			},
			want: []string{"db stays on beta"},
		},
		{
			name: "failback goes to the first preferred host that has room",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 4096), host("beta", 8192), host("gamma", 8192)},
				VMs: []VM{
					on("alpha", vm("big", 3072)),
					on("gamma", VM{Name: "db", MemoryMiB: 2048, PreferredHosts: []string{"alpha", "beta"}}),
				},
			},
			want: []string{"big stays on alpha", "db moves from gamma to beta (failback to preferred host)"},
		},
		{
			name: "VM whose preferred hosts include its host stays",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 8192), host("beta", 8192)},
				VMs:   []VM{on("beta", VM{Name: "db", MemoryMiB: 2048, PreferredHosts: []string{"alpha", "beta"}})},
			},
			want: []string{"db stays on beta"},
		},
		{
			name: "new VM goes to its preferred host even when it is fuller",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 8192, CPUs: 8, ForeignMemoryMiB: 6144}, host("beta", 8192)},
				VMs:   []VM{{Name: "db", MemoryMiB: 1024, PreferredHosts: []string{"alpha"}}},
			},
			want: []string{"db goes to alpha (new)"},
		},
		{
			name: "a failback yields to a VM that must move",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 2048), host("beta", 1024), inMaintenanceHost("gamma", 4096)},
				VMs: []VM{
					on("beta", VM{Name: "web", MemoryMiB: 1024, PreferredHosts: []string{"alpha"}}),
					on("gamma", vm("db", 2048)),
				},
			},
			want: []string{"db moves from gamma to alpha (maintenance)", "web stays on beta"},
		},
		{
			name: "an existing VM stays on a fuller host (sticky)",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 8192, CPUs: 8, ForeignMemoryMiB: 4096}, host("beta", 8192)},
				VMs:   []VM{on("alpha", vm("mail", 1024))},
			},
			want: []string{"mail stays on alpha"},
		},
		{
			name: "memory growth past alpha's room moves it to beta",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 4096), host("beta", 4096)},
				VMs:   []VM{on("alpha", vm("mail", 1024)), on("alpha", vm("db", 3584))},
			},
			want: []string{"db moves from alpha to beta (no longer fits)", "mail stays on alpha"},
		},
		{
			name: "memory growth that still fits stays",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 4096), host("beta", 4096)},
				VMs:   []VM{on("alpha", vm("mail", 1024)), on("alpha", vm("db", 3072))},
			},
			want: []string{"db stays on alpha", "mail stays on alpha"},
		},
		{
			name: "a changed pin moves the VM to its new host",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 4096), host("beta", 4096)},
				VMs:   []VM{on("alpha", VM{Name: "db", MemoryMiB: 1024, Host: "beta"})},
			},
			want: []string{"db moves from alpha to beta (pin changed)"},
		},
		{
			name: "a pinned VM goes to its pin even when another host is emptier",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 8192, CPUs: 8, ForeignMemoryMiB: 4096}, host("beta", 8192)},
				VMs:   []VM{{Name: "db", MemoryMiB: 1024, Host: "alpha"}},
			},
			want: []string{"db goes to alpha (new)"},
		},
		{
			name: "pinned to a host in maintenance is an error naming the host",
			cluster: Cluster{
				Hosts: []Host{inMaintenanceHost("alpha", 4096), host("beta", 4096)},
				VMs:   []VM{on("alpha", VM{Name: "db", MemoryMiB: 1024, Host: "alpha"})},
			},
			wantErr: `place vm "db": alpha: in maintenance; beta: pinned to alpha`,
		},
		{
			name: "an unplaceable VM's error gives every host's reason",
			cluster: Cluster{
				Hosts: []Host{
					{Name: "beta", MemoryMiB: 4096, CPUs: 8, ReservedMemoryMiB: 512, ForeignMemoryMiB: 3072},
					inMaintenanceHost("alpha", 8192),
				},
				VMs: []VM{vm("db2", 2048)},
			},
			wantErr: `place vm "db2": alpha: in maintenance; beta: 512 MiB free, needs 2048`,
		},
		{
			name: "every unplaceable VM is reported",
			cluster: Cluster{
				Hosts: []Host{host("alpha", 1024)},
				VMs:   []VM{vm("a", 2048), vm("b", 4096)},
			},
			wantErr: "place vm \"b\": alpha: 1024 MiB free, needs 4096\n" +
				"place vm \"a\": alpha: 1024 MiB free, needs 2048",
		},
		{
			name: "reserved memory and overcommit set the capacity",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 4096, CPUs: 8, ReservedMemoryMiB: 1024, MemoryOvercommit: 1.5}},
				VMs:   []VM{vm("fits", 4096), vm("small", 512), vm("one-too-many", 1)},
			},
			wantErr: `place vm "one-too-many": alpha: 0 MiB free, needs 1`,
		},
		{
			name: "vCPUs past cpus × overcommit are refused",
			cluster: Cluster{
				Hosts: []Host{{Name: "alpha", MemoryMiB: 8192, CPUs: 2, CPUOvercommit: 2, ForeignVCPUs: 2}},
				VMs:   []VM{{Name: "build", MemoryMiB: 1024, VCPUs: 4}},
			},
			wantErr: `place vm "build": alpha: 2 vCPUs free, needs 4`,
		},
		{
			name: "a VM that needs kvm avoids a host that only offers qemu",
			cluster: Cluster{
				Hosts: []Host{
					{Name: "alpha", MemoryMiB: 8192, CPUs: 8, DomainTypes: []string{"qemu"}},
					{Name: "beta", MemoryMiB: 8192, CPUs: 8, DomainTypes: []string{"kvm", "qemu"}, ForeignMemoryMiB: 4096},
				},
				VMs: []VM{{Name: "db", MemoryMiB: 1024, DomainType: "kvm"}},
			},
			want: []string{"db goes to beta (new)"},
		},
		{
			name: "VMs on a host that left the cluster move",
			cluster: Cluster{
				Hosts: []Host{host("beta", 4096)},
				VMs:   []VM{on("alpha", vm("db", 1024))},
			},
			want: []string{"db moves from alpha to beta (host removed)"},
		},
		{
			name: "a fixed VM keeps its host, unchecked, and its room",
			cluster: Cluster{
				Hosts: []Host{inMaintenanceHost("alpha", 4096), host("beta", 4096)},
				VMs: []VM{
					{Name: "old", MemoryMiB: 3072, Current: "beta", Fixed: true},
					on("alpha", vm("db", 2048)),
				},
			},
			wantErr: `place vm "db": alpha: in maintenance; beta: 1024 MiB free, needs 2048`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Plan(tt.cluster, tt.opts)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Plan succeeded with %q, want error %q", sentences(got), tt.wantErr)
				}
				if err.Error() != tt.wantErr {
					t.Fatalf("Plan error:\n got %q\nwant %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if s := sentences(got); !slices.Equal(s, tt.want) {
				t.Errorf("Plan:\n got %q\nwant %q", s, tt.want)
			}
			var shared []string
			for _, sh := range got.Shared {
				shared = append(shared, sh.String())
			}
			if !slices.Equal(shared, tt.wantShared) {
				t.Errorf("shared groups:\n got %q\nwant %q", shared, tt.wantShared)
			}
			checkInvariants(t, tt.cluster, got)
		})
	}
}

func TestPlanMovesAreLiveOnlyForRunningVMs(t *testing.T) {
	t.Parallel()
	c := Cluster{
		Hosts: []Host{inMaintenanceHost("alpha", 4096), host("beta", 4096)},
		VMs: []VM{
			on("alpha", vm("running", 1024)),
			{Name: "stopped", MemoryMiB: 1024, Current: "alpha"},
			vm("new", 1024),
		},
	}
	res, err := Plan(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	moves := res.Moves()
	var got []string
	for _, m := range moves {
		if m.Live {
			got = append(got, m.VM+" live")
		} else {
			got = append(got, m.VM+" cold")
		}
	}
	if want := []string{"running live", "stopped cold"}; !slices.Equal(got, want) {
		t.Errorf("moves = %q, want %q", got, want)
	}
}

func TestPlanRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cluster Cluster
		wantErr string
	}{
		{"a VM listed twice", Cluster{Hosts: []Host{host("alpha", 1024)}, VMs: []VM{vm("a", 1), vm("a", 1)}}, `vm "a": listed twice`},
		{"a host listed twice", Cluster{Hosts: []Host{host("alpha", 1024), host("alpha", 1024)}}, `host "alpha": listed twice`},
		{"a pin to an unknown host", Cluster{Hosts: []Host{host("alpha", 1024)}, VMs: []VM{{Name: "a", Host: "zeta"}}}, `vm "a": pinned to unknown host "zeta"`},
		{"overcommit below 1", Cluster{Hosts: []Host{{Name: "alpha", MemoryOvercommit: 0.5}}}, `host "alpha": memory overcommit 0.5 is below 1`},
		{"a fixed VM on no host", Cluster{Hosts: []Host{host("alpha", 1024)}, VMs: []VM{{Name: "a", Fixed: true}}}, `vm "a": fixed but on no host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Plan(tt.cluster, Options{})
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Plan error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestPlanErrorsCarryTheirParts(t *testing.T) {
	t.Parallel()
	_, err := Plan(Cluster{
		Hosts: []Host{host("alpha", 1024)},
		VMs:   []VM{vm("a", 2048), vm("b", 4096)},
	}, Options{})
	var u *Unplaceable
	if !errors.As(err, &u) {
		t.Fatalf("Plan error %v is no *Unplaceable", err)
	}
	want := Rejection{Host: "alpha", Check: "memory", Reason: "1024 MiB free, needs 4096"}
	if u.VM != "b" || len(u.Rejections) != 1 || u.Rejections[0] != want {
		t.Errorf("Unplaceable = %+v, want vm b rejected by %+v", u, want)
	}
}

func TestPlace(t *testing.T) {
	t.Parallel()
	cluster := Cluster{
		Hosts: []Host{host("alpha", 4096), host("beta", 4096)},
		VMs: []VM{
			on("alpha", VM{Name: "web1", MemoryMiB: 1024, SpreadGroup: "web"}),
			on("beta", VM{Name: "web2", MemoryMiB: 1024, SpreadGroup: "web"}),
			on("alpha", vm("mail", 1024)),
			on("alpha", vm("db", 1024)),
		},
	}
	tests := []struct {
		name    string
		vm      VM
		want    string
		wantErr string
	}{
		{name: "a new VM goes to the emptier host", vm: vm("proxy", 512), want: "proxy goes to beta (new)"},
		{name: "a VM of the cluster that still fits stays", vm: on("alpha", vm("db", 2048)), want: "db stays on alpha"},
		{
			name: "memory growth past alpha's room moves only the grown VM",
			vm:   on("alpha", vm("db", 2560)),
			want: "db moves from alpha to beta (no longer fits)",
		},
		{
			name:    "a third member of a group on two hosts is refused",
			vm:      VM{Name: "web3", MemoryMiB: 512, SpreadGroup: "web"},
			wantErr: `spread group "web": 3 VMs on 2 eligible hosts`,
		},
		{
			name:    "growth past every host's room is refused with each host's reason",
			vm:      on("alpha", vm("db", 3584)),
			wantErr: `place vm "db": alpha: 2048 MiB free, needs 3584; beta: 3072 MiB free, needs 3584`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Place(cluster, tt.vm, Options{})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Place = %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if got.String() != tt.want {
				t.Errorf("Place = %q, want %q", got, tt.want)
			}
		})
	}
}
