package apitest

import (
	"sync"
	"time"
)

// Clock is a fake clock for backup schedules (schedule.Options.Now and
// After): time moves only when a test advances it. It starts at the real
// time, which the store stamps schedules and sets with.
type Clock struct {
	mu      sync.Mutex // guards now and waiters
	now     time.Time
	waiters []clockWaiter
}

type clockWaiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a Clock at the real time now.
func NewClock() *Clock { return &Clock{now: time.Now()} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After delivers the clock's time once it has moved d on.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, clockWaiter{c.now.Add(d), ch})
	return ch
}

// Advance moves the clock d on and wakes the waiters whose time came.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// AdvancePastNow moves the clock d on from whichever is later, its time or
// the real time: the store stamps schedules with the real time, so a
// clock that fell behind it (a slow machine between NewClock and a
// schedule's creation) would otherwise not reach the schedule's next run.
func (c *Clock) AdvancePastNow(d time.Duration) {
	if lag := time.Since(c.Now()); lag > 0 {
		d += lag
	}
	c.Advance(d)
}
