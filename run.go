package herald

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/capture"
	"github.com/heraldhq/herald/channels/email"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/redisconn"
	"github.com/heraldhq/herald/receipts"
	"github.com/heraldhq/herald/templates"
)

// Run starts a worker — the asynq server with its handlers, the promoter and the sweeper, and
// the HTTP endpoints /healthz, /readyz and /metrics — and blocks until ctx is canceled, then
// shuts down gracefully (running deliveries get ShutdownTimeout to finish). A start-up problem
// (bad setting, server not answering, Redis older than 6.2, template error) is returned at once.
func Run(ctx context.Context, cfg Config, reg *events.Registry) error {
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	e, err := build(ctx, cfg, reg, metrics)
	if errors.Is(err, errStopped) {
		return nil // stopped while waiting for the schema: a clean stop, as after serving
	}
	if err != nil {
		return err
	}
	defer e.close()
	cfg, log, w := e.cfg, e.log, e.worker

	var srv *http.Server
	addr := ""
	if cfg.HTTPAddr != "off" {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("herald: HERALD_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
		}
		addr = ln.Addr().String()
		rc, err := redisconn.New(cfg.Redis) // /readyz's; checked by build
		if err != nil {
			return fmt.Errorf("herald: %w", err)
		}
		defer func() { _ = rc.Close() }()
		srv = &http.Server{Handler: httpHandler(cfg.DB, rc, metrics), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Msg("http server stopped")
			}
		}()
	}
	if err := w.Start(ctx); err != nil {
		if srv != nil {
			_ = srv.Close()
		}
		return fmt.Errorf("herald: %w", err)
	}
	ids := make([]string, 0)
	for _, ev := range reg.Events() {
		ids = append(ids, ev.ID())
	}
	log.Info().Str("queue", cfg.Queue).Int("concurrency", cfg.Concurrency).Str("http", addr).
		Strs("events", ids).Msg("herald worker started")
	if cfg.Ready != nil {
		cfg.Ready(addr)
	}

	<-ctx.Done()
	log.Info().Msg("shutting down: waiting for running deliveries")
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	w.Shutdown()
	log.Info().Msg("herald worker stopped")
	return nil
}

// errStopped: ctx ended while build was waiting (for `worker migrate`).
var errStopped = errors.New("herald: stopped before the worker was built")

// built is a worker with everything it was built from: the settings as they run (defaults
// applied, Redis, DB, Senders and Logger filled in), its logger, and what to close after it.
type built struct {
	cfg     Config
	log     zerolog.Logger
	worker  *engine.Worker
	closers []func()
}

func (b *built) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
}

// build validates cfg and makes a worker, ready to Start or to mount: the pool opened and
// migrated (or waited for), Redis checked, the email transport configured.
func build(ctx context.Context, cfg Config, reg *events.Registry, metrics prometheus.Registerer) (_ *built, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("herald: no event registry")
	}
	cfg = cfg.WithDefaults()
	b := &built{log: cfg.logger()}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	log := b.log
	cfg.Logger = &b.log
	renderer, err := templates.New(reg)
	if err != nil {
		return nil, fmt.Errorf("herald: %w", err)
	}
	if cfg.DB == nil {
		if cfg.DB, err = OpenDB(ctx, cfg.DatabaseURL); err != nil {
			return nil, err
		}
		b.closers = append(b.closers, cfg.DB.Close)
	}
	if cfg.Migrate != "off" {
		if err := receipts.Migrate(ctx, cfg.DB); err != nil {
			return nil, fmt.Errorf("herald: apply migrations (or set HERALD_MIGRATE=off and run `worker migrate`): %w", err)
		}
	} else if err := waitForSchema(ctx, cfg.DB, log); err != nil {
		return nil, err
	} else if ctx.Err() != nil {
		return nil, errStopped
	}
	if cfg.Redis == nil {
		cfg.Redis, _ = asynq.ParseRedisURI(cfg.RedisURL) // checked by Validate
	}
	if err := checkRedis(ctx, cfg.Redis, log); err != nil {
		return nil, err
	}

	senders := map[string]channels.Sender{}
	if cfg.SMTPURL == "capture://" {
		senders[events.TransportEmail] = capture.New(cfg.DB)
		log.Warn().Msg("HERALD_SMTP_URL=capture://: mail is stored in the development mailbox, not sent")
	} else {
		from, _ := mail.ParseAddress(cfg.MailFrom)     // checked by Validate
		helo := strings.TrimSpace(cfg.MessageIDDomain) // fully qualified, unlike many host names
		if helo == "" {
			_, helo, _ = strings.Cut(from.Address, "@")
		}
		s, err := email.New(email.Config{URL: cfg.SMTPURL, PoolSize: cfg.Concurrency, SendTimeout: cfg.SendTimeout,
			HELO: helo, CAFile: cfg.SMTPCAFile})
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, func() { _ = s.Close() }) //nolint:contextcheck // Close ends pooled connections; there is no request to pass
		senders[events.TransportEmail] = s
		log.Info().Str("smtp", s.Endpoint().String()).Str("helo", s.HELO()).Msg("email transport configured")
	}
	for k, s := range cfg.Senders {
		senders[k] = s
	}
	cfg.Senders = senders

	w, err := engine.NewWorker(engine.Config(cfg), engine.Deps{Registry: reg, Renderer: renderer, Metrics: metrics})
	if err != nil {
		return nil, fmt.Errorf("herald: %w", err)
	}
	b.closers = append(b.closers, func() { _ = w.Close() })
	b.cfg, b.worker = cfg, w
	return b, nil
}

