package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/events"
)

// DispatchRow is a row of herald.dispatches.
type DispatchRow struct {
	ID             string
	EventID        string
	Refs           []events.Ref
	Vars           json.RawMessage   // non-secret variables, exact JSON
	Sealed         map[string]string // producer secrets, sealed; nil once scrubbed
	Minted         map[string]Minted // SendVariables output; nil until minted or once scrubbed
	Actor          string
	IdempotencyKey string
	Fingerprint    string
	DuplicateOf    string
	Status         Status
	Attempt        int
	DueAt          time.Time
	LeaseUntil     *time.Time
	LastError      string
	AcceptedAt     time.Time
	UpdatedAt      time.Time
	ScrubbedAt     *time.Time
	// Progress is where a fan-out committed in chunks has got to (nil: no chunk committed yet).
	Progress json.RawMessage
	// Queue is the asynq queue of the fleet whose promoter drives this dispatch; "" for a row
	// written before queues were recorded, which any fleet's promoter takes.
	Queue string
}

// Minted is one value made by SendVariables: sealed when secret, else plain JSON.
type Minted struct {
	Sealed string          `json:"sealed,omitempty"`
	Value  json.RawMessage `json:"value,omitempty"`
}

// NewDispatch is what a producer or the fan-out inserts.
type NewDispatch struct {
	ID             string
	EventID        string
	Refs           []events.Ref
	Vars           json.RawMessage
	Sealed         map[string]string
	Actor          string
	IdempotencyKey string
	Fingerprint    string
	AcceptedAt     time.Time // zero: now()
	// Queue is the producer's queue: only that fleet's promoter drives the dispatch. "" means any
	// fleet (rows written before queues were recorded).
	Queue string
	// ClaimFor, when positive, inserts the dispatch already claimed for fan-out (fanning_out,
	// attempt 1, this lease) if it is due: a worker's first sight saves a round trip. The
	// returned InsertResult.Row says whether it was claimed.
	ClaimFor time.Duration
}

// InsertOutcome says what InsertDispatch did.
type InsertOutcome int

const (
	Inserted  InsertOutcome = iota // a new row
	Exists                         // a row with this id was already there (a replayed task)
	Duplicate                      // the key is held by Of with the same fingerprint
	Conflict                       // the key is held by Of with a different fingerprint
)

// InsertResult is InsertDispatch's answer.
type InsertResult struct {
	Outcome InsertOutcome
	Of      string       // the dispatch holding the idempotency key (Duplicate, Conflict)
	Row     *DispatchRow // the inserted row (Inserted)
}

// ErrIdempotencyConflict is returned when an idempotency key was used with different arguments.
var ErrIdempotencyConflict = errors.New("idempotency key already used with different arguments")

const dispatchColumns = `id, event_id, refs, vars, sealed, minted, actor, COALESCE(idempotency_key, ''),
	fingerprint, COALESCE(duplicate_of::text, ''), status, attempt, due_at, lease_until, COALESCE(last_error, ''),
	accepted_at, updated_at, scrubbed_at, queue, fanout_progress`

func scanDispatch(row pgx.Row) (*DispatchRow, error) {
	var d DispatchRow
	var refs, sealed, minted []byte
	var st string
	err := row.Scan(&d.ID, &d.EventID, &refs, &d.Vars, &sealed, &minted, &d.Actor, &d.IdempotencyKey,
		&d.Fingerprint, &d.DuplicateOf, &st, &d.Attempt, &d.DueAt, &d.LeaseUntil, &d.LastError,
		&d.AcceptedAt, &d.UpdatedAt, &d.ScrubbedAt, &d.Queue, &d.Progress)
	if err != nil {
		return nil, err
	}
	d.Status = Status(st)
	if err := json.Unmarshal(refs, &d.Refs); err != nil {
		return nil, fmt.Errorf("dispatch %s: refs: %w", d.ID, err)
	}
	if sealed != nil {
		if err := json.Unmarshal(sealed, &d.Sealed); err != nil {
			return nil, fmt.Errorf("dispatch %s: sealed: %w", d.ID, err)
		}
	}
	if minted != nil {
		if err := json.Unmarshal(minted, &d.Minted); err != nil {
			return nil, fmt.Errorf("dispatch %s: minted: %w", d.ID, err)
		}
	}
	return &d, nil
}

