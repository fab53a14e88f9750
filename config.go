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
	"github.com/heraldhq/herald/internal/seal"
)

// Config is everything a worker needs. ConfigFromEnv fills it from HERALD_* variables; Go
// programs may also build it directly. Zero values take the defaults given beside each field.
type Config struct {
	// RedisURL is the asynq Redis: redis://[:password@]host:6379/0 (or rediss://). Required.
	RedisURL string `env:"HERALD_REDIS_URL"`
	// DatabaseURL is the PostgreSQL database holding the herald schema. Required unless DB is set.
	DatabaseURL string `env:"HERALD_DATABASE_URL"`
	// SMTPURL is smtp://user:pass@host:587?tls=starttls|tls|opportunistic|none, or capture:// to
	// store mail in the development mailbox. Required: no SMTP URL means no start.
	SMTPURL string `env:"HERALD_SMTP_URL"`
	// SMTPCAFile is a PEM file of CA certificates trusted for the SMTP server's certificate, in
	// addition to the system's roots (a relay with a certificate from a private CA). The URL's
	// ca= parameter wins. Optional.
	SMTPCAFile string `env:"HERALD_SMTP_CA_FILE"`
	// MailFrom is the default sender, "Name <address>" or an address. Required.
	MailFrom string `env:"HERALD_MAIL_FROM"`
	// MessageIDDomain is the right-hand side of Message-IDs. Defaults to MailFrom's domain.
	MessageIDDomain string `env:"HERALD_MESSAGE_ID_DOMAIN"`
	// SecretKeys seal secrets: kid1:base64key,kid2:base64key (the first seals, all open). Required.
	SecretKeys string `env:"HERALD_SECRET_KEYS"`
	// HTTPAddr serves /healthz and /readyz. Defaults to ":8080"; "off" disables it.
	HTTPAddr string `env:"HERALD_HTTP_ADDR" envDefault:":8080"`
	// AdminToken guards the admin API (bearer token). Optional until the admin API is enabled.
	AdminToken string `env:"HERALD_ADMIN_TOKEN"`
	// Migrate is "auto" (apply migrations at start-up) or "off". Defaults to "auto".
	Migrate string `env:"HERALD_MIGRATE" envDefault:"auto"`
	// Queue is the asynq queue. Defaults to "herald".
	Queue string `env:"HERALD_QUEUE" envDefault:"herald"`
	// Concurrency is how many tasks run at once (and SMTP connections are pooled). Defaults to 10.
	Concurrency int `env:"HERALD_CONCURRENCY" envDefault:"10"`
	// LogLevel is debug, info, warn or error. Defaults to info.
	LogLevel string `env:"HERALD_LOG_LEVEL" envDefault:"info"`
	// LogFormat is json, console or auto (console on a terminal). Defaults to auto.
	LogFormat string `env:"HERALD_LOG_FORMAT" envDefault:"auto"`

	// SendTimeout bounds one send. Defaults to 30s.
	SendTimeout time.Duration `env:"HERALD_SEND_TIMEOUT" envDefault:"30s"`
	// Lease is how long a claim holds a delivery. Defaults to 2m (must exceed SendTimeout).
	Lease time.Duration `env:"HERALD_LEASE" envDefault:"2m"`
	// TaskTimeout bounds one task. Defaults to 60s (must be below Lease).
	TaskTimeout time.Duration `env:"HERALD_TASK_TIMEOUT" envDefault:"60s"`
	// ShutdownTimeout is how long shutdown waits for running tasks. Defaults to 40s.
	ShutdownTimeout time.Duration `env:"HERALD_SHUTDOWN_TIMEOUT" envDefault:"40s"`
	// TaskCheckInterval is how often idle workers poll Redis. Defaults to 50ms.
	TaskCheckInterval time.Duration `env:"HERALD_TASK_CHECK_INTERVAL" envDefault:"50ms"`
	// PromoterInterval is the promoter's tick. Defaults to 1s.
	PromoterInterval time.Duration `env:"HERALD_PROMOTER_INTERVAL" envDefault:"1s"`
	// Horizon: work due within it is scheduled in asynq, later work waits in Postgres. Defaults to 60s.
	Horizon time.Duration `env:"HERALD_HORIZON" envDefault:"60s"`
	// BackoffMin and BackoffMax bound retry delays. Default 5s and 10m.
	BackoffMin time.Duration `env:"HERALD_BACKOFF_MIN" envDefault:"5s"`
	BackoffMax time.Duration `env:"HERALD_BACKOFF_MAX" envDefault:"10m"`
	// MaxAttempts is the number of delivery attempts. Defaults to 10.
	MaxAttempts int `env:"HERALD_MAX_ATTEMPTS" envDefault:"10"`
	// UnknownEventFor is how long an unregistered event is retried. Defaults to 10m.
	UnknownEventFor time.Duration `env:"HERALD_UNKNOWN_EVENT_FOR" envDefault:"10m"`
	// IdempotencyWindow is how long an idempotency key holds. Defaults to 24h.
	IdempotencyWindow time.Duration `env:"HERALD_IDEMPOTENCY_WINDOW" envDefault:"24h"`
	// SecretRetention is how long sealed secrets are kept at most. Defaults to 168h (7 days).
	SecretRetention time.Duration `env:"HERALD_SECRET_RETENTION" envDefault:"168h"`
	// NewerPayloadFor is how long a task of a newer payload version than this worker understands
	// is retried, for a newer worker to take it, before it is recorded as rejected (payload kept).
	// Defaults to 1h.
	NewerPayloadFor time.Duration `env:"HERALD_NEWER_PAYLOAD_FOR" envDefault:"1h"`
	// Retention is how long final dispatches and receipts are kept after they last changed.
	// Defaults to 2160h (90 days); must exceed IdempotencyWindow and NewerPayloadFor.
	Retention time.Duration `env:"HERALD_RETENTION" envDefault:"2160h"`
	// RejectedRetention is how long rejected tasks are kept. Defaults to 2160h (90 days).
	RejectedRetention time.Duration `env:"HERALD_REJECTED_RETENTION" envDefault:"2160h"`
	// MailboxRetention is how long the development mailbox keeps a message. Defaults to 168h.
	MailboxRetention time.Duration `env:"HERALD_MAILBOX_RETENTION" envDefault:"168h"`

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

// ConfigFromEnv reads the HERALD_* variables through getenv (os.Getenv in a main) and
// validates them. Errors say which variable to set and how; they never echo a password or key.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
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
	return cfg, cfg.Validate()
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
	if t == "time.Duration" {
		return "a duration"
	}
	return "a whole number"
}

