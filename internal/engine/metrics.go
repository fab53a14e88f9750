package engine

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/tasks"
)

// metrics are the worker's Prometheus series. They are registered on Config.Metrics when set.
type metrics struct {
	deliveries      *prometheus.CounterVec
	sendSeconds     *prometheus.HistogramVec
	dispatches      *prometheus.CounterVec
	inDoubtReclaims prometheus.Counter
	inDoubt         *prometheus.CounterVec
	enqueued        *prometheus.CounterVec
	rejected        *prometheus.CounterVec
	newerPayloads   *prometheus.CounterVec
	retention       *prometheus.CounterVec
}

// The tables the retention sweep deletes from, as label values of herald_retention_deleted_total.
const (
	tableReceipts      = "receipts"
	tableDispatches    = "dispatches"
	tableRejectedTasks = "rejected_tasks"
	tableDevMailbox    = "dev_mailbox"
)

// The counted windows of DESIGN.md, as label values of herald_in_doubt_total.
const (
	inDoubtReclaim   = "reclaim"
	inDoubtLostReply = "lost_reply"
	inDoubtOvertaken = "overtaken"
)

func newMetrics(reg prometheus.Registerer, waitingForDB func() int) (*metrics, error) {
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
		inDoubtReclaims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_in_doubt_reclaims_total",
			Help: "Deliveries reclaimed from an attempt that was sending when its lease expired (a worker stopped mid-send): each may have been sent twice (same Message-ID).",
		}),
		inDoubt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_in_doubt_total",
			Help: "Deliveries that may have been sent twice, by counted window (DESIGN.md): reclaim (a worker died after the transport's accept), lost_reply (the reply after the final \".\" was lost), overtaken (a confirmed send recorded after a reclaim during a PostgreSQL outage).",
		}, []string{"window"}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_promoter_enqueued_total",
			Help: "Tasks the promoter handed to asynq (outbox rows, retries, long delays, lost tasks, reclaims), by task type.",
		}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_rejected_tasks_total",
			Help: "Tasks recorded in herald.rejected_tasks (malformed payloads, missing rows), by task type.",
		}, []string{"type"}),
		newerPayloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_newer_payloads_total",
			Help: "Task runs whose payload has a newer major version than this worker understands (a newer release's task during a rolling deploy): handed back to asynq for a newer worker, or, on the last try, kept in herald.rejected_tasks. By task type.",
		}, []string{"task_type"}),
	}
	for _, typ := range []string{tasks.TypeDispatch, tasks.TypeDeliver} {
		m.newerPayloads.WithLabelValues(typ) // present from start-up: an alert can watch its rate
	}
	m.retention = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herald_retention_deleted_total",
		Help: "Rows the retention sweep deleted, by table: final receipts and dispatches past HERALD_RETENTION, rejected tasks past HERALD_REJECTED_RETENTION, development mailbox messages past HERALD_MAILBOX_RETENTION.",
	}, []string{"table"})
	for _, table := range []string{tableReceipts, tableDispatches, tableRejectedTasks, tableDevMailbox} {
		m.retention.WithLabelValues(table) // present from start-up, at zero
	}
	if reg == nil {
		return m, nil
	}
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "herald_tasks_waiting_for_postgres",
		Help: "Tasks this worker handed back to asynq because PostgreSQL was unreachable; they retry with their own backoff and never use up their retries.",
	}, func() float64 { return float64(waitingForDB()) })
	for _, c := range []prometheus.Collector{m.deliveries, m.sendSeconds, m.dispatches, m.inDoubtReclaims, m.inDoubt, m.enqueued, m.rejected, m.newerPayloads, m.retention, waiting} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
