package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/canon"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/seal"
	"github.com/heraldhq/herald/tasks"
)

// Client is the producer half of the engine, behind herald.Client. It is safe for concurrent use.
type Client struct {
	cfg    Config
	keys   *seal.Keyring
	client *asynq.Client
}

// NewClient returns a Client on settings with their defaults applied (herald.Config's
// WithDefaults, converted). cfg.Redis is needed by Dispatch and RequeueRejected only; cfg.DB
// by RequeueRejected only.
func NewClient(cfg Config) (*Client, error) {
	if err := CheckAsynqRetries(cfg.AsynqRetries); err != nil {
		return nil, fmt.Errorf("herald client: %w", err)
	}
	if cfg.Queue == "" || cfg.IdempotencyWindow <= 0 || cfg.TaskTimeout <= 0 {
		return nil, errors.New("herald client: settings without defaults: build them with herald.Config.WithDefaults")
	}
	keys, err := seal.ParseKeys(cfg.SecretKeys)
	if err != nil {
		return nil, fmt.Errorf("herald client: %w", err)
	}
	c := &Client{cfg: cfg, keys: keys}
	if cfg.Redis != nil {
		c.client = asynq.NewClient(cfg.Redis)
	}
	return c, nil
}

// Close releases the Redis connection.
func (c *Client) Close() error {
	if c.client == nil {
		return nil
	}
	return c.client.Close()
}

// Option tunes one dispatch.
type Option func(*options)

type options struct {
	key   string
	actor string
}

// IdempotencyKey makes the dispatch idempotent within the window: the same key with the same
// arguments is the first dispatch; with different arguments it is a conflict.
func IdempotencyKey(k string) Option { return func(o *options) { o.key = k } }

// Actor records who caused the dispatch (an admin's id, "cli", …).
func Actor(a string) Option { return func(o *options) { o.actor = a } }

// ErrIdempotencyConflict is returned by DispatchTx when the key was used with other arguments.
var ErrIdempotencyConflict = ledger.ErrIdempotencyConflict

// ErrInvalidDispatch is wrapped by errors about the dispatch's own arguments.
var ErrInvalidDispatch = errors.New("invalid dispatch")

type prepared struct {
	id      string
	eventID string
	refs    []events.Ref
	vars    json.RawMessage
	secrets map[string]string
	opts    options
	now     time.Time
}

// prepare checks a dispatch's arguments and seals its secrets with keys: every entry point
// (Dispatch, DispatchTx, a manual trigger) goes through it.
func prepare(keys *seal.Keyring, eventID string, refs []events.Ref, vars map[string]any, opts []Option) (*prepared, error) {
	if err := events.ValidateID(eventID); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
	}
	seen := map[string]bool{}
	for _, r := range refs {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%w: reference name %q appears twice", ErrInvalidDispatch, r.Name)
		}
		seen[r.Name] = true
	}
	p := &prepared{id: uuid.Must(uuid.NewV7()).String(), eventID: eventID, refs: refs, now: time.Now().UTC()}
	for _, o := range opts {
		o(&p.opts)
	}
	if len(p.opts.key) > 255 {
		return nil, fmt.Errorf("%w: idempotency key longer than 255 characters", ErrInvalidDispatch)
	}
	if err := canon.Text("idempotency key", p.opts.key); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
	}
	if err := canon.Text("actor", p.opts.actor); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
	}
	plain := map[string]any{}
	for k, v := range vars {
		if seen[k] {
			return nil, fmt.Errorf("%w: variable %q has the name of a reference", ErrInvalidDispatch, k)
		}
		if err := canon.Text("variable name", k); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
		}
		if s, ok := v.(events.Secret); ok {
			sealed, err := keys.Seal(s.Reveal(), seal.AAD(p.id, k))
			if err != nil {
				return nil, err
			}
			if p.secrets == nil {
				p.secrets = map[string]string{}
			}
			p.secrets[k] = sealed
			continue
		}
		if err := canon.GoValue(v, k); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
		}
		plain[k] = v
	}
	raw, err := json.Marshal(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: variables: %w", ErrInvalidDispatch, err)
	}
	if p.vars, err = canon.Vars(raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDispatch, err)
	}
	if err := canon.JSON(p.vars); err != nil {
		return nil, fmt.Errorf("%w: variables: %w", ErrInvalidDispatch, err)
	}
	return p, nil
}

