package hypervisor

import (
	"context"
	"testing"
	"time"
)

func TestAccQuiescePausesAGuestWithoutAnAgentAndResumesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	vm := env.guest(t, ctx, "drover-quiesce-test")
	alpha := env.info.AlphaURI
	if _, err := env.pool.CreateVM(ctx, alpha, vm); err != nil {
		t.Fatal(err)
	}
	waitAlive(t, vm.ConsoleLog, 1, time.Minute)

	// The lab guest runs no guest agent: asked for one, Quiesce says why
	// not and pauses the VM instead.
	q, release, err := env.pool.Quiesce(ctx, alpha, vm.Name, true)
	if err != nil {
		t.Fatal(err)
	}
	if q.How != QuiescedByPause || q.Consistency != ConsistencyCrash || q.AgentError == "" {
		t.Errorf("got %+v, want paused, crash-consistent, with the agent's error", q)
	}
	if d, _, err := env.pool.Domain(ctx, alpha, vm.Name); err != nil || d.State != StatePaused {
		t.Fatalf("while quiesced the VM is %s (%v), want paused", d.State, err)
	}
	time.Sleep(50 * time.Millisecond)
	held, err := release(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if held < 50*time.Millisecond || held > 30*time.Second {
		t.Errorf("held %s, want from 50 ms (the sleep) to well under 30 s", held)
	}
	if d, _, err := env.pool.Domain(ctx, alpha, vm.Name); err != nil || !d.State.Active() || d.State == StatePaused {
		t.Fatalf("after release the VM is %s (%v), want running", d.State, err)
	}

	// Not asked for the agent, it pauses without trying.
	q, release, err = env.pool.Quiesce(ctx, alpha, vm.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	if q.How != QuiescedByPause || q.AgentError != "" {
		t.Errorf("got %+v, want paused without asking an agent", q)
	}
	if _, err := release(ctx); err != nil {
		t.Fatal(err)
	}

	// A VM that is not running stands still already.
	if _, err := env.pool.Shutdown(ctx, alpha, vm.Name, time.Minute); err != nil {
		t.Fatal(err)
	}
	q, release, err = env.pool.Quiesce(ctx, alpha, vm.Name, true)
	if err != nil {
		t.Fatal(err)
	}
	if q.How != QuiescedStopped || q.Consistency != ConsistencyFilesystem {
		t.Errorf("got %+v for a VM that shut down when asked, want stopped, filesystem-consistent", q)
	}
	if held, err := release(ctx); err != nil || held != 0 {
		t.Errorf("release of a stopped VM: %s, %v; want nothing held", held, err)
	}
}
