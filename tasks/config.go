package tasks

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/templates"
)

// Config configures a Worker. Zero durations and counts take the documented defaults.
type Config struct {
	// Redis is the asynq connection. Required.
	Redis asynq.RedisConnOpt
	// DB is the PostgreSQL pool holding the herald schema. Required.
	DB *pgxpool.Pool
	// Registry holds the event types and loaders. Required.
	Registry *events.Registry
	// Renderer renders templates. Defaults to templates.New(Registry).
	Renderer *templates.Renderer
	// Senders deliver, by transport name ("email", …).
	Senders map[string]channels.Sender
	// SecretKeys is HERALD_SECRET_KEYS: "kid:base64key,…". Required.
	SecretKeys string
	// Logger receives the worker's logs. Defaults to a disabled logger.
	Logger *zerolog.Logger
	// MailFrom is the default sender of email. Required when an "email" sender is configured.
	MailFrom events.Address
	// MessageIDDomain is the right-hand side of Message-IDs. Defaults to MailFrom's domain.
	MessageIDDomain string
	// Metrics, when set, receives the worker's Prometheus collectors (herald_*).
	Metrics prometheus.Registerer

	// Queue is the asynq queue for both task types. Defaults to "herald".
	Queue string
	// Concurrency is how many tasks run at once. Defaults to 10.
	Concurrency int
	// Lease is how long a claim holds a dispatch or receipt. Defaults to 2m; must exceed SendTimeout.
	Lease time.Duration
	// TaskTimeout bounds one task run. Defaults to 60s; must be below Lease.
	TaskTimeout time.Duration
	// SendTimeout bounds one transport send. Defaults to 30s.
	SendTimeout time.Duration
	// ShutdownTimeout is how long shutdown waits for running tasks. Defaults to 40s; must exceed SendTimeout.
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how often idle workers poll for tasks. Defaults to 50ms (measured: the
	// p50 pickup latency of an idle worker is about this interval).
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often scheduled tasks are moved to pending. Defaults to 1s.
	DelayedTaskCheckInterval time.Duration
	// PromoterInterval is the promoter's tick. Defaults to 1s.
	PromoterInterval time.Duration
	// Horizon: work due within it is handed to asynq as a scheduled task; later work waits in
	// Postgres for the promoter. Defaults to 60s.
	Horizon time.Duration
	// RequeueAfter is how long the promoter waits before enqueueing again work it already
	// enqueued that has not run (a task Redis lost). Defaults to 30s.
	RequeueAfter time.Duration
	// SweepInterval is how often secrets are scrubbed and idempotency keys released. Defaults to 1m.
	SweepInterval time.Duration
	// BackoffMin and BackoffMax bound retry delays. Default 5s and 10m.
	BackoffMin, BackoffMax time.Duration
	// MaxAttempts is the default number of delivery (and fan-out) attempts. Defaults to 10.
	MaxAttempts int
	// UnknownEventFor is how long a dispatch of an unregistered event is retried (rolling
	// deploys) before it fails. Defaults to 10m.
	UnknownEventFor time.Duration
	// NewerPayloadFor is how long a task whose payload has a newer major version than this worker
	// understands is retried (rolling deploys: a newer worker takes it) before it is recorded in
	// herald.rejected_tasks, payload kept, and dropped. Defaults to 1h.
	NewerPayloadFor time.Duration
	// MissingRowRetries is how many times a fan-out retries a reference whose row is missing
	// (commit-visibility races). Defaults to 3.
	MissingRowRetries int
	// MissingRowDelay is the wait between those retries. Defaults to 2s.
	MissingRowDelay time.Duration
	// IdempotencyWindow is how long an idempotency key holds. Defaults to 24h.
	IdempotencyWindow time.Duration
	// SecretRetention is how long sealed secrets are kept at most. Defaults to 7 days.
	SecretRetention time.Duration
	// Retention is how long final dispatches and receipts are kept after they last changed; the
	// sweeper then deletes them in small batches (a dispatch once its last receipt has gone). Rows
	// that are not final are never deleted. Defaults to 90 days; must exceed IdempotencyWindow and
	// NewerPayloadFor.
	Retention time.Duration
	// RejectedRetention is how long rows of herald.rejected_tasks are kept. Defaults to 90 days.
	RejectedRetention time.Duration
	// MailboxRetention is how long the development mailbox keeps a message. Defaults to 7 days.
	MailboxRetention time.Duration
	// FanoutChunk is how many receipts a fan-out commits at a time. Each chunk commits with the
	// fan-out's progress and extends its lease, so a fan-out to millions of recipients uses bounded
	// memory and resumes after a crash. Defaults to 1000.
	FanoutChunk int
	// DisableInline turns off delivering a fan-out's single immediate delivery in the same task.
	DisableInline bool
	// AsynqRetries is how often asynq re-runs a task whose handler could not reach Postgres.
	// Defaults to 8; at least 2 (a newer payload waits with all but the last, kept spare).
	AsynqRetries int
}

func (c Config) withDefaults() Config {
	c.Queue = cmp.Or(c.Queue, "herald")
	c.Concurrency = cmp.Or(c.Concurrency, 10)
	c.Lease = cmp.Or(c.Lease, 2*time.Minute)
	c.TaskTimeout = cmp.Or(c.TaskTimeout, 60*time.Second)
	c.SendTimeout = cmp.Or(c.SendTimeout, 30*time.Second)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 40*time.Second)
	c.TaskCheckInterval = cmp.Or(c.TaskCheckInterval, 50*time.Millisecond)
	c.DelayedTaskCheckInterval = cmp.Or(c.DelayedTaskCheckInterval, time.Second)
	c.PromoterInterval = cmp.Or(c.PromoterInterval, time.Second)
	c.Horizon = cmp.Or(c.Horizon, 60*time.Second)
	c.RequeueAfter = cmp.Or(c.RequeueAfter, 30*time.Second)
	c.SweepInterval = cmp.Or(c.SweepInterval, time.Minute)
	c.BackoffMin = cmp.Or(c.BackoffMin, 5*time.Second)
	c.BackoffMax = cmp.Or(c.BackoffMax, 10*time.Minute)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 10)
	c.UnknownEventFor = cmp.Or(c.UnknownEventFor, 10*time.Minute)
	c.MissingRowRetries = cmp.Or(c.MissingRowRetries, 3)
	c.MissingRowDelay = cmp.Or(c.MissingRowDelay, 2*time.Second)
	c.IdempotencyWindow = cmp.Or(c.IdempotencyWindow, 24*time.Hour)
	c.SecretRetention = cmp.Or(c.SecretRetention, 7*24*time.Hour)
	c.NewerPayloadFor = cmp.Or(c.NewerPayloadFor, time.Hour)
	c.Retention = cmp.Or(c.Retention, 90*24*time.Hour)
	c.RejectedRetention = cmp.Or(c.RejectedRetention, 90*24*time.Hour)
	c.MailboxRetention = cmp.Or(c.MailboxRetention, 7*24*time.Hour)
	c.AsynqRetries = cmp.Or(c.AsynqRetries, 8)
	c.FanoutChunk = cmp.Or(c.FanoutChunk, 1000)
	if c.Logger == nil {
		l := zerolog.Nop()
		c.Logger = &l
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Redis == nil {
		errs = append(errs, errors.New("no Redis connection (HERALD_REDIS_URL)"))
	}
	if c.DB == nil {
		errs = append(errs, errors.New("no PostgreSQL pool (HERALD_DATABASE_URL)"))
	}
	if c.Registry == nil {
		errs = append(errs, errors.New("no event registry"))
	}
	if c.SecretKeys == "" {
		errs = append(errs, errors.New("no secret keys (HERALD_SECRET_KEYS)"))
	}
	if _, ok := c.Senders[events.TransportEmail]; ok && c.MailFrom.Address == "" {
		errs = append(errs, errors.New("email is configured but no sender address (HERALD_MAIL_FROM)"))
	}
	for name, d := range map[string]time.Duration{"lease": c.Lease, "task timeout": c.TaskTimeout, "send timeout": c.SendTimeout,
		"shutdown timeout": c.ShutdownTimeout, "task check interval": c.TaskCheckInterval,
		"delayed task check interval": c.DelayedTaskCheckInterval, "promoter interval": c.PromoterInterval,
		"horizon": c.Horizon, "requeue after": c.RequeueAfter, "sweep interval": c.SweepInterval,
		"backoff min": c.BackoffMin, "backoff max": c.BackoffMax, "unknown event retry time": c.UnknownEventFor,
		"missing row delay": c.MissingRowDelay, "idempotency window": c.IdempotencyWindow, "secret retention": c.SecretRetention,
		"newer payload retry time": c.NewerPayloadFor, "retention": c.Retention, "rejected task retention": c.RejectedRetention,
		"mailbox retention": c.MailboxRetention} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v must not be negative", name, d))
		}
	}
	for name, n := range map[string]int{"concurrency": c.Concurrency, "max attempts": c.MaxAttempts,
		"missing row retries": c.MissingRowRetries, "asynq retries": c.AsynqRetries, "fan-out chunk": c.FanoutChunk} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s %d must not be negative", name, n))
		}
	}
	if err := checkAsynqRetries(c.AsynqRetries); err != nil && c.AsynqRetries > 0 {
		errs = append(errs, err) // a negative count is refused above
	}
	if c.Lease <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("lease %v must exceed the send timeout %v", c.Lease, c.SendTimeout))
	}
	if c.TaskTimeout <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("task timeout %v must exceed the send timeout %v (a fan-out may deliver inline)", c.TaskTimeout, c.SendTimeout))
	}
	if c.TaskTimeout >= c.Lease {
		errs = append(errs, fmt.Errorf("task timeout %v must be below the lease %v", c.TaskTimeout, c.Lease))
	}
	if c.ShutdownTimeout <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("shutdown timeout %v must exceed the send timeout %v", c.ShutdownTimeout, c.SendTimeout))
	}
	if c.Retention <= c.IdempotencyWindow {
		errs = append(errs, fmt.Errorf("retention %v must exceed the idempotency window %v (a deleted dispatch no longer holds its key)", c.Retention, c.IdempotencyWindow))
	}
	if c.Retention <= c.NewerPayloadFor {
		errs = append(errs, fmt.Errorf("retention %v must exceed the newer payload retry time %v (a task retried that long must still find the rows it belongs to)", c.Retention, c.NewerPayloadFor))
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("backoff max %v is below backoff min %v", c.BackoffMax, c.BackoffMin))
	}
	return errors.Join(errs...)
}