func exampleOf(t string) string {
	if t == "time.Duration" {
		return "30s or 5m"
	}
	return "10"
}

// Validate checks the configuration and says what to set.
func (c Config) Validate() error {
	var errs []error
	if c.RedisURL == "" {
		errs = append(errs, errors.New("HERALD_REDIS_URL is not set: set it to redis://host:6379/0"))
	} else if _, err := asynq.ParseRedisURI(c.RedisURL); err != nil {
		errs = append(errs, errors.New("HERALD_REDIS_URL is not a valid redis:// or rediss:// URL (redis://[:password@]host:6379/0)"))
	}
	if c.DB == nil {
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("HERALD_DATABASE_URL is not set: set it to postgres://user:pass@host:5432/dbname"))
		} else if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
			errs = append(errs, errors.New("HERALD_DATABASE_URL is not a valid PostgreSQL URL (postgres://user:pass@host:5432/dbname)"))
		}
	}
	switch c.SMTPURL {
	case "":
		errs = append(errs, errors.New("HERALD_SMTP_URL is not set: set it to smtp://user:pass@host:587?tls=starttls, or to capture:// to keep mail in the development mailbox"))
	case "capture://":
	default:
		if _, err := email.ParseURL(c.SMTPURL); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MailFrom == "" {
		errs = append(errs, errors.New("HERALD_MAIL_FROM is not set: set it to the sender, such as \"Acme <noreply@acme.example>\""))
	} else if _, err := mail.ParseAddress(c.MailFrom); err != nil {
		errs = append(errs, fmt.Errorf("HERALD_MAIL_FROM %q is not an address: want \"Name <noreply@example.com>\" or noreply@example.com", c.MailFrom))
	}
	if c.SecretKeys == "" {
		errs = append(errs, errors.New("HERALD_SECRET_KEYS is not set: set it to kid:base64key (make a key with: openssl rand -base64 32)"))
	} else if _, err := seal.ParseKeys(c.SecretKeys); err != nil {
		errs = append(errs, fmt.Errorf("HERALD_SECRET_KEYS: %w", err))
	}
	if c.Migrate != "" && c.Migrate != "auto" && c.Migrate != "off" {
		errs = append(errs, fmt.Errorf("HERALD_MIGRATE=%q: want auto or off", c.Migrate))
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("HERALD_LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "", "auto", "json", "console":
	default:
		errs = append(errs, fmt.Errorf("HERALD_LOG_FORMAT=%q: want json, console or auto", c.LogFormat))
	}
	for name, d := range map[string]time.Duration{"HERALD_SEND_TIMEOUT": c.SendTimeout, "HERALD_LEASE": c.Lease,
		"HERALD_TASK_TIMEOUT": c.TaskTimeout, "HERALD_SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
		"HERALD_TASK_CHECK_INTERVAL": c.TaskCheckInterval, "HERALD_PROMOTER_INTERVAL": c.PromoterInterval,
		"HERALD_HORIZON": c.Horizon, "HERALD_BACKOFF_MIN": c.BackoffMin, "HERALD_BACKOFF_MAX": c.BackoffMax,
		"HERALD_UNKNOWN_EVENT_FOR": c.UnknownEventFor, "HERALD_IDEMPOTENCY_WINDOW": c.IdempotencyWindow,
		"HERALD_SECRET_RETENTION": c.SecretRetention, "HERALD_NEWER_PAYLOAD_FOR": c.NewerPayloadFor,
		"HERALD_RETENTION": c.Retention, "HERALD_REJECTED_RETENTION": c.RejectedRetention,
		"HERALD_MAILBOX_RETENTION": c.MailboxRetention} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s=%v: must not be negative (0 takes the default)", name, d))
		}
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("HERALD_MAX_ATTEMPTS=%d: must not be negative (0 takes the default)", c.MaxAttempts))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("HERALD_CONCURRENCY=%d: want a positive number", c.Concurrency))
	}
	if c.Lease > 0 && c.SendTimeout > 0 && c.Lease <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("HERALD_LEASE (%v) must exceed HERALD_SEND_TIMEOUT (%v)", c.Lease, c.SendTimeout))
	}
	if c.SendTimeout > 0 && c.TaskTimeout > 0 && c.TaskTimeout <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("HERALD_TASK_TIMEOUT (%v) must exceed HERALD_SEND_TIMEOUT (%v): a fan-out may deliver inline", c.TaskTimeout, c.SendTimeout))
	}
	if c.Lease > 0 && c.TaskTimeout >= c.Lease {
		errs = append(errs, fmt.Errorf("HERALD_TASK_TIMEOUT (%v) must be below HERALD_LEASE (%v)", c.TaskTimeout, c.Lease))
	}
	if c.Retention > 0 && c.Retention <= cmp.Or(c.IdempotencyWindow, 24*time.Hour) {
		errs = append(errs, fmt.Errorf("HERALD_RETENTION (%v) must exceed HERALD_IDEMPOTENCY_WINDOW (%v): a deleted dispatch no longer holds its key", c.Retention, cmp.Or(c.IdempotencyWindow, 24*time.Hour)))
	}
	if c.Retention > 0 && c.Retention <= cmp.Or(c.NewerPayloadFor, time.Hour) {
		errs = append(errs, fmt.Errorf("HERALD_RETENTION (%v) must exceed HERALD_NEWER_PAYLOAD_FOR (%v): a task retried that long must still find the rows it belongs to", c.Retention, cmp.Or(c.NewerPayloadFor, time.Hour)))
	}
	if c.ShutdownTimeout > 0 && c.SendTimeout > 0 && c.ShutdownTimeout <= c.SendTimeout {
		errs = append(errs, fmt.Errorf("HERALD_SHUTDOWN_TIMEOUT (%v) must exceed HERALD_SEND_TIMEOUT (%v)", c.ShutdownTimeout, c.SendTimeout))
	}
	return errors.Join(errs...)
}
