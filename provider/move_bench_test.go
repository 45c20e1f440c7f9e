package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/lab"
	"github.com/drover/terraform-provider-drover/internal/placement"
	"github.com/drover/terraform-provider-drover/internal/storage"
)

// benchLab returns the running lab for a lab benchmark (DROVER_BENCH=1 and
// DROVER_LAB=1, as make bench sets them), and skips otherwise.
func benchLab(b *testing.B) (lab.Info, string) {
	b.Helper()
	if os.Getenv("DROVER_BENCH") != "1" || os.Getenv("DROVER_LAB") != "1" {
		b.Skip("set DROVER_BENCH=1 and DROVER_LAB=1 with the lab running (make bench)")
	}
	info, err := lab.Find()
	if err != nil {
		b.Fatalf("DROVER_LAB=1 but no lab: %v", err)
	}
	root, err := lab.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	return info, root
}

// BenchmarkMoveOverhead moves one lab guest (128 MiB, one iSCSI disk) from
// alpha to beta and back, by the provider's move (network check, CHAP
// secret, volume access, move slots, migration, locating it after) and by
// `virsh migrate --live --persistent --undefinesource`, in turns within each
// iteration, so that both see the same machine. It reports the mean time of
// one move each way and their ratio (goal: provider/virsh ≤ 1.1).
func BenchmarkMoveOverhead(b *testing.B) {
	info, _ := benchLab(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	r, cleanup := benchResource(b, ctx, info, 2)
	defer cleanup()

	name := fmt.Sprintf("bench-move-%d", time.Now().UnixNano()%1_000_000)
	loc := benchVM(b, ctx, r, info, name, true, "alpha")
	defer benchRemoveVM(r, info, name)

	view := surveyHosts(ctx, r.cfg, r.hosts)
	alpha, _ := view.host("alpha")
	beta, _ := view.host("beta")
	move := func(to hostView) {
		cur, _, err := r.hosts.ReadVM(ctx, loc.URI, loc.Domain.UUID)
		if err != nil {
			b.Fatal(err)
		}
		if loc, err = r.move(ctx, loc, cur, to, placement.PinChanged); err != nil {
			b.Fatal(err)
		}
	}
	virshMove := func(from, to string) {
		out, err := exec.CommandContext(ctx, "virsh", "-c", from, "migrate", "--live", "--persistent",
			"--undefinesource", name, to).CombinedOutput()
		if err != nil {
			b.Fatalf("virsh migrate: %v: %s", err, out)
		}
	}
	var byProvider, byVirsh time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		move(beta)
		move(alpha)
		byProvider += time.Since(start)

		start = time.Now()
		virshMove(info.AlphaURI, info.BetaURI)
		virshMove(info.BetaURI, info.AlphaURI)
		byVirsh += time.Since(start)
	}
	b.StopTimer()
	moves := float64(2 * b.N)
	b.ReportMetric(float64(byProvider.Milliseconds())/moves, "provider-ms/move")
	b.ReportMetric(float64(byVirsh.Milliseconds())/moves, "virsh-ms/move")
	b.ReportMetric(float64(byProvider)/float64(byVirsh), "provider/virsh")
}

