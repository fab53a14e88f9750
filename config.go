package herald

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/email"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/seal"
)

// Config is every setting of Herald, for the worker (Run, Mount), the producer (NewClient) and
// the CLI alike. ConfigFromEnv fills it from HERALD_* variables; Go programs may also build it
// directly. A zero value takes the default given beside the field (WithDefaults applies them).
type Config struct {
	// RedisURL is the asynq Redis: redis://[:password@]host:6379/0 (or rediss://). Required
	// unless Redis is set (a producer that only uses DispatchTx needs neither).
	RedisURL string `env:"HERALD_REDIS_URL"`
	// DatabaseURL is the PostgreSQL database holding the herald schema. Required by a worker
	// unless DB is set.
	DatabaseURL string `env:"HERALD_DATABASE_URL"`
	// SMTPURL is smtp://user:pass@host:587?tls=starttls|tls|opportunistic|none, or capture:// to
	// store mail in the development mailbox. Required by a worker: no SMTP URL means no start.
	SMTPURL string `env:"HERALD_SMTP_URL"`
	// SMTPCAFile is a PEM file of CA certificates trusted for the SMTP server's certificate, in
	// addition to the system's roots (a relay with a certificate from a private CA). The URL's
	// ca= parameter wins. Optional.
	SMTPCAFile string `env:"HERALD_SMTP_CA_FILE"`
	// MailFrom is the default sender, "Name <address>" or an address. Required by a worker.
	MailFrom string `env:"HERALD_MAIL_FROM"`
	// MessageIDDomain is the right-hand side of Message-IDs. Defaults to MailFrom's domain.
	MessageIDDomain string `env:"HERALD_MESSAGE_ID_DOMAIN"`
	// SecretKeys seal secrets: kid1:base64key,kid2:base64key (the first seals, all open). Required.
	SecretKeys string `env:"HERALD_SECRET_KEYS"`
	// HTTPAddr serves /healthz, /readyz and /metrics. Defaults to ":8080"; "off" disables it.
	HTTPAddr string `env:"HERALD_HTTP_ADDR"`
	// AdminToken guards the admin API (bearer token). Optional until the admin API is enabled.
	AdminToken string `env:"HERALD_ADMIN_TOKEN"`
	// Migrate is "auto" (apply migrations at start-up) or "off". Defaults to "auto".
	Migrate string `env:"HERALD_MIGRATE"`
	// Queue is the asynq queue of both task types; producers and workers must agree. A dispatch
	// remembers it: only that queue's workers drive it, so fleets sharing one PostgreSQL never
	// take each other's work. Defaults to "herald".
	Queue string `env:"HERALD_QUEUE"`
	// Concurrency is how many tasks run at once (and SMTP connections are pooled). Defaults to 10.
	Concurrency int `env:"HERALD_CONCURRENCY"`
	// LogLevel is debug, info, warn or error. Defaults to info.
	LogLevel string `env:"HERALD_LOG_LEVEL"`
	// LogFormat is json, console or auto (console on a terminal). Defaults to auto.
	LogFormat string `env:"HERALD_LOG_FORMAT"`

	// SendTimeout bounds one send. Defaults to 30s.
	SendTimeout time.Duration `env:"HERALD_SEND_TIMEOUT"`
	// Lease is how long a claim holds a dispatch or a delivery. Defaults to 2m; must exceed
	// SendTimeout.
	Lease time.Duration `env:"HERALD_LEASE"`
	// TaskTimeout bounds one task. Defaults to 60s; must exceed SendTimeout (a fan-out may
	// deliver inline) and be below Lease.
	TaskTimeout time.Duration `env:"HERALD_TASK_TIMEOUT"`
	// ShutdownTimeout is how long shutdown waits for running tasks. Defaults to 40s; must exceed
	// SendTimeout.
	ShutdownTimeout time.Duration `env:"HERALD_SHUTDOWN_TIMEOUT"`
	// TaskCheckInterval is how often idle workers poll Redis. Defaults to 50ms (the p50 pickup
	// latency of an idle worker is about this interval).
	TaskCheckInterval time.Duration `env:"HERALD_TASK_CHECK_INTERVAL"`
	// DelayedTaskCheckInterval is how often asynq moves scheduled tasks to pending. Defaults to 1s.
	DelayedTaskCheckInterval time.Duration `env:"HERALD_DELAYED_TASK_CHECK_INTERVAL"`
	// PromoterInterval is the promoter's tick. Defaults to 1s.
	PromoterInterval time.Duration `env:"HERALD_PROMOTER_INTERVAL"`
	// Horizon: work due within it is handed to asynq as a scheduled task; later work waits in
	// PostgreSQL for the promoter. Defaults to 60s.
	Horizon time.Duration `env:"HERALD_HORIZON"`
	// RequeueAfter is how long the promoter waits before enqueueing again work it enqueued that
	// has not run (a task Redis lost). Defaults to 30s.
	RequeueAfter time.Duration `env:"HERALD_REQUEUE_AFTER"`
	// SweepInterval is how often the sweeper scrubs secrets, releases idempotency keys and deletes
	// expired rows. Defaults to 1m.
	SweepInterval time.Duration `env:"HERALD_SWEEP_INTERVAL"`
	// BackoffMin and BackoffMax bound retry delays. Default 5s and 10m.
	BackoffMin time.Duration `env:"HERALD_BACKOFF_MIN"`
	BackoffMax time.Duration `env:"HERALD_BACKOFF_MAX"`
	// MaxAttempts is the number of delivery (and fan-out) attempts; a channel's policy may
	// override it for its deliveries. Defaults to 10.
	MaxAttempts int `env:"HERALD_MAX_ATTEMPTS"`
	// UnknownEventFor is how long a dispatch of an unregistered event is retried (rolling
	// deploys) before it fails. Defaults to 10m.
	UnknownEventFor time.Duration `env:"HERALD_UNKNOWN_EVENT_FOR"`
	// NewerPayloadFor is how long a task of a newer payload version than this worker understands
	// is retried, for a newer worker to take it, before it is recorded as rejected (payload kept).
	// Defaults to 1h.
	NewerPayloadFor time.Duration `env:"HERALD_NEWER_PAYLOAD_FOR"`
	// MissingRowRetries is how many times a fan-out retries a reference whose row is missing
	// (commit-visibility races) before the dispatch fails. Defaults to 3.
	MissingRowRetries int `env:"HERALD_MISSING_ROW_RETRIES"`
	// MissingRowDelay is the wait between those retries. Defaults to 2s.
	MissingRowDelay time.Duration `env:"HERALD_MISSING_ROW_DELAY"`
	// IdempotencyWindow is how long an idempotency key holds. Defaults to 24h.
	IdempotencyWindow time.Duration `env:"HERALD_IDEMPOTENCY_WINDOW"`
	// SecretRetention is how long sealed secrets are kept at most. Defaults to 168h (7 days).
	SecretRetention time.Duration `env:"HERALD_SECRET_RETENTION"`
	// Retention is how long final dispatches and receipts are kept after they last changed.
	// Defaults to 2160h (90 days); must exceed IdempotencyWindow and NewerPayloadFor.
	Retention time.Duration `env:"HERALD_RETENTION"`
	// RejectedRetention is how long rejected tasks are kept. Defaults to 2160h (90 days).
	RejectedRetention time.Duration `env:"HERALD_REJECTED_RETENTION"`
	// MailboxRetention is how long the development mailbox keeps a message. Defaults to 168h.
	MailboxRetention time.Duration `env:"HERALD_MAILBOX_RETENTION"`
	// FanoutChunk is how many receipts a fan-out commits at a time. Each chunk commits with the
	// fan-out's progress and extends its lease, so a fan-out to millions of recipients uses
	// bounded memory and resumes after a crash. Defaults to 1000.
	FanoutChunk int `env:"HERALD_FANOUT_CHUNK"`
	// DisableInline turns off delivering a fan-out's single immediate delivery in the same task
	// (which saves a queue hop). Defaults to false.
	DisableInline bool `env:"HERALD_DISABLE_INLINE"`
	// AsynqRetries is how often asynq re-runs a task whose handler could not reach PostgreSQL.
	// Defaults to 8; at least 2 (a newer payload waits with all but the last, kept spare).
	AsynqRetries int `env:"HERALD_ASYNQ_RETRIES"`
	// DisableOutboxNotify turns off the NOTIFY with which DispatchTx wakes the queue's promoters
	// at commit. Without it a dispatch committed through DispatchTx starts at the promoter's next
	// tick (PromoterInterval) instead of at once; with it each commit takes PostgreSQL's
	// cluster-wide notify lock (see the README, "The outbox NOTIFY"). Defaults to false.
	DisableOutboxNotify bool `env:"HERALD_DISABLE_OUTBOX_NOTIFY"`

	// Redis, when set, is used instead of RedisURL (an application's own asynq connection).
	Redis asynq.RedisConnOpt `env:"-"`
	// DB, when set, is used instead of opening DatabaseURL (so loaders can share the pool).
	DB *pgxpool.Pool `env:"-"`
	// Senders adds or replaces transports by name ("webhook", …) next to email.
	Senders map[string]channels.Sender `env:"-"`
	// Logger, when set, replaces the logger built from LogLevel, LogFormat and LogOutput.
	Logger *zerolog.Logger `env:"-"`
	// LogOutput is where logs go. Defaults to standard error.
	LogOutput io.Writer `env:"-"`
	// Ready, when set, is called once the worker is serving, with the HTTP address it listens on.
	Ready func(httpAddr string) `env:"-"`
}

