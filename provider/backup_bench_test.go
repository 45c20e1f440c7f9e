package provider

import (
	"bytes"
	"context"
	"crypto/rand"
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
	"github.com/drover/terraform-provider-drover/internal/storage"
)

// BenchmarkBackup backs up a running lab guest with two 1 GiB disks, half
// of each written, through drover_backup's own path (pause, snapshot set
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
			r, cleanup := benchResource(b, ctx, target, 2)
			defer cleanup()
			name := fmt.Sprintf("bench-bak-%s-%d", tc.name, time.Now().UnixNano()%1_000_000)
			vm := benchTwoDiskVM(b, ctx, r, target, name)
			defer benchRemoveVM(r, target, name, name+"-a", name+"-b")

			br := &backupResource{data: &providerData{config: r.cfg, storage: r.storage.(*storage.Client)}, hosts: r.hosts.(*hypervisor.Pool)}
			var pause, total time.Duration
			var method string
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				set, _, release, err := br.cut(ctx, vm, false)
				if err != nil || release != "" {
					b.Fatalf("backup: %v %s", err, release)
				}
				total += time.Since(start)
				ms, _ := strconv.ParseInt(set.Labels[labelPauseMS], 10, 64)
				pause += time.Duration(ms) * time.Millisecond
				method = set.Method
				b.StopTimer()
				if err := br.data.storage.DeleteSnapshotSet(ctx, set.ID); err != nil {
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
func benchTwoDiskVM(b *testing.B, ctx context.Context, r *vmResource, info lab.Info, name string) string {
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
		if _, err := r.storage.CreateVolume(ctx, storage.CreateVolumeRequest{Name: d, SizeMiB: size}); err != nil {
			b.Fatal(err)
		}
		in, err := os.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		err = r.storage.UploadVolume(ctx, d, in, "raw")
		in.Close()
		if err != nil {
			b.Fatal(err)
		}
		disks = append(disks, hypervisor.Disk{Volume: d})
	}
	vm := hypervisor.VM{
		Name: name, VCPUs: 1, MemoryMiB: 128, MaxMemoryMiB: 128, MaxVCPUs: 1, Disks: disks,
		Boot:      hypervisor.Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd, Cmdline: "console=ttyS0"},
		Placement: hypervisor.Placement{Host: "alpha"},
	}
	loc, err := r.create(ctx, vmSpec{VM: vm, Running: true})
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
