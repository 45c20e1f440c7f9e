package iscsi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// writeGate lets a Hold stop the commands that change a volume's data
// (see changesData) while reads go on. A command passes the gate (enter)
// before it touches the file and leaves it when done; while a hold is on,
// new commands wait at the gate and the hold waits for those already past
// it to drain.
type writeGate struct {
	// mu guards everything below.
	mu      sync.Mutex
	holds   int           // holds in force; the gate is shut while > 0
	open    chan struct{} // closed when the last hold ends; nil while no hold
	active  int           // commands past the gate
	idle    chan struct{} // closed when active drops to 0 during a hold
	waiting int           // commands waiting at the gate
}

// errGateClosed is what a command waiting at a shut gate gets when its
// session goes away meanwhile.
var errGateClosed = errors.New("session closed while writes were held")

// enter lets a command through, waiting while a hold is on, unless cancel
// (the session's end) comes first.
func (g *writeGate) enter(cancel <-chan struct{}) error {
	g.mu.Lock()
	for g.holds > 0 {
		open := g.open
		g.waiting++
		g.mu.Unlock()
		select {
		case <-open:
		case <-cancel:
			g.mu.Lock()
			g.waiting--
			g.mu.Unlock()
			return errGateClosed
		}
		g.mu.Lock()
		g.waiting--
	}
	g.active++
	g.mu.Unlock()
	return nil
}

// tryEnter lets a command through if no hold is on; it never waits.
func (g *writeGate) tryEnter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds > 0 {
		return false
	}
	g.active++
	return true
}

func (g *writeGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
}

// shut starts a hold. It returns a channel that is closed once the commands
// already past the gate have finished, or nil if there are none.
func (g *writeGate) shut() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holds++
	if g.holds == 1 {
		g.open = make(chan struct{})
	}
	if g.active == 0 {
		return nil
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	return g.idle
}

// reopen ends one hold; the waiting commands go on when the last one ends.
func (g *writeGate) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holds--
	if g.holds == 0 {
		close(g.open)
		g.open = nil
	}
}

func (g *writeGate) state() (active, waiting int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active, g.waiting
}

// changesData reports whether a SCSI opcode may change the data of a volume
// or its durability, and so has to wait while writes are held: WRITE(6/10/12/16),
// WRITE AND VERIFY(10/12/16), WRITE SAME(10/16), UNMAP, SYNCHRONIZE
// CACHE(10/16), FORMAT UNIT, COMPARE AND WRITE and ORWRITE(16).
func changesData(op byte) bool {
	switch op {
	case opWrite6, opWrite10, opWrite12, opWrite16,
		opWriteVerify10, opWriteVerify12, opWriteVerify16,
		opWriteSame10, opWriteSame16,
		opUnmap,
		opSyncCache10, opSyncCache16,
		opFormatUnit,
		opCompareAndWrite, opORWrite16:
		return true
	}
	return false
}

// Hold is writes held on a set of volumes; see Engine.Hold.
type Hold struct {
	e       *Engine
	names   []string
	gates   []*writeGate
	limit   time.Duration
	start   time.Time
	timer   *time.Timer
	expired chan struct{}

	once       sync.Once
	hadExpired bool // set inside once
}

// Hold stops the commands that change data (see changesData) on the named
// volumes, waits for those already running to finish, and returns with
// every one of the volumes quiet: from then until Release, nothing reaches
// their files but reads. Commands that arrive meanwhile wait in the engine
// (reads go on) and run after Release, in their order.
//
// limit bounds the whole hold, draining included, so that no initiator
// waits longer than that: if the running commands have not finished within
// limit, Hold gives up and returns an error naming the busy volumes; if the
// caller has not released the hold within limit, the engine releases it by
// itself, closes Expired and Release reports it. Volumes not exported are
// skipped: no initiator can write to them.
func (e *Engine) Hold(ctx context.Context, names []string, limit time.Duration) (*Hold, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("hold writes: limit %s: give a positive duration", limit)
	}
	h := &Hold{e: e, limit: limit, start: time.Now(), expired: make(chan struct{})}
	e.mu.Lock()
	for _, name := range names {
		if v, ok := e.volumes[name]; ok && !slices.Contains(h.names, name) {
			h.names = append(h.names, name)
			h.gates = append(h.gates, &v.unit.gate)
		}
	}
	e.mu.Unlock()

	drained := make([]<-chan struct{}, len(h.gates))
	for i, g := range h.gates {
		drained[i] = g.shut()
	}
	h.timer = time.AfterFunc(limit, func() { h.end(true) })
	for i, d := range drained {
		if d == nil {
			continue
		}
		select {
		case <-d:
		case <-h.expired:
			return nil, fmt.Errorf("hold writes: after %s, writes were still running on %s; nothing was held (retry, or pause the VM first)", limit, h.busy())
		case <-ctx.Done():
			h.Release()
			return nil, fmt.Errorf("hold writes on %s: %w", h.names[i], ctx.Err())
		}
	}
	e.log.Debug("writes held", "volumes", strings.Join(h.names, ","), "drain", time.Since(h.start))
	return h, nil
}

// busy names the volumes that still have commands running.
func (h *Hold) busy() string {
	var out []string
	for i, g := range h.gates {
		if active, _ := g.state(); active > 0 {
			out = append(out, fmt.Sprintf("%s (%d in flight)", h.names[i], active))
		}
	}
	if len(out) == 0 {
		return strings.Join(h.names, ", ")
	}
	return strings.Join(out, ", ")
}

// end reopens the gates, once, whether by Release or by the time limit.
func (h *Hold) end(expire bool) {
	h.once.Do(func() {
		for _, g := range h.gates {
			g.reopen()
		}
		if expire {
			h.hadExpired = true
			close(h.expired)
			h.e.log.Warn("write hold reached its time limit and was released", "volumes", strings.Join(h.names, ","), "limit", h.limit)
		}
	})
}

// Release lets the held commands run. It is safe to call more than once;
// it returns an error if the hold had already ended at its time limit, so
// that whatever needed the volumes quiet can be thrown away.
func (h *Hold) Release() error {
	h.timer.Stop() // not in end: the timer's own call must not read h.timer
	h.end(false)
	if h.hadExpired {
		return fmt.Errorf("writes to %s were held for the longest allowed %s and released before the hold was over", strings.Join(h.names, ", "), h.limit)
	}
	h.e.log.Debug("writes released", "volumes", strings.Join(h.names, ","), "held", time.Since(h.start))
	return nil
}

// Expired is closed when the hold ends at its time limit.
func (h *Hold) Expired() <-chan struct{} { return h.expired }

// Volumes names the volumes the hold covers (those exported).
func (h *Hold) Volumes() []string { return slices.Clone(h.names) }