// WithDefaults returns c with every zero setting replaced by its documented default. It is
// the one place defaults are written.
func (c Config) WithDefaults() Config {
	c.HTTPAddr = cmp.Or(c.HTTPAddr, ":8080")
	c.Migrate = cmp.Or(c.Migrate, "auto")
	c.Queue = cmp.Or(c.Queue, "herald")
	c.Concurrency = cmp.Or(c.Concurrency, 10)
	c.LogLevel = cmp.Or(c.LogLevel, "info")
	c.LogFormat = cmp.Or(c.LogFormat, "auto")
	c.SendTimeout = cmp.Or(c.SendTimeout, 30*time.Second)
	c.Lease = cmp.Or(c.Lease, 2*time.Minute)
	c.TaskTimeout = cmp.Or(c.TaskTimeout, 60*time.Second)
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
	c.NewerPayloadFor = cmp.Or(c.NewerPayloadFor, time.Hour)
	c.MissingRowRetries = cmp.Or(c.MissingRowRetries, 3)
	c.MissingRowDelay = cmp.Or(c.MissingRowDelay, 2*time.Second)
	c.IdempotencyWindow = cmp.Or(c.IdempotencyWindow, 24*time.Hour)
	c.SecretRetention = cmp.Or(c.SecretRetention, 7*24*time.Hour)
	c.Retention = cmp.Or(c.Retention, 90*24*time.Hour)
	c.RejectedRetention = cmp.Or(c.RejectedRetention, 90*24*time.Hour)
	c.MailboxRetention = cmp.Or(c.MailboxRetention, 7*24*time.Hour)
	c.FanoutChunk = cmp.Or(c.FanoutChunk, 1000)
	c.AsynqRetries = cmp.Or(c.AsynqRetries, 8)
	return c
}