// Dispatch enqueues event eventID about refs with vars (values of type events.Secret are sealed
// here, before they reach Redis) and returns the new dispatch id. It needs Redis only: Postgres
// learns of the dispatch when a worker picks the task up. With an idempotency key, a repeat is
// recorded as a duplicate of the first dispatch, and a conflicting one as rejected.
func (c *Client) Dispatch(ctx context.Context, eventID string, refs []events.Ref, vars map[string]any, opts ...Option) (Result, error) {
	if c.client == nil {
		return Result{}, errors.New("herald client: Dispatch needs Redis: set HERALD_REDIS_URL (Config.RedisURL)")
	}
	p, err := prepare(c.keys, eventID, refs, vars, opts)
	if err != nil {
		return Result{}, err
	}
	payload, err := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: p.id, EventID: eventID, Refs: refs, Vars: p.vars,
		Secrets: p.secrets, IdempotencyKey: p.opts.key, Actor: p.opts.actor, AcceptedAt: p.now})
	if err != nil {
		return Result{}, err
	}
	if len(payload) > tasks.MaxPayloadBytes {
		return Result{}, fmt.Errorf("%w: the payload is %d bytes, more than %d: pass references to rows, not the rows", ErrInvalidDispatch, len(payload), tasks.MaxPayloadBytes)
	}
	t := asynq.NewTask(tasks.TypeDispatch, payload, asynq.TaskID(tasks.DispatchTaskID(p.id, 0)), asynq.Queue(c.cfg.Queue),
		asynq.MaxRetry(c.cfg.AsynqRetries), asynq.Timeout(c.cfg.TaskTimeout))
	if _, err := c.client.EnqueueContext(ctx, t); err != nil {
		return Result{}, fmt.Errorf("dispatch %s: enqueue: %w", eventID, err)
	}
	return Result{ID: p.id}, nil
}

// Result is the answer of Dispatch and DispatchTx; herald.DispatchResult mirrors it.
type Result struct {
	ID        string // the dispatch id (the first dispatch's, for a duplicate DispatchTx)
	Duplicate bool   // the idempotency key had been used with the same arguments
	Checked   bool   // idempotency was answered at the call (DispatchTx), not later by a worker
}

// DispatchTx records the dispatch inside the caller's transaction: it exists if and only if the
// transaction commits, and a promoter of the client's queue enqueues it after the commit.
// Idempotency is answered at once: a duplicate returns the first dispatch, a conflict
// ErrIdempotencyConflict.
func (c *Client) DispatchTx(ctx context.Context, tx pgx.Tx, eventID string, refs []events.Ref, vars map[string]any, opts ...Option) (Result, error) {
	p, err := prepare(c.keys, eventID, refs, vars, opts)
	if err != nil {
		return Result{}, err
	}
	fp, err := canon.Fingerprint(eventID, refs, p.vars)
	if err != nil {
		return Result{}, err
	}
	res, err := ledger.New(tx).InsertDispatch(ctx, ledger.NewDispatch{ID: p.id, EventID: eventID, Refs: refs, Vars: p.vars,
		Sealed: p.secrets, Actor: p.opts.actor, IdempotencyKey: p.opts.key, Fingerprint: fp, Queue: c.cfg.Queue}, c.cfg.IdempotencyWindow)
	if err != nil {
		return Result{}, err
	}
	switch res.Outcome {
	case ledger.Duplicate:
		return Result{ID: res.Of, Duplicate: true, Checked: true}, nil
	case ledger.Conflict:
		return Result{}, fmt.Errorf("dispatch %s with key %q (first used by %s): %w", eventID, p.opts.key, res.Of, ErrIdempotencyConflict)
	}
	if c.cfg.DisableOutboxNotify {
		return Result{ID: p.id, Checked: true}, nil
	}
	// Delivered at commit (and dropped on rollback): wakes the queue's promoters now rather than
	// at their next tick.
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", OutboxChannel, c.cfg.Queue); err != nil {
		return Result{}, fmt.Errorf("dispatch %s: notify the outbox: %w", eventID, err)
	}
	return Result{ID: p.id, Checked: true}, nil
}
