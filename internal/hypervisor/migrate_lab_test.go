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

// labInfo returns the running lab when DROVER_LAB=1 is set and skips the test
// otherwise. With DROVER_LAB=1 and no lab, the test fails: a missing lab must
// not pass as a green run.
func labInfo(t *testing.T) lab.Info {
	t.Helper()
	if os.Getenv("DROVER_LAB") != "1" {
		t.Skip("set DROVER_LAB=1 to run against the lab (make lab)")
	}
	info, err := lab.Find()
	if err != nil {
		t.Fatalf("DROVER_LAB=1 but no lab: %v", err)
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
		Boot:       Boot{Kernel: info.GuestKernel, Initrd: info.GuestInitrd, Cmdline: "console=ttyS0"},
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