// ConfigFromEnv reads the HERALD_* variables through getenv (os.Getenv in a main), applies the
// defaults and validates the result for a worker. Errors say which variable to set and how; they
// never echo a password or key.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg, err := parseEnv(getenv)
	if err != nil {
		return cfg, err
	}
	cfg = cfg.WithDefaults()
	return cfg, cfg.Validate()
}

// ClientConfigFromEnv reads the same HERALD_* variables as ConfigFromEnv for a producer or a
// tool, applies the defaults and checks every variable that is set, requiring none: NewClient
// then requires HERALD_SECRET_KEYS, and Dispatch HERALD_REDIS_URL (DispatchTx needs only your
// own transaction). With an error, the Config still holds every setting that could be read, with
// the defaults for the others (a tool may carry on with the settings it uses).
func ClientConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg, err := parseEnv(getenv)
	cfg = cfg.WithDefaults()
	return cfg, errors.Join(err, cfg.validateClient())
}

func parseEnv(getenv func(string) string) (Config, error) {
	var cfg Config
	params, err := env.GetFieldParams(&cfg)
	if err != nil {
		return cfg, err
	}
	vars := map[string]string{}
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			vars[p.Key] = v
		}
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) {
			var msgs []error
			for _, e := range agg.Errors {
				var pe env.ParseError
				if errors.As(e, &pe) {
					msgs = append(msgs, fmt.Errorf("%s: want %s, such as %s", keyOf(params, pe.Name), kindOf(pe.Type.String()), exampleOf(pe.Type.String())))
					continue
				}
				msgs = append(msgs, e)
			}
			return cfg, errors.Join(msgs...)
		}
		return cfg, err
	}
	return cfg, nil
}

