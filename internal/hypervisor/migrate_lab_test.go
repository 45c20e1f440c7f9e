package hypervisor

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/lab"
)

// labInfo returns the running lab when TF_ACC is set (make testacc sets it,
// as for every lab test) and skips the test otherwise. With TF_ACC and no
// lab, the test fails: a missing lab must not pass as a green run.
func labInfo(t *testing.T) lab.Info {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("set TF_ACC=1 to run against the lab (make testacc)")
	}
	info, err := lab.Find()
	if err != nil {
		t.Fatalf("TF_ACC is set but there is no lab: %v", err)
	}
	return info
}

func TestAccLiveMigrationMovesARunningGuestToTheOtherHost(t *testing.T) {
	info := labInfo(t)
	testLiveMigration(t, info, info.AlphaURI, info.BetaURI, "drover-migrate-test")
}

// TestAccLiveMigrationOverSSH is the same between the hosts' ssh URIs, as
// real hosts are reached: libvirt's ssh transport to an sshd on each host.
func TestAccLiveMigrationOverSSH(t *testing.T) {
	info := labInfo(t)
	if !strings.HasPrefix(info.AlphaSSHURI, "qemu+ssh://") || !strings.HasPrefix(info.BetaSSHURI, "qemu+ssh://") {
		t.Fatalf("the lab has no ssh URIs (%q, %q): restart it with make lab", info.AlphaSSHURI, info.BetaSSHURI)
	}
	testLiveMigration(t, info, info.AlphaSSHURI, info.BetaSSHURI, "drover-migrate-ssh")
}

func testLiveMigration(t *testing.T, info lab.Info, alpha, beta, name string) {
	pool := NewPool(Options{})
	t.Cleanup(func() { pool.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, uri := range []string{alpha, beta} {
			if err := pool.Remove(ctx, uri, name); err != nil {
				t.Errorf("clean up: %v", err)
			}
		}
	})
	// A leftover of an earlier, interrupted run would make the define fail.
	for _, uri := range []string{alpha, beta} {
		if err := pool.Remove(ctx, uri, name); err != nil {
			t.Fatal(err)
		}
	}

	console := filepath.Join(t.TempDir(), "console.log")
	created, err := pool.CreateVM(ctx, alpha, VM{
		Name:       name,
		Type:       "qemu",
		MemoryMiB:  128,
		VCPUs:      1,
		Boot:       Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd, Cmdline: "console=ttyS0 no_timer_check"},
		ConsoleLog: console,
	})
	if err != nil {
		t.Fatal(err)
	}
	if created.State != StateRunning {
		t.Fatalf("guest on alpha is %s, want running", created.State)
	}

	// The guest counts "alive N" on its serial console every two seconds.
	before := waitAlive(t, console, 1, time.Minute)

	start := time.Now()
	if err := pool.Migrate(ctx, name, alpha, beta, MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("migrated in %s", time.Since(start).Round(time.Millisecond))

	onBeta, found, err := pool.Domain(ctx, beta, name)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("guest is not on beta after the migration")
	}
	if onBeta.State != StateRunning {
		t.Errorf("guest on beta is %s, want running", onBeta.State)
	}
	if onBeta.UUID != created.UUID {
		t.Errorf("guest on beta has UUID %s, want %s (the same domain)", onBeta.UUID, created.UUID)
	}
	if _, found, err := pool.Domain(ctx, alpha, name); err != nil {
		t.Fatal(err)
	} else if found {
		t.Error("guest is still defined on alpha after the migration")
	}
	// The same guest, not a reboot, keeps counting on beta.
	after := waitAlive(t, console, before+1, time.Minute)
	t.Logf("guest counted alive %d on alpha, %d on beta", before, after)
}

var aliveLine = regexp.MustCompile(`drover-guest: alive (\d+)`)

// waitAlive waits until the guest's console shows "alive N" with N >= min and
// returns the highest N seen.
func waitAlive(t *testing.T, console string, min int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	highest := 0
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(console)
		for _, m := range aliveLine.FindAllSubmatch(b, -1) {
			if n, _ := strconv.Atoi(string(m[1])); n > highest {
				highest = n
			}
		}
		if highest >= min {
			return highest
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("console %s: highest alive count %d after %s, want at least %d", console, highest, timeout, min)
	return 0
}

// TestAccMigrationGoesToTheDestinationsMigrationAddress: with an address the
// destination does not have, the destination cannot listen and the VM stays
// running on its source (so the address is what libvirt used); with the
// destination's own address the move succeeds.
func TestAccMigrationGoesToTheDestinationsMigrationAddress(t *testing.T) {
	info := labInfo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	vm := env.guest(t, ctx, "drover-migrate-address")
	if _, err := env.pool.CreateVM(ctx, info.AlphaURI, vm); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, vm.ConsoleLog, 1, time.Minute)

	// 192.0.2.1 (TEST-NET-1) is on no interface here: QEMU on beta cannot
	// listen there, so nothing is sent anywhere.
	err := env.pool.Migrate(ctx, vm.Name, info.AlphaURI, info.BetaURI, MigrateOptions{Address: "192.0.2.1"})
	if err == nil {
		t.Fatal("a migration to an address beta does not have succeeded: the address was not used")
	}
	t.Logf("refused as it should be: %v", err)
	if d, found, err := env.pool.Domain(ctx, info.AlphaURI, vm.Name); err != nil || !found || d.State != StateRunning {
		t.Fatalf("after the failed migration the guest on alpha is %+v (found %v, %v), want running", d, found, err)
	}

	if err := env.pool.Migrate(ctx, vm.Name, info.AlphaURI, info.BetaURI, MigrateOptions{Address: "127.0.0.3"}); err != nil {
		t.Fatalf("migrate to beta's own address: %v", err)
	}
	if d, found, err := env.pool.Domain(ctx, info.BetaURI, vm.Name); err != nil || !found || d.State != StateRunning {
		t.Fatalf("guest on beta: %+v (found %v, %v), want running", d, found, err)
	}
}
