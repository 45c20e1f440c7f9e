package iscsi

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// gotgt logs through logrus's package-level logger. We silence its output and
// forward entries to the slog logger of the most recently started Engine:
// warnings from gotgt are mostly initiator-triggered sense conditions, so they
// go to Debug, and only errors reach Warn.
var (
	logrusOnce   sync.Once
	logrusTarget atomic.Pointer[slog.Logger]
)

type logrusHook struct{}

func (logrusHook) Levels() []logrus.Level { return logrus.AllLevels }

func (logrusHook) Fire(e *logrus.Entry) error {
	l := logrusTarget.Load()
	if l == nil {
		return nil
	}
	level := slog.LevelDebug
	if e.Level <= logrus.ErrorLevel {
		level = slog.LevelWarn
	}
	l.Log(context.Background(), level, e.Message, "component", "gotgt")
	return nil
}

func routeGotgtLogs(l *slog.Logger) {
	logrusTarget.Store(l)
	logrusOnce.Do(func() {
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.WarnLevel)
		logrus.AddHook(logrusHook{})
	})
}
