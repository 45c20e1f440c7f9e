package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/hypervisor"
	"github.com/drover/terraform-provider-drover/internal/placement"
)

func TestAVMInFlightCountsOnItsSourceAndItsDestination(t *testing.T) {
	t.Parallel()
	// a (1024 MiB) is migrating from alpha to beta: libvirt shows it on both
	// (the destination's copy is paused until the switch-over).
	alpha := testHost("alpha", true, testVM{name: "a"})
	beta := testHost("beta", false, testVM{name: "a"})
	view := View{Hosts: []HostView{alpha, beta}, Booked: map[string]Booking{
		"a": {VM: placement.VM{Name: "a", MemoryMiB: 1024, VCPUs: 1}, Host: "beta", From: "alpha"},
	}}
	if err := view.CheckDefinedOnce(); err != nil {
		t.Fatalf("a VM in flight is on both hosts by design, got %v", err)
	}
	c := view.PlacementCluster("")
	if len(c.VMs) != 1 || c.VMs[0].Name != "a" || c.VMs[0].Current != "beta" || !c.VMs[0].Fixed {
		t.Fatalf("VMs = %+v, want a alone, fixed on beta", c.VMs)
	}
	if c.Hosts[0].ForeignMemoryMiB != 1024 || c.Hosts[1].ForeignMemoryMiB != 0 {
		t.Errorf("foreign memory alpha %d, beta %d; want 1024 on the source until the move is done, 0 on beta",
			c.Hosts[0].ForeignMemoryMiB, c.Hosts[1].ForeignMemoryMiB)
	}

	// b, planned while a is in flight, finds beta's room minus a: 3584 - 1024
	// is left there, so b of 3072 MiB does not fit anywhere.
	alpha.Facts.Domains = append(alpha.Facts.Domains, hypervisor.Domain{Name: "b", UUID: "uuid-b", MaxMemoryMiB: 3072, VCPUs: 1, State: hypervisor.StateRunning})
	alpha.VMs["b"] = hypervisor.VM{Name: "b", MemoryMiB: 3072, MaxMemoryMiB: 3072, VCPUs: 1, Managed: true}
	view.Hosts[0] = alpha
	_, err := view.PlanMove(hypervisor.VM{Name: "b", MemoryMiB: 3072, VCPUs: 1}, placement.Options{})
	if err == nil || !strings.Contains(err.Error(), "beta: 2560 MiB free, needs 3072") {
		t.Errorf("got %v, want b refused on beta, whose room a has booked", err)
	}
}

func TestADecisionIsBookedUntilItIsDone(t *testing.T) {
	t.Parallel()
	p := NewPlacer(2)
	done, err := p.Decide(func(booked map[string]Booking) (*Booking, error) {
		if len(booked) != 0 {
			t.Errorf("booked = %v, want nothing yet", booked)
		}
		return &Booking{VM: placement.VM{Name: "a"}, Host: "beta", From: "alpha"}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := func() map[string]Booking {
		var got map[string]Booking
		_, _ = p.Decide(func(booked map[string]Booking) (*Booking, error) { got = booked; return nil, nil })
		return got
	}
	if got := seen(); got["a"].Host != "beta" {
		t.Errorf("while a is under way, decisions see %v, want a booked on beta", got)
	}
	done()
	done() // twice is harmless
	if got := seen(); len(got) != 0 {
		t.Errorf("after done, decisions see %v, want nothing", got)
	}
	_, err = p.Decide(func(map[string]Booking) (*Booking, error) {
		return &Booking{VM: placement.VM{Name: "x"}}, errors.New("no room")
	})
	if err == nil || len(seen()) != 0 {
		t.Errorf("a failed decision: err %v, booked %v; want the error and nothing booked", err, seen())
	}
}

func TestMovesAreBoundedPerHost(t *testing.T) {
	t.Parallel()
	p := NewPlacer(2)
	ctx := context.Background()
	r1, err := p.MoveSlots(ctx, "alpha", "beta")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := p.MoveSlots(ctx, "beta", "alpha") // the other direction
	if err != nil {
		t.Fatal(err)
	}
	// A third move off alpha waits until one of the two ends.
	third := make(chan error, 1)
	go func() {
		r, err := p.MoveSlots(ctx, "alpha", "gamma")
		if err == nil {
			r()
		}
		third <- err
	}()
	select {
	case err := <-third:
		t.Fatalf("a third move on alpha started at once (err %v); want it to wait", err)
	case <-time.After(100 * time.Millisecond):
	}
	r1()
	if err := <-third; err != nil {
		t.Fatal(err)
	}
	// A wait is bounded by its context, and names the host.
	r3, _ := p.MoveSlots(ctx, "beta")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.MoveSlots(short, "beta"); err == nil || !strings.Contains(err.Error(), "host beta (at most 2 moves at once per host)") {
		t.Errorf("got %v, want a timeout naming beta and the bound", err)
	}
	r2()
	r3()
	r2() // releasing twice frees nothing twice
	again, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	if r, err := p.MoveSlots(again, "alpha", "beta"); err != nil {
		t.Errorf("after every release, got %v", err)
	} else {
		r()
	}
}

func TestOppositeMovesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	p := NewPlacer(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := "alpha", "beta"
			if i%2 == 1 {
				from, to = to, from
			}
			r, err := p.MoveSlots(ctx, from, to)
			if err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Millisecond)
			r()
		}()
	}
	wg.Wait()
}
