package placement

import (
	"math/rand/v2"
	"testing"
)

func TestRankers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		ranker ranker
		host   Host
		placed []VM
		vm     VM
		want   int64
	}{
		{"spread scores the room left after the VM", leastCommitted{}, Host{Name: "alpha", MemoryMiB: 4096, CPUs: 8}, nil, VM{MemoryMiB: 1024, VCPUs: 2}, 75},
		{"pack scores the share committed after the VM", mostCommitted{}, Host{Name: "alpha", MemoryMiB: 4096, CPUs: 8}, nil, VM{MemoryMiB: 1024, VCPUs: 2}, 25},
		{"spread averages memory and vCPUs", leastCommitted{}, Host{Name: "alpha", MemoryMiB: 4096, CPUs: 4}, []VM{{MemoryMiB: 3072}}, VM{MemoryMiB: 1024, VCPUs: 2}, 25},
		{"a full host scores 0 for spread", leastCommitted{}, Host{Name: "alpha", MemoryMiB: 4096, CPUs: 4}, []VM{{MemoryMiB: 4096, VCPUs: 4}}, VM{}, 0},
		{"the first preferred host scores 100", preferred{}, host("alpha", 0), nil, VM{PreferredHosts: []string{"alpha", "beta", "gamma"}}, 100},
		{"the second of three preferred hosts scores 66", preferred{}, host("beta", 0), nil, VM{PreferredHosts: []string{"alpha", "beta", "gamma"}}, 66},
		{"a host that is not preferred scores 0", preferred{}, host("delta", 0), nil, VM{PreferredHosts: []string{"alpha", "beta", "gamma"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHostState(&tt.host)
			for i := range tt.placed {
				h.commit(&tt.placed[i], true)
			}
			if got := tt.ranker.score(&h, &tt.vm); got != tt.want {
				t.Errorf("score = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestScoresStayBetween0And100(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 1))
	for range 10000 {
		h := newHostState(&Host{
			Name:             "alpha",
			MemoryMiB:        int64(r.IntN(8192)),
			CPUs:             r.IntN(8),
			ForeignMemoryMiB: int64(r.IntN(16384)),
			ForeignVCPUs:     r.IntN(16),
		})
		vm := VM{MemoryMiB: int64(r.IntN(8192)), VCPUs: r.IntN(8), PreferredHosts: []string{"beta", "alpha"}}
		for _, rk := range []ranker{leastCommitted{}, mostCommitted{}, preferred{}} {
			if s := rk.score(&h, &vm); s < 0 || s > maxScore {
				t.Fatalf("%T scores %d for %+v on %+v", rk, s, vm, h)
			}
		}
	}
}