// OpenDB opens and pings a PostgreSQL pool. Errors name the host, never the password.
func OpenDB(ctx context.Context, url string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("HERALD_DATABASE_URL is not a valid PostgreSQL URL (postgres://user:pass@host:5432/dbname)")
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL at %s:%d: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s:%d (HERALD_DATABASE_URL) does not answer: %s", pc.ConnConfig.Host, pc.ConnConfig.Port,
			redactPassword(err.Error(), pc.ConnConfig.Password))
	}
	return pool, nil
}

func redactPassword(s, pw string) string {
	if len(pw) >= 3 {
		s = strings.ReplaceAll(s, pw, "xxxxx")
	}
	return s
}

// checkRedis refuses Redis older than 6.2 (asynq's archive script needs it) and warns loudly
// when eviction could drop queue keys.
func checkRedis(ctx context.Context, opt asynq.RedisConnOpt, log zerolog.Logger) error {
	rc, err := redisconn.New(opt)
	if err != nil {
		return fmt.Errorf("herald: %w", err)
	}
	defer func() { _ = rc.Close() }()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := rc.Info(cctx, "server", "memory").Result()
	if err != nil {
		return fmt.Errorf("Redis (HERALD_REDIS_URL) does not answer: %w", err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	if v := fields["redis_version"]; v != "" && !atLeast(v, 6, 2) {
		return fmt.Errorf("Redis %s is too old: Herald (asynq) needs Redis 6.2 or newer", v)
	}
	if p := fields["maxmemory_policy"]; p != "" && p != "noeviction" {
		log.Warn().Str("maxmemory_policy", p).Msg("Redis may evict queue keys under memory pressure: set maxmemory-policy noeviction")
	}
	return nil
}

func atLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return true
	}
	ma, _ := strconv.Atoi(parts[0])
	mi, _ := strconv.Atoi(parts[1])
	return ma > major || ma == major && mi >= minor
}

func httpHandler(pool *pgxpool.Pool, rc redis.UniversalClient, metrics *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var problems []string
		if err := pool.Ping(ctx); err != nil {
			problems = append(problems, "postgres: unreachable")
		}
		if err := rc.Ping(ctx).Err(); err != nil {
			problems = append(problems, "redis: unreachable")
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, strings.Join(problems, "\n")+"\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return mux
}

func (c Config) logger() zerolog.Logger {
	if c.Logger != nil {
		return *c.Logger
	}
	out := c.LogOutput
	if out == nil {
		out = os.Stderr
	}
	format := c.LogFormat
	if format == "" || format == "auto" {
		format = "json"
		if f, ok := out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	if format == "console" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: "15:04:05"}
	}
	lvl, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil || c.LogLevel == "" {
		lvl = zerolog.InfoLevel
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Logger()
}

// waitForSchema holds a worker that does not migrate (HERALD_MIGRATE=off) until the herald
// schema has every migration it knows: on an older schema its statements would fail on missing
// columns, and the tasks it runs with them. A newer schema is fine (DESIGN.md's migration rules
// keep an older worker correct there).
func waitForSchema(ctx context.Context, pool *pgxpool.Pool, log zerolog.Logger) error {
	var said time.Time
	for {
		current, known, err := receipts.SchemaVersion(ctx, pool)
		if err != nil {
			return fmt.Errorf("herald: %w", err)
		}
		if current >= known {
			return nil
		}
		if time.Since(said) > 30*time.Second {
			log.Warn().Int("schema_version", current).Int("needed", known).
				Msg("HERALD_MIGRATE=off and the herald schema is older than this worker: waiting for `worker migrate`")
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil // stopped while waiting: a clean stop, as after serving
		case <-time.After(time.Second):
		}
	}
}
