package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/seal"
	"github.com/heraldhq/herald/tasks"
	"github.com/heraldhq/herald/templates"
)

// Worker runs Herald's handlers and promoter on one asynq server.
type Worker struct {
	cfg      Config
	reg      *events.Registry
	from     events.Address // the default sender (MailFrom)
	log      zerolog.Logger
	store    *ledger.Store
	keys     *seal.Keyring
	renderer *templates.Renderer
	client   *asynq.Client
	insp     *asynq.Inspector
	backoff  Backoff
	domain   string
	metrics  *metrics
	promoter *promoter
	sweeper  *sweeper
	alerts   alerts
	dbWait   dbWaiters
	running  sync.WaitGroup // handlers in flight, waited for by Shutdown

	mu     sync.Mutex
	server *asynq.Server
	stop   context.CancelFunc
	done   chan struct{}
}

// NewWorker builds a worker from settings with their defaults applied (herald.Config's
// WithDefaults, converted). It starts nothing.
func NewWorker(cfg Config, deps Deps) (*Worker, error) {
	if err := cfg.check(deps); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	keys, err := seal.ParseKeys(cfg.SecretKeys)
	if err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	r := deps.Renderer
	if r == nil {
		if r, err = templates.New(deps.Registry); err != nil {
			return nil, fmt.Errorf("worker config: %w", err)
		}
	}
	var from events.Address
	if cfg.MailFrom != "" {
		a, err := mail.ParseAddress(cfg.MailFrom)
		if err != nil {
			return nil, fmt.Errorf("worker config: HERALD_MAIL_FROM %q is not an address: %w", cfg.MailFrom, err)
		}
		from = events.Address{Name: a.Name, Address: a.Address}
	}
	domain := cfg.MessageIDDomain
	if domain == "" && from.Address != "" {
		_, domain, _ = strings.Cut(from.Address, "@")
	}
	domain = strings.TrimSpace(cmpOr(domain, "herald.invalid"))
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = *cfg.Logger
	}
	w := &Worker{
		cfg:      cfg,
		reg:      deps.Registry,
		from:     from,
		log:      log,
		store:    ledger.New(cfg.DB),
		keys:     keys,
		renderer: r,
		client:   asynq.NewClient(cfg.Redis),
		insp:     asynq.NewInspector(cfg.Redis),
		backoff:  Backoff{Min: cfg.BackoffMin, Max: cfg.BackoffMax},
		domain:   domain,
	}
	m, err := newMetrics(deps.Metrics, w.dbWait.count)
	if err != nil {
		return nil, fmt.Errorf("worker metrics: %w", err)
	}
	w.metrics = m
	w.promoter = &promoter{store: w.store, cfg: cfg, log: log, metrics: m, enqueue: w.enqueueStuck}
	w.sweeper = &sweeper{store: w.store, cfg: cfg, log: log, metrics: m}
	return w, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Handler returns the asynq handler of herald:dispatch and herald:deliver (tasks.NewServeMux on
// this worker) behind the guard every run needs.
func (w *Worker) Handler() asynq.Handler {
	mux := tasks.NewServeMux(w)
	mux.Use(w.guard)
	return mux
}

var _ tasks.Handlers = (*Worker)(nil)

// guard wraps every handler run: Shutdown waits for it; an error that means "PostgreSQL is
// unreachable" becomes a wait that asynq does not count as a failure; and a panic that escaped
// the engine's own recovery is turned into an error that names no value (asynq keeps task
// errors in Redis, where no secret may go).
func (w *Worker) guard(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
		w.running.Add(1)
		defer w.running.Done()
		id, _ := asynq.GetTaskID(ctx)
		defer func() {
			if p := recover(); p != nil {
				w.log.Error().Str("task_type", t.Type()).Str("task_id", id).Str("panic_type", fmt.Sprintf("%T", p)).
					Bytes("stack", debug.Stack()).Msg("recovered a panic in a Herald handler; the task will be retried (report this)")
				err = errors.New("panic in a Herald handler (see the worker log)")
			}
		}()
		err = next.ProcessTask(ctx, t)
		if ctx.Err() == nil && !errors.Is(err, context.Canceled) && w.unreachable(ctx, err) {
			return &waitDBError{err: err, delay: w.dbWait.wait(id)}
		}
		w.dbWait.done(id)
		return err
	})
}

// AsynqConfig is the asynq server configuration Herald's handler needs: its queue, concurrency
// and polling, and the hooks IsFailure, RetryDelay and HandleError.
func (w *Worker) AsynqConfig() asynq.Config {
	return asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   map[string]int{w.cfg.Queue: 1},
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: w.cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          w.cfg.ShutdownTimeout,
		RetryDelayFunc:           w.RetryDelay,
		IsFailure:                w.IsFailure,
		ErrorHandler:             asynq.ErrorHandlerFunc(w.HandleError),
		Logger:                   asynqLogger{w.log.With().Str("component", "asynq").Logger()},
		LogLevel:                 asynq.WarnLevel,
		BaseContext:              func() context.Context { return w.log.WithContext(context.Background()) },
	}
}

