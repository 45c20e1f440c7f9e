package iscsi

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the per-volume collectors; each volume gets curried children.
type metrics struct {
	bytes    *prometheus.CounterVec
	ops      *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	sessions *prometheus.GaugeVec
	refused  *prometheus.CounterVec
	// fenced and fencedLogins: see fence.go.
	fenced       prometheus.Gauge
	fencedLogins prometheus.Counter
}

// Reasons of drover_iscsi_connections_refused_total: why a connection was
// refused or ended by one of the target's limits.
const (
	refusedPendingLogins        = "pending_logins"          // oldest pending login closed to make room
	refusedPendingLoginsPerAddr = "pending_logins_per_addr" // source address already at its bound
	refusedLoginTimeout         = "login_timeout"           // login not finished within the deadline
	refusedSegmentTooLong       = "data_segment_too_long"   // a PDU announced more data than allowed
	refusedLoginTextTooLong     = "login_text_too_long"     // continued login text past loginTextMax
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "bytes_total",
			Help: "Bytes read from or written to a volume over iSCSI.",
		}, []string{"volume", "op"}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "operations_total",
			Help: "Read, write, flush and unmap operations on a volume.",
		}, []string{"volume", "op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "operation_duration_seconds",
			Help:    "Time spent in the backing file per operation.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 4, 9),
		}, []string{"volume", "op"}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "sessions",
			Help: "iSCSI sessions logged in to a volume.",
		}, []string{"volume"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "connections_refused_total",
			Help: "Connections refused or ended by the target's limits (pending logins, login deadline, PDU and login text sizes), by reason.",
		}, []string{"reason"}),
		fenced: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "fenced_initiators",
			Help: "Initiators fenced: refused at login whatever the allow-lists say.",
		}),
		fencedLogins: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "drover", Subsystem: "iscsi", Name: "fenced_logins_refused_total",
			Help: "Logins refused because the initiator is fenced.",
		}),
	}
	for _, r := range []string{refusedPendingLogins, refusedPendingLoginsPerAddr, refusedLoginTimeout, refusedSegmentTooLong, refusedLoginTextTooLong} {
		m.refused.WithLabelValues(r) // every reason shows, at 0 until it happens
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.bytes, m.ops, m.latency, m.sessions, m.refused, m.fenced, m.fencedLogins} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) countRefused(reason string) { m.refused.WithLabelValues(reason).Inc() }

type volumeMetrics struct {
	readBytes, writeBytes                 prometheus.Counter
	readOps, writeOps, flushOps, unmapOps prometheus.Counter
	readLat, writeLat, flushLat, unmapLat prometheus.Observer
	sessions                              prometheus.Gauge
}

func (m *metrics) forVolume(name string) *volumeMetrics {
	return &volumeMetrics{
		readBytes:  m.bytes.WithLabelValues(name, "read"),
		writeBytes: m.bytes.WithLabelValues(name, "write"),
		readOps:    m.ops.WithLabelValues(name, "read"),
		writeOps:   m.ops.WithLabelValues(name, "write"),
		flushOps:   m.ops.WithLabelValues(name, "flush"),
		unmapOps:   m.ops.WithLabelValues(name, "unmap"),
		readLat:    m.latency.WithLabelValues(name, "read"),
		writeLat:   m.latency.WithLabelValues(name, "write"),
		flushLat:   m.latency.WithLabelValues(name, "flush"),
		unmapLat:   m.latency.WithLabelValues(name, "unmap"),
		sessions:   m.sessions.WithLabelValues(name),
	}
}

func (m *metrics) dropVolume(name string) {
	for _, op := range []string{"read", "write", "flush", "unmap"} {
		m.bytes.DeleteLabelValues(name, op)
		m.ops.DeleteLabelValues(name, op)
		m.latency.DeleteLabelValues(name, op)
	}
	m.sessions.DeleteLabelValues(name)
}

func (v *volumeMetrics) observeRead(n int, d time.Duration) {
	v.readBytes.Add(float64(n))
	v.readOps.Inc()
	v.readLat.Observe(d.Seconds())
}

func (v *volumeMetrics) observeWrite(n int, d time.Duration) {
	v.writeBytes.Add(float64(n))
	v.writeOps.Inc()
	v.writeLat.Observe(d.Seconds())
}

func (v *volumeMetrics) observeFlush(d time.Duration) {
	v.flushOps.Inc()
	v.flushLat.Observe(d.Seconds())
}

func (v *volumeMetrics) observeUnmap(d time.Duration) {
	v.unmapOps.Inc()
	v.unmapLat.Observe(d.Seconds())
}
