package herald

import (
	"context"
	"errors"
	"maps"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/events"
)

// Mounted is Herald on an asynq server of the application's own. It comes in three parts that
// only work together: the Handler; the asynq.Config hooks it relies on (Configure sets them);
// and the maintenance (RunMaintenance: the promoter and the sweeper). The handler alone would
// lose work silently: a task that is not due yet would count as failed, a delivery waiting in
// PostgreSQL beyond the horizon would never be enqueued, and a task Redis lost never re-created.
type Mounted struct {
	// Handler serves herald:dispatch and herald:deliver. Register it for both task types, e.g.
	// mux.Handle(herald.TaskPrefix, m.Handler) on an asynq.ServeMux (it matches by prefix).
	Handler asynq.Handler
	// IsFailure, RetryDelayFunc and ErrorHandler are the hooks Herald's tasks need on the
	// asynq.Config of the server that runs Handler. Configure installs them.
	IsFailure      func(error) bool
	RetryDelayFunc asynq.RetryDelayFunc
	ErrorHandler   asynq.ErrorHandler

	queue    string
	shutdown time.Duration
	b        *built
}

// TaskPrefix begins the type name of every Herald task.
const TaskPrefix = "herald:"

// Mount builds Herald's handler, hooks and maintenance from cfg (validated like Run's: the
// pool is opened and migrated, Redis checked, the email transport configured), for an asynq
// server the application runs itself. Serve cfg.Queue on that server, call Configure on its
// asynq.Config, run RunMaintenance beside it, and Close after the server's Shutdown.
func Mount(ctx context.Context, cfg Config, reg *events.Registry) (*Mounted, error) {
	b, err := build(ctx, cfg, reg, nil)
	if err != nil {
		return nil, err
	}
	w := b.worker
	return &Mounted{Handler: mark(w.Handler()), IsFailure: w.IsFailure, RetryDelayFunc: w.RetryDelay,
		ErrorHandler: asynq.ErrorHandlerFunc(w.HandleError), queue: b.cfg.Queue, shutdown: b.cfg.ShutdownTimeout, b: b}, nil
}

// Configure installs Herald's hooks on c, keeping the application's own for its other tasks:
// an error of Herald's handler is a failure or not by Herald's rule alone, any other by the
// application's (every error, if it had none); Herald's tasks take Herald's retry delays and
// error handler, other tasks the ones c had (asynq's default delay if none). When c
// does not serve Herald's queue it is added (priority 1): a server that does not poll it would
// leave Herald's tasks waiting forever. Its ShutdownTimeout is raised to Herald's
// (asynq's default, 8 s, would cut off a send still running at shutdown: Herald's exceeds the
// send timeout).
func (m *Mounted) Configure(c *asynq.Config) {
	own := c.IsFailure
	c.IsFailure = func(err error) bool {
		if errors.As(err, new(*taskError)) {
			return m.IsFailure(err)
		}
		if own != nil {
			return own(err)
		}
		return err != nil // asynq's default: every error counts
	}
	ownDelay := c.RetryDelayFunc
	if ownDelay == nil {
		ownDelay = asynq.DefaultRetryDelayFunc
	}
	c.RetryDelayFunc = func(n int, err error, t *asynq.Task) time.Duration {
		if strings.HasPrefix(t.Type(), TaskPrefix) {
			return m.RetryDelayFunc(n, err, t)
		}
		return ownDelay(n, err, t)
	}
	ownErr := c.ErrorHandler
	c.ErrorHandler = asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
		if strings.HasPrefix(t.Type(), TaskPrefix) {
			m.ErrorHandler.HandleError(ctx, t, err)
		} else if ownErr != nil {
			ownErr.HandleError(ctx, t, err)
		}
	})
	if _, ok := c.Queues[m.queue]; !ok {
		qs := maps.Clone(c.Queues) // the application's map stays as it was
		if qs == nil {
			qs = map[string]int{}
		}
		qs[m.queue] = 1
		c.Queues = qs
	}
	c.ShutdownTimeout = max(c.ShutdownTimeout, m.shutdown)
}

// RunMaintenance runs the promoter (enqueue what is due, re-create lost tasks, reclaim expired
// leases) and the sweeper (scrub secrets, release idempotency keys, delete past retention) until
// ctx is done. Run it in every process that mounts Herald; they share the work safely.
func (m *Mounted) RunMaintenance(ctx context.Context) { m.b.worker.RunMaintenance(ctx) }

// Close waits for Herald's handlers still running (call it after the asynq server's Shutdown)
// and releases what Mount opened.
func (m *Mounted) Close() {
	m.b.worker.Drain()
	m.b.close()
}

// taskError marks an error returned by Herald's handler, so that Configure's IsFailure can tell
// it from the application's errors (asynq's hook does not see the task). It unwraps, so asynq
// still recognises RevokeTask and SkipRetry through it, and reads the same.
type taskError struct{ err error }

func (e *taskError) Error() string { return e.err.Error() }
func (e *taskError) Unwrap() error { return e.err }

// mark wraps every error of h in a taskError.
func mark(h asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if err := h.ProcessTask(ctx, t); err != nil {
			return &taskError{err}
		}
		return nil
	})
}
