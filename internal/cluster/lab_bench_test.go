package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/lab"
	"github.com/drover/terraform-provider-drover/internal/placement"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// benchLab returns the running lab for a lab benchmark (DROVER_BENCH=1 and
// TF_ACC=1, as make bench sets them), and skips otherwise. Asked for and
// without a lab, it fails.
func benchLab(b *testing.B) (lab.Info, string) {
	b.Helper()
	if os.Getenv("DROVER_BENCH") != "1" || os.Getenv("TF_ACC") == "" {
		b.Skip("set DROVER_BENCH=1 and TF_ACC=1 with the lab running (make bench)")
	}
	info, err := lab.Find()
	if err != nil {
		b.Fatalf("TF_ACC is set but there is no lab: %v", err)
	}
	root, err := lab.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	return info, root
}

// BenchmarkMoveOverhead moves one lab guest (128 MiB, one iSCSI disk) from
// alpha to beta and back, by the cluster's move (network check, CHAP
// secret, volume access, move slots, migration, locating it after) and by
// `virsh migrate --live --persistent --undefinesource`, in turns within each
// iteration, so that both see the same machine. It reports the mean time of
// one move each way and their ratio (goal: provider/virsh ≤ 1.1).
func BenchmarkMoveOverhead(b *testing.B) {
	info, _ := benchLab(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	c, cleanup := benchCluster(b, info, 2, "")
	defer cleanup()

	name := fmt.Sprintf("bench-move-%d", time.Now().UnixNano()%1_000_000)
	loc := benchVM(b, ctx, c, info, name, true, "alpha")
	defer benchRemoveVM(c, info, name)

	view := c.Survey(ctx)
	alpha, _ := view.Host("alpha")
	beta, _ := view.Host("beta")
	move := func(to HostView) {
		cur, _, err := c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID)
		if err != nil {
			b.Fatal(err)
		}
		if loc, err = c.move(ctx, loc, cur, to, placement.PinChanged); err != nil {
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
	c, cleanup := benchCluster(b, info, 2, "")
	defer cleanup()

	const n = 6
	var names []string
	for i := range n {
		name := fmt.Sprintf("bench-evac-%d-%d", time.Now().UnixNano()%1_000_000, i)
		names = append(names, name)
		benchVM(b, ctx, c, info, name, false, "alpha")
		defer benchRemoveVM(c, info, name)
	}
	// evacuate moves every VM off from to its other host, perHost at a
	// time per host, all VMs' updates at once.
	evacuate := func(from string, perHost int) time.Duration {
		c := New(withMaintenance(c.cfg, from, perHost), c.access, c.hosts, c.storage, nil)
		start := time.Now()
		errs := make(chan error, n)
		for _, name := range names {
			go func() {
				loc, found, _, err := c.Locate(ctx, name)
				if err != nil || !found {
					errs <- fmt.Errorf("locate %s: found %v, %v", name, found, err)
					return
				}
				cur, _, err := c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID)
				if err != nil {
					errs <- err
					return
				}
				dst, why, done, err := c.decideMove(ctx, loc, cur, "")
				if err == nil && dst.Config.Name != "" {
					_, err = c.move(ctx, loc, cur, dst, why)
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

// withMaintenance returns cfg with host (or no host, for "") in
// maintenance, and perHost moves per host.
func withMaintenance(cfg Config, host string, perHost int) Config {
	hosts := make([]HostConfig, len(cfg.Hosts))
	for i, h := range cfg.Hosts {
		h.Maintenance = h.Name == host
		hosts[i] = h
	}
	cfg.Hosts = hosts
	cfg.Placement.MigrationsPerHost = perHost
	return cfg
}

// benchCluster is the lab's cluster, as the provider configures it, with
// perHost moves per host.
func benchCluster(b *testing.B, info lab.Info, perHost int, maintenance string) (*Cluster, func()) {
	b.Helper()
	cfg := Config{
		Hosts: []HostConfig{
			{Name: "alpha", URI: info.AlphaURI, ReservedMemoryMiB: 512, CPUOvercommit: 4, MemoryOvercommit: 1, DomainType: "qemu"},
			{Name: "beta", URI: info.BetaURI, ReservedMemoryMiB: 512, CPUOvercommit: 4, MemoryOvercommit: 1, DomainType: "qemu"},
		},
		Portal:    info.StoragePortal,
		Placement: PlacementConfig{Strategy: placement.Spread, MigrationsPerHost: perHost},
	}
	client, err := storage.New(info.StorageEndpoint, info.StorageToken)
	if err != nil {
		b.Fatal(err)
	}
	pool := hypervisor.NewPool(hypervisor.Options{})
	c := New(withMaintenance(cfg, maintenance, perHost), AccessFor(cfg.HostNames(), info.StorageToken),
		HostsOf(pool), StorageOf(client), nil)
	return c, func() { pool.Close() }
}

// benchVM creates a running lab guest on host through the cluster's
// create path, with a 16 MiB disk when disk is set.
func benchVM(b *testing.B, ctx context.Context, c *Cluster, info lab.Info, name string, disk bool, host string) hypervisor.Location {
	b.Helper()
	mem := int64(64)
	vm := hypervisor.VM{
		Name: name, VCPUs: 1, MemoryMiB: mem, MaxMemoryMiB: mem, MaxVCPUs: 1, Managed: true,
		Boot:      hypervisor.Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd, Cmdline: "console=ttyS0 no_timer_check"},
		Placement: hypervisor.Placement{Host: host},
	}
	if disk {
		vm.MemoryMiB, vm.MaxMemoryMiB = 128, 128
		if _, err := c.storage.Seeds.CreateVolume(ctx, wire.CreateVolumeRequest{Name: name + "-disk", SizeMiB: 16}); err != nil {
			b.Fatal(err)
		}
		vm.Disks = []hypervisor.Disk{{Volume: name + "-disk"}}
	}
	loc, err := c.Create(ctx, VMSpec{VM: vm, Running: true})
	if err != nil {
		b.Fatal(err)
	}
	// Unpin it, so that placement may move it.
	vm.Placement = hypervisor.Placement{}
	vm.UUID = loc.Domain.UUID
	cur, _, err := c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID)
	if err != nil {
		b.Fatal(err)
	}
	cur.Placement = hypervisor.Placement{}
	if _, err := c.hosts.Runner.DefineVM(ctx, loc.URI, cur); err != nil {
		b.Fatal(err)
	}
	return loc
}

// benchRemoveVM removes the VM from every host and the volumes (by default
// its disk, name-disk) from the target, whatever state they are in.
func benchRemoveVM(c *Cluster, info lab.Info, name string, volumes ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool := c.hosts.Reader.(*hypervisor.Pool)
	for _, uri := range []string{info.AlphaURI, info.BetaURI} {
		_ = pool.Remove(ctx, uri, name)
	}
	if len(volumes) == 0 {
		volumes = []string{name + "-disk"}
	}
	// The target sees the guest's sessions end a moment after the guest.
	for _, v := range volumes {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			err := c.storage.Seeds.DeleteVolume(ctx, v, false)
			if err == nil || errors.Is(err, storage.ErrNotFound) {
				break
			}
		}
	}
}

// BenchmarkBackup backs up a running lab guest with two 1 GiB disks, half
// of each written, through drover_backup's own path (Cluster.Cut) (pause, snapshot set
// with the domain XML, resume), on the lab's drover-target (ext4 here: a
// full copy) and on a second drover-target whose data is on XFS with
// reflinks. It reports how long the guest stood still and how long the
// whole backup took (goal with reflinks: pause ≤ 200 ms).
func BenchmarkBackup(b *testing.B) {
	info, root := benchLab(b)
	for _, tc := range []struct {
		name    string
		reflink bool
	}{{"copy", false}, {"reflink", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			target := info
			if tc.reflink {
				target = startReflinkTarget(b, root, info)
			}
			c, cleanup := benchCluster(b, target, 2, "")
			defer cleanup()
			name := fmt.Sprintf("bench-bak-%s-%d", tc.name, time.Now().UnixNano()%1_000_000)
			vm := benchTwoDiskVM(b, ctx, c, target, name)
			defer benchRemoveVM(c, target, name, name+"-a", name+"-b")

			var pause, total time.Duration
			var method string
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				bk, err := c.Cut(ctx, vm, false)
				if err != nil || bk.Unreleased != "" {
					b.Fatalf("backup: %v %s", err, bk.Unreleased)
				}
				set := bk.Set
				total += time.Since(start)
				ms, _ := strconv.ParseInt(set.Labels[LabelPauseMS], 10, 64)
				pause += time.Duration(ms) * time.Millisecond
				method = set.Method
				b.StopTimer()
				if err := c.storage.Sets.DeleteSnapshotSet(ctx, set.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			if tc.reflink && method != "reflink" || !tc.reflink && method != "copy" {
				b.Fatalf("the snapshots were made by %s, want %s", method, tc.name)
			}
			b.ReportMetric(float64(pause.Milliseconds())/float64(b.N), "pause-ms/backup")
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/backup")
		})
	}
}

// benchTwoDiskVM makes two 1 GiB volumes, every other MiB of each written
// with random data, and a running lab guest on alpha with them as disks. It
// returns the VM's UUID.
func benchTwoDiskVM(b *testing.B, ctx context.Context, c *Cluster, info lab.Info, name string) string {
	b.Helper()
	const size = 1024
	img := filepath.Join(b.TempDir(), "half.raw")
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, storage.MiB)
	for off := int64(0); off < size; off += 2 {
		_, _ = rand.Read(chunk)
		if _, err := f.WriteAt(chunk, off*storage.MiB); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size * storage.MiB); err != nil {
		b.Fatal(err)
	}
	f.Close()
	var disks []hypervisor.Disk
	for _, d := range []string{name + "-a", name + "-b"} {
		if _, err := c.storage.Seeds.CreateVolume(ctx, wire.CreateVolumeRequest{Name: d, SizeMiB: size}); err != nil {
			b.Fatal(err)
		}
		in, err := os.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		err = c.storage.Seeds.UploadVolume(ctx, d, in, "raw")
		in.Close()
		if err != nil {
			b.Fatal(err)
		}
		disks = append(disks, hypervisor.Disk{Volume: d})
	}
	vm := hypervisor.VM{
		Name: name, VCPUs: 1, MemoryMiB: 128, MaxMemoryMiB: 128, MaxVCPUs: 1, Disks: disks,
		Boot:      hypervisor.Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd, Cmdline: "console=ttyS0 no_timer_check"},
		Placement: hypervisor.Placement{Host: "alpha"},
	}
	loc, err := c.Create(ctx, VMSpec{VM: vm, Running: true})
	if err != nil {
		b.Fatal(err)
	}
	return loc.Domain.UUID
}

// startReflinkTarget runs a second drover-target, with the lab's token, on
// an XFS image with reflinks that it loop-mounts, at 127.0.0.1:3262 (iSCSI)
// and :3263 (API), and returns the lab's info pointing at it. Everything is
// stopped and unmounted when the benchmark ends.
func startReflinkTarget(b *testing.B, root string, info lab.Info) lab.Info {
	b.Helper()
	dir := b.TempDir()
	img, mnt := filepath.Join(dir, "xfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, args := range [][]string{
		{"truncate", "-s", "6G", img},
		{"mkfs.xfs", "-q", "-m", "reflink=1", img},
		{"mount", "-o", "loop", img, mnt},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	b.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			b.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	token := filepath.Join(root, ".lab", "target", "token")
	var log bytes.Buffer
	cmd := exec.Command(filepath.Join(root, ".lab", "bin", "drover-target"), "serve", "--data-dir", filepath.Join(mnt, "data"),
		"--iscsi-listen", "127.0.0.1:3262", "--api-listen", "127.0.0.1:3263", "--token-file", token)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	out := info
	out.StorageEndpoint, out.StoragePortal = "http://127.0.0.1:3263", "127.0.0.1:3262"
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(out.StorageEndpoint + "/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return out
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("the reflink drover-target did not answer: %v\n%s", err, log.String())
		}
	}
}

// BenchmarkRecoverThreeVMs declares alpha failed with three running lab
// guests on it (128 MiB, one iSCSI disk each) and recovers them the way the
// failed = true apply does: every VM's update at once, each fencing alpha
// (the first does it, the others find it done), destroying its copy there
// (alpha still answers here) while it starts on beta, cold. It reports the
// time from the start until all three run on beta (goal: ≤ 15 s for
// three guests), the share of it spent fencing, and the time until the
// apply is done (the copies on alpha gone too). Between iterations alpha
// is let back in and the guests are moved back.
func BenchmarkRecoverThreeVMs(b *testing.B) {
	info, _ := benchLab(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c, cleanup := benchCluster(b, info, 2, "")
	defer cleanup()
	const n = 3
	var specs []VMSpec
	for i := range n {
		name := fmt.Sprintf("bench-rec-%d-%d", time.Now().UnixNano()%1_000_000, i)
		loc := benchVM(b, ctx, c, info, name, true, "alpha")
		defer benchRemoveVM(c, info, name)
		vm, _, err := c.hosts.Reader.ReadVM(ctx, loc.URI, loc.Domain.UUID)
		if err != nil {
			b.Fatal(err)
		}
		specs = append(specs, VMSpec{VM: vm, Running: true})
	}
	failedCfg := withMaintenance(c.cfg, "", 2)
	failedCfg.Hosts[0].Failed = true
	var total, applied, fencing time.Duration
	b.ResetTimer()
	for range b.N {
		dead := New(failedCfg, c.access, c.hosts, c.storage, nil)
		start := time.Now()
		if err := dead.fenceHost(ctx, "alpha"); err != nil {
			b.Fatal(err)
		}
		fencing += time.Since(start)
		running := make(chan time.Duration, 1)
		go func() { running <- runningOn(ctx, c, info.BetaURI, specs, start) }()
		errs := make(chan error, n)
		for _, spec := range specs {
			go func() {
				loc, err := dead.Update(ctx, spec, spec, "", "alpha", time.Second)
				if err == nil && (loc.Host != "beta" || !loc.Domain.State.Active()) {
					err = fmt.Errorf("VM %s after recovery: %+v, want running on beta", spec.VM.Name, loc)
				}
				errs <- err
			}()
		}
		for range specs {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		applied += time.Since(start)
		total += <-running

		b.StopTimer()
		back := New(withMaintenance(c.cfg, "", 2), c.access, c.hosts, c.storage, nil)
		if err := back.readmit(ctx, "alpha"); err != nil {
			b.Fatal(err)
		}
		for _, spec := range specs {
			pinned := spec
			pinned.VM.Placement.Host = "alpha"
			if _, err := back.Update(ctx, spec, pinned, "alpha", "beta", time.Second); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(total.Seconds()/float64(b.N), "s/until-3-run-on-beta")
	b.ReportMetric(applied.Seconds()/float64(b.N), "s/apply")
	b.ReportMetric(float64(fencing)/float64(total), "fence-share")
}

// runningOn polls the host at uri until every VM of specs runs there, and
// returns how long after start that was.
func runningOn(ctx context.Context, c *Cluster, uri string, specs []VMSpec, start time.Time) time.Duration {
	for ctx.Err() == nil {
		all := true
		for _, s := range specs {
			d, found, err := c.hosts.Migrator.Domain(ctx, uri, s.VM.UUID)
			all = all && err == nil && found && d.State.Active()
		}
		if all {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}
