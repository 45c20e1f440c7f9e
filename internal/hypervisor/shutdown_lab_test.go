package hypervisor

import (
	"context"
	"regexp"
	"testing"
	"time"
)

func TestAccAGuestStillBootingIsShutDownNotPoweredOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	vm := env.guest(t, ctx, "drover-shutdown-test")
	alpha := env.info.AlphaURI
	if _, err := env.pool.CreateVM(ctx, alpha, vm); err != nil {
		t.Fatal(err)
	}
	// At once, while the guest's init is not listening to the power
	// button yet: the first press is lost, a later one is not.
	start := time.Now()
	forced, err := env.pool.Shutdown(ctx, alpha, vm.Name, 45*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if forced {
		t.Fatalf("the guest was powered off hard after %s: it never saw a power button press", time.Since(start).Round(time.Second))
	}
	t.Logf("the guest powered itself off %s after the first press", time.Since(start).Round(100*time.Millisecond))
	waitConsole(t, vm.ConsoleLog, regexp.MustCompile(`drover-guest: power button, shutting down`), 10*time.Second)
}