func keyOf(params []env.FieldParams, field string) string {
	for _, p := range params {
		if p.OwnKey != "" && strings.EqualFold(strings.ReplaceAll(p.OwnKey, "_", ""), "HERALD"+strings.ToUpper(field)) {
			return p.Key
		}
	}
	return field
}

func kindOf(t string) string {
	switch t {
	case "time.Duration":
		return "a duration"
	case "bool":
		return "true or false"
	}
	return "a whole number"
}

func exampleOf(t string) string {
	switch t {
	case "time.Duration":
		return "30s or 5m"
	case "bool":
		return "true"
	}
	return "10"
}

// Validate checks the configuration of a worker (Run, Mount) and says what to set. Zero
// settings take their defaults first.
func (c Config) Validate() error {
	d := c.WithDefaults()
	errs := c.validateCommon()
	if d.SecretKeys == "" {
		errs = append(errs, errors.New("HERALD_SECRET_KEYS is not set: set it to kid:base64key (make a key with: openssl rand -base64 32)"))
	}
	if d.Redis == nil && d.RedisURL == "" {
		errs = append(errs, errors.New("HERALD_REDIS_URL is not set: set it to redis://host:6379/0"))
	}
	if d.DB == nil {
		if d.DatabaseURL == "" {
			errs = append(errs, errors.New("HERALD_DATABASE_URL is not set: set it to postgres://user:pass@host:5432/dbname"))
		} else if _, err := pgxpool.ParseConfig(d.DatabaseURL); err != nil {
			errs = append(errs, errors.New("HERALD_DATABASE_URL is not a valid PostgreSQL URL (postgres://user:pass@host:5432/dbname)"))
		}
	}
	switch d.SMTPURL {
	case "":
		errs = append(errs, errors.New("HERALD_SMTP_URL is not set: set it to smtp://user:pass@host:587?tls=starttls, or to capture:// to keep mail in the development mailbox"))
	case "capture://":
	default:
		if _, err := email.ParseURL(d.SMTPURL); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.checkOrder()...) // d: defaults applied
	if d.MailFrom == "" {
		errs = append(errs, errors.New("HERALD_MAIL_FROM is not set: set it to the sender, such as \"Acme <noreply@acme.example>\""))
	}
	return errors.Join(errs...)
}

// validateClient checks the configuration of a producer or a tool: secret keys, and whatever
// else is set.
func (c Config) validateClient() error {
	errs := c.validateCommon()
	if d := c.WithDefaults(); d.TaskTimeout <= d.SendTimeout {
		// The producer sets the deadline each worker runs the task under.
		errs = append(errs, fmt.Errorf("HERALD_TASK_TIMEOUT (%v) must exceed HERALD_SEND_TIMEOUT (%v): producers set the deadline workers run each task under; give them the workers' values",
			d.TaskTimeout, d.SendTimeout))
	}
	return errors.Join(errs...)
}