// IsFailure is asynq's IsFailure hook: waiting for a row to be due, for PostgreSQL, or for a
// failed hold of a newer payload (whose payload exists nowhere else) is not a failure. A newer
// payload's retry (newerPayloadRetry) is: asynq's retry count ends it.
func (w *Worker) IsFailure(err error) bool {
	return !errors.As(err, new(*notDueError)) && !errors.As(err, new(*waitDBError)) && !errors.As(err, new(*holdFailed))
}

// Start starts the asynq server and the promoter. Stop them with Shutdown.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.server != nil {
		return errors.New("worker already started")
	}
	srv := asynq.NewServer(w.cfg.Redis, w.AsynqConfig())
	if err := srv.Start(w.Handler()); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.server, w.stop, w.done = srv, cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		w.RunMaintenance(pctx)
	}()
	return nil
}

// Shutdown stops the promoter and fetching tasks, waits up to ShutdownTimeout for running ones
// (asynq then hands them back to the queue), and then waits for every handler that is still
// running to return: a send is bounded by SendTimeout, and an outcome it confirmed is recorded
// before Shutdown returns, so nothing is closed under it.
func (w *Worker) Shutdown() {
	w.mu.Lock()
	srv, stop, done := w.server, w.stop, w.done
	w.server = nil
	w.mu.Unlock()
	if srv == nil {
		return
	}
	stop()
	<-done
	srv.Shutdown()
	w.Drain()
}

// Drain waits for every handler still running to return: a send is bounded by SendTimeout, so
// what is left is an outcome waiting for PostgreSQL, recorded before Drain returns so nothing is
// closed under it. Past the lease another worker may reclaim the delivery anyway: it stops
// waiting then. An application that mounted Herald calls it after its asynq server's Shutdown.
func (w *Worker) Drain() {
	finished := make(chan struct{})
	go func() { w.running.Wait(); close(finished) }()
	giveUp := time.After(w.cfg.Lease)
	for {
		select {
		case <-finished:
			return
		case <-giveUp:
			w.log.Error().Dur("waited", w.cfg.Lease).Msg("shutdown: gave up waiting for running handlers to record their outcomes " +
				"(PostgreSQL unreachable?); their deliveries will be reclaimed and flagged in doubt")
			return
		case <-time.After(5 * time.Second):
			w.log.Warn().Msg("shutdown: waiting for running deliveries to record their outcomes")
		}
	}
}

// Close releases the worker's Redis clients. Call it after Shutdown.
func (w *Worker) Close() error {
	return errors.Join(w.client.Close(), w.insp.Close())
}

// notDueError asks asynq to run the task again when the row is due (clock skew between the
// worker and Postgres). It is not counted as a failure.
type notDueError struct{ due time.Time }

func (e *notDueError) Error() string { return "not due until " + e.due.UTC().Format(time.RFC3339Nano) }

// RetryDelay is asynq's RetryDelayFunc: the wait each of Herald's own retry reasons asks for,
// else the backoff.
func (w *Worker) RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var nd *notDueError
	if errors.As(err, &nd) {
		return max(time.Until(nd.due), 0) + 50*time.Millisecond
	}
	var wd *waitDBError
	if errors.As(err, &wd) {
		return wd.delay
	}
	var np *newerPayloadRetry
	if errors.As(err, &np) {
		return np.delay
	}
	var hf *holdFailed
	if errors.As(err, &hf) {
		return hf.delay
	}
	return w.backoff.Delay(n + 1)
}

