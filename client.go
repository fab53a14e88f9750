package herald

import (
	"context"
	"errors"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
)

// Client dispatches events: through Redis (Dispatch) or inside the application's own
// PostgreSQL transaction (DispatchTx). It is safe for concurrent use; make one and share it.
type Client struct {
	c *engine.Client
}

// NewClient returns a Client from the same settings as the worker: Queue, SecretKeys (required:
// producer secrets are sealed with the first key), RedisURL or Redis (needed by Dispatch only),
// IdempotencyWindow, TaskTimeout, AsynqRetries and DisableOutboxNotify. ClientConfigFromEnv
// reads them from HERALD_* variables. Other settings are ignored.
func NewClient(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	err := cfg.validateClient()
	if cfg.SecretKeys == "" {
		err = errors.Join(err, errors.New("HERALD_SECRET_KEYS is not set: set it to the workers' kid:base64key list (producer secrets are sealed with its first key)"))
	}
	if err != nil {
		return nil, err
	}
	if cfg.Redis == nil && cfg.RedisURL != "" {
		if cfg.Redis, err = asynq.ParseRedisURI(cfg.RedisURL); err != nil {
			return nil, errors.New("HERALD_REDIS_URL is not a valid redis:// or rediss:// URL (redis://[:password@]host:6379/0)")
		}
	}
	c, err := engine.NewClient(engine.Config(cfg))
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Close releases the Client's Redis connection.
func (c *Client) Close() error { return c.c.Close() }

// DispatchResult is the answer of Dispatch and DispatchTx.
type DispatchResult struct {
	// ID is the dispatch id: a new one, or for a duplicate answered by DispatchTx the id of the
	// first dispatch with the same idempotency key and arguments.
	ID string
	// Duplicate reports that the idempotency key had been used with the same arguments within
	// the window: nothing more will be sent. Only meaningful when Checked.
	Duplicate bool
	// Checked reports whether idempotency was answered at the call. DispatchTx answers at once.
	// Dispatch cannot (it needs Redis only): a worker answers when it first sees the task, and
	// records a repeat as a dispatch in state duplicate (of the first) or rejected (a conflict),
	// which `enqueue status ID` and receipts.Reader show.
	Checked bool
}

// DispatchOption tunes one dispatch.
type DispatchOption func(*dispatchOptions)

type dispatchOptions struct {
	key, actor string
}

// IdempotencyKey makes the dispatch idempotent within IdempotencyWindow: the same key with the
// same arguments is the first dispatch; with different arguments it is a conflict. At most 255
// characters.
func IdempotencyKey(k string) DispatchOption { return func(o *dispatchOptions) { o.key = k } }

// Actor records who caused the dispatch (an admin's id, "cli", …).
func Actor(a string) DispatchOption { return func(o *dispatchOptions) { o.actor = a } }

func engineOptions(opts []DispatchOption) []engine.Option {
	var o dispatchOptions
	for _, f := range opts {
		f(&o)
	}
	return []engine.Option{engine.IdempotencyKey(o.key), engine.Actor(o.actor)}
}

// ErrInvalidDispatch is wrapped by errors about a dispatch's own arguments (event id,
// references, variables, options): retrying the same call cannot succeed.
var ErrInvalidDispatch = engine.ErrInvalidDispatch

// ErrIdempotencyConflict is returned by DispatchTx when the idempotency key was used within the
// window with other arguments.
var ErrIdempotencyConflict = engine.ErrIdempotencyConflict

// Dispatch enqueues event eventID about refs with vars, through Redis only: PostgreSQL learns of
// the dispatch when a worker picks the task up. Values of type events.Secret are sealed here,
// before they reach Redis. The result's ID names the dispatch in receipts and the CLI.
func (c *Client) Dispatch(ctx context.Context, eventID string, refs []events.Ref, vars map[string]any, opts ...DispatchOption) (DispatchResult, error) {
	r, err := c.c.Dispatch(ctx, eventID, refs, vars, engineOptions(opts)...)
	return DispatchResult(r), err
}

// DispatchTx records the dispatch inside the caller's transaction: it exists if and only if the
// transaction commits, and a promoter of the client's queue enqueues it after the commit (at
// once, woken by a NOTIFY, unless DisableOutboxNotify). Idempotency is answered at once: a
// duplicate returns the first dispatch, a conflict ErrIdempotencyConflict.
func (c *Client) DispatchTx(ctx context.Context, tx pgx.Tx, eventID string, refs []events.Ref, vars map[string]any, opts ...DispatchOption) (DispatchResult, error) {
	r, err := c.c.DispatchTx(ctx, tx, eventID, refs, vars, engineOptions(opts)...)
	return DispatchResult(r), err
}