// validateCommon checks what every role shares: the secret keys, and each setting that is set.
func (c Config) validateCommon() []error {
	var errs []error
	d := c.WithDefaults()
	if d.Redis == nil && d.RedisURL != "" {
		if _, err := asynq.ParseRedisURI(d.RedisURL); err != nil {
			errs = append(errs, errors.New("HERALD_REDIS_URL is not a valid redis:// or rediss:// URL (redis://[:password@]host:6379/0)"))
		}
	}
	if d.SecretKeys != "" {
		if _, err := seal.ParseKeys(d.SecretKeys); err != nil {
			errs = append(errs, fmt.Errorf("HERALD_SECRET_KEYS: %w", err))
		}
	}
	if d.MailFrom != "" {
		if _, err := mail.ParseAddress(d.MailFrom); err != nil {
			errs = append(errs, fmt.Errorf("HERALD_MAIL_FROM %q is not an address: want \"Name <noreply@example.com>\" or noreply@example.com", d.MailFrom))
		}
	}
	if d.Migrate != "auto" && d.Migrate != "off" {
		errs = append(errs, fmt.Errorf("HERALD_MIGRATE=%q: want auto or off", d.Migrate))
	}
	if _, err := zerolog.ParseLevel(d.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("HERALD_LOG_LEVEL=%q: want debug, info, warn or error", d.LogLevel))
	}
	switch d.LogFormat {
	case "auto", "json", "console":
	default:
		errs = append(errs, fmt.Errorf("HERALD_LOG_FORMAT=%q: want json, console or auto", d.LogFormat))
	}
	for name, v := range map[string]time.Duration{"HERALD_SEND_TIMEOUT": c.SendTimeout, "HERALD_LEASE": c.Lease,
		"HERALD_TASK_TIMEOUT": c.TaskTimeout, "HERALD_SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
		"HERALD_TASK_CHECK_INTERVAL": c.TaskCheckInterval, "HERALD_DELAYED_TASK_CHECK_INTERVAL": c.DelayedTaskCheckInterval,
		"HERALD_PROMOTER_INTERVAL": c.PromoterInterval, "HERALD_HORIZON": c.Horizon, "HERALD_REQUEUE_AFTER": c.RequeueAfter,
		"HERALD_SWEEP_INTERVAL": c.SweepInterval, "HERALD_BACKOFF_MIN": c.BackoffMin, "HERALD_BACKOFF_MAX": c.BackoffMax,
		"HERALD_UNKNOWN_EVENT_FOR": c.UnknownEventFor, "HERALD_NEWER_PAYLOAD_FOR": c.NewerPayloadFor,
		"HERALD_MISSING_ROW_DELAY": c.MissingRowDelay, "HERALD_IDEMPOTENCY_WINDOW": c.IdempotencyWindow,
		"HERALD_SECRET_RETENTION": c.SecretRetention, "HERALD_RETENTION": c.Retention,
		"HERALD_REJECTED_RETENTION": c.RejectedRetention, "HERALD_MAILBOX_RETENTION": c.MailboxRetention} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s=%v: must not be negative (0 takes the default)", name, v))
		}
	}
	for name, n := range map[string]int{"HERALD_MAX_ATTEMPTS": c.MaxAttempts, "HERALD_CONCURRENCY": c.Concurrency,
		"HERALD_MISSING_ROW_RETRIES": c.MissingRowRetries, "HERALD_FANOUT_CHUNK": c.FanoutChunk, "HERALD_ASYNQ_RETRIES": c.AsynqRetries} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s=%d: must not be negative (0 takes the default)", name, n))
		}
	}
	if c.AsynqRetries > 0 {
		if err := engine.CheckAsynqRetries(c.AsynqRetries); err != nil {
			errs = append(errs, fmt.Errorf("HERALD_ASYNQ_RETRIES: %w", err))
		}
	}
	return errs
}

// checkOrder checks the relations between a worker's settings (defaults applied).
func (c Config) checkOrder() []error {
	var errs []error
	if c.Lease <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("HERALD_LEASE (%v) must exceed HERALD_SEND_TIMEOUT (%v)", c.Lease, c.SendTimeout))
	}
	if c.TaskTimeout <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("HERALD_TASK_TIMEOUT (%v) must exceed HERALD_SEND_TIMEOUT (%v): a fan-out may deliver inline", c.TaskTimeout, c.SendTimeout))
	}
	if c.TaskTimeout >= c.Lease {
		errs = append(errs, fmt.Errorf("HERALD_TASK_TIMEOUT (%v) must be below HERALD_LEASE (%v)", c.TaskTimeout, c.Lease))
	}
	if c.ShutdownTimeout <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("HERALD_SHUTDOWN_TIMEOUT (%v) must exceed HERALD_SEND_TIMEOUT (%v)", c.ShutdownTimeout, c.SendTimeout))
	}
	if c.Retention <= c.IdempotencyWindow {
		errs = append(errs, fmt.Errorf("HERALD_RETENTION (%v) must exceed HERALD_IDEMPOTENCY_WINDOW (%v): a deleted dispatch no longer holds its key", c.Retention, c.IdempotencyWindow))
	}
	if c.Retention <= c.NewerPayloadFor {
		errs = append(errs, fmt.Errorf("HERALD_RETENTION (%v) must exceed HERALD_NEWER_PAYLOAD_FOR (%v): a task retried that long must still find the rows it belongs to", c.Retention, c.NewerPayloadFor))
	}
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("HERALD_BACKOFF_MAX (%v) is below HERALD_BACKOFF_MIN (%v)", c.BackoffMax, c.BackoffMin))
	}
	return errs
}