// HandleError is asynq's ErrorHandler: it sees every handler error, including the RevokeTask
// that ends a task whose outcome PostgreSQL holds (a normal end, not logged). Levels mean
// something: a wait for PostgreSQL, a newer payload waiting for a newer worker, or a database
// error asynq retries is a warning; error level is kept for what needs a person (a panic, a task
// asynq gives up on).
func (w *Worker) HandleError(ctx context.Context, t *asynq.Task, err error) {
	if errors.Is(err, asynq.RevokeTask) || errors.As(err, new(*notDueError)) {
		return
	}
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	var wd *waitDBError
	var np *newerPayloadRetry
	var hf *holdFailed
	switch {
	case errors.As(err, &wd):
		w.log.Warn().Err(err).Str("task_type", t.Type()).Str("task_id", id).Msg("PostgreSQL is unreachable; the task waits for it (not counted as a failure)")
	case errors.As(err, &np):
		w.log.Warn().Str("task_type", t.Type()).Str("task_id", id).Int("payload_version", np.err.Version).
			Int("understood_version", np.err.Understood).Int("retried", retried).Int("max_retry", maxRetry).Dur("retry_in", np.delay).
			Msg("payload of a newer version than this worker understands (rolling deploy?); handed back to asynq for a newer worker")
	case errors.As(err, &hf):
		w.log.Warn().Err(err).Str("task_type", t.Type()).Str("task_id", id).Dur("retry_in", hf.delay).
			Msg("could not keep a task of a newer payload version for a newer worker; it is tried again (not counted as a failure)")
	case retried >= maxRetry:
		w.log.Error().Err(err).Str("task_type", t.Type()).Str("task_id", id).Int("retried", retried).
			Msg("task failed and asynq archives it; the promoter re-creates it if PostgreSQL holds its row")
	default:
		w.log.Warn().Err(err).Str("task_type", t.Type()).Str("task_id", id).Int("retried", retried).Int("max_retry", maxRetry).
			Msg("task failed; asynq will run it again")
	}
}

// enqueue hands a task to asynq. A task id that already exists is success — unless that task
// is archived or completed, in which case it is replaced (it will never run again).
func (w *Worker) enqueue(ctx context.Context, typ, taskID string, payload []byte, due time.Time) error {
	return w.enqueueTask(ctx, typ, taskID, payload, due, false)
}

// enqueueStuck is the promoter's enqueue. The promoter only hands over rows nobody has claimed
// (or whose lease expired) and that were not enqueued within RequeueAfter, so an active task
// under the same id has held it that long without claiming it: its worker died (asynq's
// recoverer would bring it back only after its own lease, up to about 90 s). The work is then
// enqueued under a second id; the claim keeps it single-effect.
func (w *Worker) enqueueStuck(ctx context.Context, typ, taskID string, payload []byte, due time.Time) error {
	return w.enqueueTask(ctx, typ, taskID, payload, due, true)
}

func (w *Worker) enqueueTask(ctx context.Context, typ, taskID string, payload []byte, due time.Time, stuck bool) error {
	opts := []asynq.Option{
		asynq.TaskID(taskID), asynq.Queue(w.cfg.Queue), asynq.MaxRetry(w.cfg.AsynqRetries),
		asynq.Timeout(w.cfg.TaskTimeout),
	}
	if due.After(time.Now()) {
		opts = append(opts, asynq.ProcessAt(roundUp(due)))
	}
	t := asynq.NewTask(typ, payload, opts...)
	_, err := w.client.EnqueueContext(ctx, t)
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		if err != nil {
			return fmt.Errorf("enqueue %s: %w", taskID, err)
		}
		return nil
	}
	info, ierr := w.insp.GetTaskInfo(w.cfg.Queue, taskID)
	if ierr == nil && info.State == asynq.TaskStateActive && stuck {
		again := fmt.Sprintf("%s:again:%d", taskID, time.Now().UnixNano())
		w.log.Info().Str("task_id", taskID).Str("new_task_id", again).
			Msg("promoter: the task holding this work is active but never claimed it (its worker died); enqueueing it again")
		return w.enqueueTask(ctx, typ, again, payload, due, false)
	}
	if ierr != nil || (info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted) {
		return nil // pending, scheduled, retry or active: it will run
	}
	if derr := w.insp.DeleteTask(w.cfg.Queue, taskID); derr != nil {
		return fmt.Errorf("replace dead task %s: %w", taskID, derr)
	}
	if _, err := w.client.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue %s: %w", taskID, err)
	}
	return nil
}

type asynqLogger struct{ l zerolog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Fatal().Msg(fmt.Sprint(args...)) }

// redactor hides secret values in text bound for receipts, logs and errors: each value as it
// is and as error messages commonly spell it — Go-quoted (%q, ASCII or not), JSON-escaped, and
// URL-escaped. Values shorter than 4 bytes are left alone (replacing them would mangle the text
// and hide nothing worth hiding).
type redactor []string

func (r redactor) apply(s string) string {
	for _, v := range r {
		if len(v) < 4 {
			continue
		}
		j, _ := json.Marshal(v)
		for _, form := range []string{v, unquote(strconv.Quote(v)), unquote(strconv.QuoteToASCII(v)), unquote(string(j)),
			url.QueryEscape(v), url.PathEscape(v)} {
			if form != "" {
				s = strings.ReplaceAll(s, form, "[REDACTED]")
			}
		}
	}
	return s
}

// unquote strips the quotes around a quoted string.
func unquote(q string) string {
	if len(q) >= 2 {
		return q[1 : len(q)-1]
	}
	return q
}
