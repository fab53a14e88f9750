package engine

import (
	"errors"
	"io"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/templates"
)

// Config mirrors herald.Config field for field: herald converts one into the other
// (engine.Config(cfg.WithDefaults())), so the compiler keeps the two identical and every
// setting, its documentation, its default and its validation are written once, in herald.
// The engine reads it with the defaults already applied; it applies none of its own.
type Config struct {
	RedisURL                 string
	DatabaseURL              string
	SMTPURL                  string
	SMTPCAFile               string
	MailFrom                 string
	MessageIDDomain          string
	SecretKeys               string
	HTTPAddr                 string
	AdminToken               string
	Migrate                  string
	Queue                    string
	Concurrency              int
	LogLevel                 string
	LogFormat                string
	SendTimeout              time.Duration
	Lease                    time.Duration
	TaskTimeout              time.Duration
	ShutdownTimeout          time.Duration
	TaskCheckInterval        time.Duration
	DelayedTaskCheckInterval time.Duration
	PromoterInterval         time.Duration
	Horizon                  time.Duration
	RequeueAfter             time.Duration
	SweepInterval            time.Duration
	BackoffMin               time.Duration
	BackoffMax               time.Duration
	MaxAttempts              int
	UnknownEventFor          time.Duration
	NewerPayloadFor          time.Duration
	MissingRowRetries        int
	MissingRowDelay          time.Duration
	IdempotencyWindow        time.Duration
	SecretRetention          time.Duration
	Retention                time.Duration
	RejectedRetention        time.Duration
	MailboxRetention         time.Duration
	FanoutChunk              int
	DisableInline            bool
	AsynqRetries             int
	DisableOutboxNotify      bool
	Redis                    asynq.RedisConnOpt
	DB                       *pgxpool.Pool
	Senders                  map[string]channels.Sender
	Logger                   *zerolog.Logger
	LogOutput                io.Writer
	Ready                    func(httpAddr string)
}

// Deps is what a worker needs besides its settings.
type Deps struct {
	// Registry holds the event types and loaders. Required.
	Registry *events.Registry
	// Renderer renders templates. Defaults to templates.New(Registry).
	Renderer *templates.Renderer
	// Metrics, when set, receives the worker's Prometheus collectors (herald_*).
	Metrics prometheus.Registerer
}

// check refuses what the engine cannot run without. The settings' values were validated by
// herald.Config.Validate.
func (c Config) check(d Deps) error {
	var errs []error
	if c.Redis == nil {
		errs = append(errs, errors.New("no Redis connection (HERALD_REDIS_URL)"))
	}
	if c.DB == nil {
		errs = append(errs, errors.New("no PostgreSQL pool (HERALD_DATABASE_URL)"))
	}
	if d.Registry == nil {
		errs = append(errs, errors.New("no event registry"))
	}
	if c.SecretKeys == "" {
		errs = append(errs, errors.New("no secret keys (HERALD_SECRET_KEYS)"))
	}
	if _, ok := c.Senders[events.TransportEmail]; ok && c.MailFrom == "" {
		errs = append(errs, errors.New("email is configured but no sender address (HERALD_MAIL_FROM)"))
	}
	if c.Lease <= 0 || c.TaskTimeout <= 0 || c.Concurrency <= 0 || c.FanoutChunk <= 0 || c.MaxAttempts <= 0 {
		errs = append(errs, errors.New("settings without defaults: build them with herald.Config.WithDefaults"))
	}
	return errors.Join(errs...)
}