// BenchmarkEvacuateSixVMs puts six running lab guests (64 MiB, no disk) on
// alpha and evacuates them to beta the way an apply does, with alpha in
// maintenance: every VM's update runs at once, as Terraform's parallelism
// has them, and the placer bounds the moves per host. It reports the time
// of the whole evacuation with 2 moves per host (the default) and with 1
// (one at a time), measured in turns, and their ratio.
func BenchmarkEvacuateSixVMs(b *testing.B) {
	info, _ := benchLab(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	r, cleanup := benchResource(b, ctx, info, 2)
	defer cleanup()

	const n = 6
	var names []string
	for i := range n {
		name := fmt.Sprintf("bench-evac-%d-%d", time.Now().UnixNano()%1_000_000, i)
		names = append(names, name)
		benchVM(b, ctx, r, info, name, false, "alpha")
		defer benchRemoveVM(r, info, name)
	}
	// evacuate moves every VM off from to its other host, perHost at a
	// time per host, all VMs' updates at once.
	evacuate := func(from string, perHost int) time.Duration {
		r.placer = newPlacer(perHost)
		r.cfg = withMaintenance(r.cfg, from)
		defer func() { r.cfg = withMaintenance(r.cfg, "") }()
		start := time.Now()
		errs := make(chan error, n)
		for _, name := range names {
			go func() {
				loc, found, _, err := r.locate(ctx, name)
				if err != nil || !found {
					errs <- fmt.Errorf("locate %s: found %v, %v", name, found, err)
					return
				}
				cur, _, err := r.hosts.ReadVM(ctx, loc.URI, loc.Domain.UUID)
				if err != nil {
					errs <- err
					return
				}
				dst, why, done, err := r.decideMove(ctx, loc, cur, "")
				if err == nil && dst.Config.Name != "" {
					_, err = r.move(ctx, loc, cur, dst, why)
				}
				done()
				errs <- err
			}()
		}
		for range names {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	var parallel, serial time.Duration
	b.ResetTimer()
	for range b.N {
		parallel += evacuate("alpha", 2)
		parallel += evacuate("beta", 2)
		serial += evacuate("alpha", 1)
		serial += evacuate("beta", 1)
	}
	b.StopTimer()
	runs := float64(2 * b.N)
	b.ReportMetric(parallel.Seconds()/runs, "s/evacuation-2-per-host")
	b.ReportMetric(serial.Seconds()/runs, "s/evacuation-1-per-host")
	b.ReportMetric(float64(parallel)/float64(serial), "2-per-host/1-per-host")
}

// withMaintenance returns cfg with host (or no host, for "") in maintenance.
func withMaintenance(cfg config, host string) config {
	hosts := make([]hostConfig, len(cfg.Hosts))
	for i, h := range cfg.Hosts {
		h.Maintenance = h.Name == host
		hosts[i] = h
	}
	cfg.Hosts = hosts
	return cfg
}

// benchResource is a drover_vm resource configured for the lab, as
// Configure makes it.
func benchResource(b *testing.B, ctx context.Context, info lab.Info, perHost int) (*vmResource, func()) {
	b.Helper()
	cfg := config{
		Hosts: []hostConfig{
			{Name: "alpha", URI: info.AlphaURI, ReservedMemoryMiB: 512, CPUOvercommit: 4, MemoryOvercommit: 1, DomainType: "qemu"},
			{Name: "beta", URI: info.BetaURI, ReservedMemoryMiB: 512, CPUOvercommit: 4, MemoryOvercommit: 1, DomainType: "qemu"},
		},
		Storage:   &storageConfig{Endpoint: info.StorageEndpoint, Token: info.StorageToken, Portal: info.StoragePortal},
		Placement: placementConfig{Strategy: placement.Spread, MigrationsPerHost: perHost},
	}
	client, err := storage.New(info.StorageEndpoint, info.StorageToken)
	if err != nil {
		b.Fatal(err)
	}
	pool := hypervisor.NewPool(hypervisor.Options{})
	r := &vmResource{cfg: cfg, hosts: pool, storage: client, access: cfg.volumeAccess(), placer: newPlacer(perHost)}
	return r, func() { pool.Close() }
}

// benchVM creates a running lab guest on host through the provider's
// create path, with a 16 MiB disk when disk is set.
func benchVM(b *testing.B, ctx context.Context, r *vmResource, info lab.Info, name string, disk bool, host string) hypervisor.Location {
	b.Helper()
	mem := int64(64)
	vm := hypervisor.VM{
		Name: name, VCPUs: 1, MemoryMiB: mem, MaxMemoryMiB: mem, MaxVCPUs: 1, Managed: true,
		Boot:      hypervisor.Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd, Cmdline: "console=ttyS0"},
		Placement: hypervisor.Placement{Host: host},
	}
	if disk {
		vm.MemoryMiB, vm.MaxMemoryMiB = 128, 128
		if _, err := r.storage.CreateVolume(ctx, storage.CreateVolumeRequest{Name: name + "-disk", SizeMiB: 16}); err != nil {
			b.Fatal(err)
		}
		vm.Disks = []hypervisor.Disk{{Volume: name + "-disk"}}
	}
	loc, err := r.create(ctx, vmSpec{VM: vm, Running: true})
	if err != nil {
		b.Fatal(err)
	}
	// Unpin it, so that placement may move it.
	vm.Placement = hypervisor.Placement{}
	vm.UUID = loc.Domain.UUID
	cur, _, err := r.hosts.ReadVM(ctx, loc.URI, loc.Domain.UUID)
	if err != nil {
		b.Fatal(err)
	}
	cur.Placement = hypervisor.Placement{}
	if _, err := r.hosts.DefineVM(ctx, loc.URI, cur); err != nil {
		b.Fatal(err)
	}
	return loc
}

// benchRemoveVM removes the VM from every host and the volumes (by default
// its disk, name-disk) from the target, whatever state they are in.
func benchRemoveVM(r *vmResource, info lab.Info, name string, volumes ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := r.hosts.(*hypervisor.Pool)
	for _, uri := range []string{info.AlphaURI, info.BetaURI} {
		_ = pool.Remove(ctx, uri, name)
	}
	if len(volumes) == 0 {
		volumes = []string{name + "-disk"}
	}
	// The target sees the guest's sessions end a moment after the guest.
	for _, v := range volumes {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			err := r.storage.DeleteVolume(ctx, v, false)
			if err == nil || errors.Is(err, storage.ErrNotFound) {
				break
			}
		}
	}
}