// GetDispatch returns one dispatch.
func (s *Store) GetDispatch(ctx context.Context, id string) (*DispatchRow, error) {
	d, err := scanDispatch(s.q.QueryRow(ctx, `SELECT `+dispatchColumns+` FROM herald.dispatches WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("dispatch %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get dispatch %s: %w", id, err)
	}
	return d, nil
}

// InsertDispatch inserts an accepted dispatch, honouring its idempotency key within window:
// a key held by another dispatch yields Duplicate (same fingerprint) or Conflict, and nothing is
// inserted. Keys older than window are released first. Safe under concurrency: two inserts with
// one key serialise on the unique index.
func (s *Store) InsertDispatch(ctx context.Context, nd NewDispatch, window time.Duration) (InsertResult, error) {
	if nd.IdempotencyKey != "" {
		if _, err := s.q.Exec(ctx, `UPDATE herald.dispatches SET idempotency_key = NULL
			WHERE event_id = $1 AND idempotency_key = $2 AND accepted_at < now() - $3::interval`,
			nd.EventID, nd.IdempotencyKey, window); err != nil {
			return InsertResult{}, fmt.Errorf("insert dispatch %s: release old key: %w", nd.ID, err)
		}
	}
	for range 3 {
		res, err := s.insertDispatchRow(ctx, nd, DispatchAccepted, "", "")
		if err != nil || res.Outcome == Inserted || res.Outcome == Exists {
			return res, err
		}
		var holder, fp string
		err = s.q.QueryRow(ctx, `SELECT id, fingerprint FROM herald.dispatches
			WHERE event_id = $1 AND idempotency_key = $2`, nd.EventID, nd.IdempotencyKey).Scan(&holder, &fp)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // released meanwhile; try again
		}
		if err != nil {
			return InsertResult{}, fmt.Errorf("insert dispatch %s: idempotency lookup: %w", nd.ID, err)
		}
		if fp == nd.Fingerprint {
			return InsertResult{Outcome: Duplicate, Of: holder}, nil
		}
		return InsertResult{Outcome: Conflict, Of: holder}, nil
	}
	return InsertResult{}, fmt.Errorf("insert dispatch %s: idempotency key %q kept changing hands", nd.ID, nd.IdempotencyKey)
}

// InsertSettled records a dispatch that was settled on first sight (Duplicate or Conflict), so
// that its id answers status queries. It never holds the idempotency key.
func (s *Store) InsertSettled(ctx context.Context, nd NewDispatch, res InsertResult) error {
	st, reason := DispatchDuplicate, fmt.Sprintf("idempotency key %q: same arguments as dispatch %s", nd.IdempotencyKey, res.Of)
	if res.Outcome == Conflict {
		st, reason = DispatchRejected, fmt.Sprintf("idempotency_conflict: key %q was used by dispatch %s with different arguments", nd.IdempotencyKey, res.Of)
	}
	nd.IdempotencyKey = ""
	nd.Sealed = nil // nothing will be sent: keep no secret
	_, err := s.insertDispatchRow(ctx, nd, st, res.Of, reason)
	return err
}

func (s *Store) insertDispatchRow(ctx context.Context, nd NewDispatch, st Status, dupOf, lastError string) (InsertResult, error) {
	refs, err := json.Marshal(nd.Refs)
	if err != nil {
		return InsertResult{}, err
	}
	if nd.Refs == nil {
		refs = []byte("[]")
	}
	vars := nd.Vars
	if len(vars) == 0 {
		vars = json.RawMessage("{}")
	}
	var sealed []byte
	if len(nd.Sealed) > 0 {
		if sealed, err = json.Marshal(nd.Sealed); err != nil {
			return InsertResult{}, err
		}
	}
	var accepted *time.Time
	if !nd.AcceptedAt.IsZero() {
		accepted = &nd.AcceptedAt
	}
	claim := time.Duration(0)
	if st == DispatchAccepted && nd.ClaimFor > 0 {
		claim = nd.ClaimFor
	}
	row, err := scanDispatch(s.q.QueryRow(ctx, `WITH v AS (SELECT COALESCE($12::timestamptz, now()) AS at,
		        $13::interval > interval '0' AND COALESCE($12::timestamptz, now()) <= now() AS claim)
		INSERT INTO herald.dispatches
		(id, event_id, refs, vars, sealed, actor, idempotency_key, fingerprint, status, duplicate_of, last_error, accepted_at, due_at,
		 attempt, lease_until, queue)
		SELECT $1, $2, $3, $4, $5, $6, NULLIF($7, ''), $8, CASE WHEN v.claim THEN 'fanning_out' ELSE $9 END,
		       NULLIF($10, '')::uuid, NULLIF($11, ''), v.at, v.at,
		       CASE WHEN v.claim THEN 1 ELSE 0 END, CASE WHEN v.claim THEN now() + $13::interval END, $14
		FROM v
		ON CONFLICT DO NOTHING RETURNING `+dispatchColumns,
		nd.ID, nd.EventID, refs, vars, sealed, nd.Actor, nd.IdempotencyKey, nd.Fingerprint, string(st), dupOf, lastError, accepted, claim,
		nd.Queue))
	if err == nil {
		return InsertResult{Outcome: Inserted, Row: row}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return InsertResult{}, fmt.Errorf("insert dispatch %s: %w", nd.ID, err)
	}
	var exists bool
	if err := s.q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM herald.dispatches WHERE id = $1)`, nd.ID).Scan(&exists); err != nil {
		return InsertResult{}, fmt.Errorf("insert dispatch %s: %w", nd.ID, err)
	}
	if exists {
		return InsertResult{Outcome: Exists}, nil
	}
	if nd.IdempotencyKey == "" {
		return InsertResult{}, fmt.Errorf("insert dispatch %s: conflict without id or key", nd.ID)
	}
	return InsertResult{Outcome: Conflict}, nil // caller looks up the holder
}

// StoreMinted records SendVariables' output once, fenced on the fan-out attempt.
func (s *Store) StoreMinted(ctx context.Context, id string, attempt int, minted map[string]Minted) error {
	b, err := json.Marshal(minted)
	if err != nil {
		return err
	}
	tag, err := s.q.Exec(ctx, `UPDATE herald.dispatches SET minted = $3, updated_at = now()
		WHERE id = $1 AND attempt = $2 AND status = 'fanning_out' AND minted IS NULL`, id, attempt, b)
	if err != nil {
		return fmt.Errorf("store minted values of dispatch %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("store minted values of dispatch %s attempt %d: %w", id, attempt, ErrTransition)
	}
	return nil
}

// MarkDispatchesEnqueued notes that tasks for ids were handed to the queue.
func (s *Store) MarkDispatchesEnqueued(ctx context.Context, ids []string) error {
	_, err := s.q.Exec(ctx, `UPDATE herald.dispatches SET enqueued_at = now() WHERE id = ANY($1)`, ids)
	return err
}

// Canceled is what CancelDispatch did.
type Canceled struct {
	// Was is the dispatch's state before the cancel ("" when no row existed: a tombstone was
	// written). A dispatch already final (fanned_out, failed, …) stays as it was.
	Was Status
	// Dispatch: the dispatch itself moved to canceled, so no fan-out will create deliveries.
	Dispatch bool
	// Tombstone: no worker had seen the dispatch yet; a canceled row now waits for its task,
	// and the worker's first sight respects it (the retention keeps it until then: MeetTombstone).
	Tombstone bool
	// Receipts is how many deliveries that had not started were canceled.
	Receipts int64
}

// CancelDispatch cancels a dispatch at whatever stage it is (DESIGN.md, "canceled from every
// non-final state"): a dispatch that is accepted, retrying or fanning out moves to canceled, and a
// fan-out in progress then commits nothing more; deliveries that have not started (scheduled,
// retrying) are canceled; a delivery being sent finishes. With tombstone, an id PostgreSQL does
// not know yet (its task still waits in Redis) gets a canceled row that its first sight
// respects; without it, such an id is ErrNotFound. Run it in a transaction of its own, or pass a
// pool: the dispatch row is locked first, so a fan-out chunk that commits concurrently is either
// fenced off or canceled with the rest.
func (s *Store) CancelDispatch(ctx context.Context, id, reason string, tombstone bool) (Canceled, error) {
	var c Canceled
	var was string
	err := s.q.QueryRow(ctx, `WITH prev AS (SELECT id, status FROM herald.dispatches WHERE id = $1 FOR UPDATE),
		upd AS (UPDATE herald.dispatches d SET status = 'canceled', last_error = NULLIF($2, ''), lease_until = NULL,
		               enqueued_at = NULL, updated_at = now()
		        FROM prev WHERE d.id = prev.id AND prev.status = ANY($3) RETURNING d.id)
		SELECT prev.status, EXISTS (SELECT 1 FROM upd) FROM prev`, id, reason, From(KindDispatch, DispatchCanceled)).Scan(&was, &c.Dispatch)
	switch {
	case errors.Is(err, pgx.ErrNoRows) && tombstone:
		tag, err := s.q.Exec(ctx, `INSERT INTO herald.dispatches (id, event_id, status, last_error)
			VALUES ($1, '', 'canceled', NULLIF($2, '')) ON CONFLICT (id) DO NOTHING`, id, reason)
		if err != nil {
			return c, fmt.Errorf("cancel dispatch %s: tombstone: %w", id, err)
		}
		if tag.RowsAffected() == 0 { // its first sight won the race: cancel what is there now
			return s.CancelDispatch(ctx, id, reason, false)
		}
		c.Tombstone, c.Dispatch = true, true
		return c, nil
	case errors.Is(err, pgx.ErrNoRows):
		return c, fmt.Errorf("dispatch %s: %w", id, ErrNotFound)
	case err != nil:
		return c, fmt.Errorf("cancel dispatch %s: %w", id, err)
	}
	c.Was = Status(was)
	n, err := s.CancelReceipts(ctx, id, reason)
	c.Receipts = n
	return c, err
}

// MeetTombstone records that the task of dispatch id met its cancel tombstone (the canceled row
// CancelDispatch wrote before any worker had seen the dispatch), and stops there: the retention
// keeps a tombstone until then, since its task may still wait in Redis and would send without it
// (internal/ledger/retention.go). It counts from now on. Any other row is left as it is.
func (s *Store) MeetTombstone(ctx context.Context, id string) error {
	if _, err := s.q.Exec(ctx, `UPDATE herald.dispatches SET retention_from = now()
		WHERE id = $1 AND event_id = '' AND status = 'canceled' AND retention_from IS NULL`, id); err != nil {
		return fmt.Errorf("dispatch %s: meet its tombstone: %w", id, err)
	}
	return nil
}
