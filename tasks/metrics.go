package tasks

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's Prometheus series. They are registered on Config.Metrics when set.
type metrics struct {
	deliveries  *prometheus.CounterVec
	sendSeconds *prometheus.HistogramVec
	dispatches  *prometheus.CounterVec
	inDoubt     prometheus.Counter
	enqueued    *prometheus.CounterVec
	rejected    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_deliveries_total",
			Help: "Delivery attempts by transport and recorded outcome (sent, retrying, failed, expired, skipped).",
		}, []string{"transport", "outcome"}),
		sendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_send_duration_seconds",
			Help:    "Time spent in the transport's Send, by transport.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"transport"}),
		dispatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_dispatches_total",
			Help: "Fan-out outcomes (fanned_out, retrying, failed) and dispatches settled on first sight (duplicate, rejected).",
		}, []string{"outcome"}),
		inDoubt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_in_doubt_reclaims_total",
			Help: "Deliveries reclaimed after a worker stopped mid-send: each may have been sent twice (same Message-ID).",
		}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_promoter_enqueued_total",
			Help: "Tasks the promoter handed to asynq (outbox rows, retries, long delays, lost tasks, reclaims), by task type.",
		}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_rejected_tasks_total",
			Help: "Tasks recorded in herald.rejected_tasks (malformed payloads, missing rows), by task type.",
		}, []string{"type"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.deliveries, m.sendSeconds, m.dispatches, m.inDoubt, m.enqueued, m.rejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
