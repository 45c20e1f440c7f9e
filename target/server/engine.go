package server

import (
	"context"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/iscsi"
)

// Defaults of LoginLimits: the engine's.
const (
	DefaultLoginTimeout            = iscsi.DefaultLoginTimeout
	DefaultMaxPendingLogins        = iscsi.DefaultMaxPendingLogins
	DefaultMaxPendingLoginsPerAddr = iscsi.DefaultMaxPendingLoginsPerAddr
)

// newISCSIEngine starts the real iSCSI engine.
func newISCSIEngine(c EngineConfig) (Exporter, error) {
	e, err := iscsi.New(iscsi.Config{
		Listen: c.Listen, Logger: c.Logger, Registerer: c.Registerer,
		LoginTimeout: c.Logins.Timeout, MaxPendingLogins: c.Logins.MaxPending, MaxPendingLoginsPerAddr: c.Logins.MaxPendingPerAddr,
		Reservations: c.Reservations, WriteGuards: c.WriteGuards,
	})
	if err != nil {
		return nil, err
	}
	return engine{e}, nil
}

// engine adapts *iscsi.Engine to Exporter and api.Holder. The API keeps its
// own export types so that it, and its tests, do not depend on the engine
// (and gotgt).
type engine struct{ e *iscsi.Engine }

var _ api.Holder = engine{}

func (g engine) Add(ex api.Export) error    { return g.e.Add(toISCSI(ex)) }
func (g engine) Update(ex api.Export) error { return g.e.Update(toISCSI(ex)) }
func (g engine) Remove(name string) error   { return g.e.Remove(name) }
func (g engine) Close() error               { return g.e.Close() }

// Fence and Unfence are iscsi.Engine's (api.Fencer).
func (g engine) Fence(ctx context.Context, initiator string) error {
	return g.e.Fence(ctx, initiator)
}
func (g engine) Unfence(initiator string) { g.e.Unfence(initiator) }

// HoldWrites holds the writes to volumes in the engine (iscsi.Engine.Hold).
func (g engine) HoldWrites(ctx context.Context, volumes []string, limit time.Duration) (api.WriteHold, error) {
	h, err := g.e.Hold(ctx, volumes, limit)
	if err != nil {
		return nil, err // not h: a nil *iscsi.Hold in an interface is not nil
	}
	return h, nil
}

func (g engine) Sessions() []wire.Session {
	ss := g.e.Sessions()
	out := make([]wire.Session, len(ss))
	for i, s := range ss {
		out[i] = wire.Session{Volume: s.Volume, TargetIQN: s.TargetIQN, Initiator: s.Initiator, RemoteAddr: s.RemoteAddr, Since: s.Since}
	}
	return out
}

func toISCSI(ex api.Export) iscsi.Export {
	out := iscsi.Export{Name: ex.Name, IQN: ex.IQN, LUN: ex.LUN, Path: ex.Path, Initiators: ex.Initiators}
	if ex.CHAP != nil {
		c := *ex.CHAP // the engine's own copy
		out.CHAP = &c
	}
	return out
}
