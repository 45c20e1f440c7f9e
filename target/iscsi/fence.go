package iscsi

import (
	"context"
	"fmt"
)

// Fence shuts an initiator out of every volume, whatever the allow-lists
// and CHAP say: its logins are refused from now on (Login Reject 0x0202,
// authorization failure, for normal and discovery sessions alike), every
// session it has is closed, and Fence waits until they have ended. A
// session ends after the commands it had read off the socket have finished
// or given up (a write waiting at a hold gives up), so once Fence returns
// nil no write of the initiator reaches a backing file any more. Then its
// persistent-reservation registrations go (RemoveInitiator), as a PREEMPT
// AND ABORT of its keys would.
//
// Fencing is by initiator name: a reconnecting initiator comes back with a
// new ISID, and is refused all the same. Fence is idempotent. If ctx ends
// before the sessions have, the fence stays in force (logins refused,
// sessions closing) and Fence reports how many had not ended; the
// registrations are removed by the next Fence.
func (e *Engine) Fence(ctx context.Context, initiator string) error {
	e.mu.Lock()
	if e.fenced == nil {
		e.fenced = map[string]bool{}
	}
	e.fenced[initiator] = true
	e.metrics.fenced.Set(float64(len(e.fenced)))
	var gone []*session
	for s := range e.sessions {
		if s.initiator == initiator {
			gone = append(gone, s)
		}
	}
	e.mu.Unlock()
	for _, s := range gone {
		s.close()
	}
	for i, s := range gone {
		select {
		case <-s.done:
		case <-ctx.Done():
			return fmt.Errorf("fence %s: %d of its %d sessions have not ended yet (logins are refused): %w", initiator, len(gone)-i, len(gone), ctx.Err())
		}
	}
	if len(gone) > 0 {
		e.log.Warn("fenced initiator's sessions closed", "initiator", initiator, "sessions", len(gone))
	}
	changed, err := e.RemoveInitiator(initiator)
	if len(changed) > 0 {
		e.log.Warn("fenced initiator's reservation registrations removed", "initiator", initiator, "volumes", changed)
	}
	if err != nil {
		return fmt.Errorf("fence %s: remove its reservation registrations: %w", initiator, err)
	}
	return nil
}

// Unfence lets a fenced initiator log in again (as far as the allow-lists
// and CHAP let it). It is a no-op for an initiator that is not fenced.
func (e *Engine) Unfence(initiator string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.fenced, initiator)
	e.metrics.fenced.Set(float64(len(e.fenced)))
}

// Fenced lists the fenced initiators, in no particular order.
func (e *Engine) Fenced() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.fenced))
	for name := range e.fenced {
		out = append(out, name)
	}
	return out
}

func (e *Engine) isFenced(initiator string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fenced[initiator]
}

// refuseFenced is the login's check of the fences; it comes before the
// allow-list and CHAP, so a fence outranks them.
func (l *login) refuseFenced() error {
	if !l.e.isFenced(l.initiator) {
		return nil
	}
	l.e.metrics.fencedLogins.Inc()
	return refuse(loginForbidden, "initiator is fenced")
}
