package ledger

// The claims and fences of both tables, side by side: DESIGN.md invariant 4 (one effect per
// delivery) rests on them. A claim takes a lease and bumps the attempt; every final update is
// fenced on (id, attempt, leased state), so a worker whose lease was taken over changes nothing
// — except a confirmed send, which beats a lease. The promoter's "due" query, one statement for
// both tables, hands over what is due and what a dead worker held.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClaimOutcome says why a claim returned no row, or that it succeeded.
type ClaimOutcome int

const (
	Claimed      ClaimOutcome = iota
	ClaimMissing              // no such row
	ClaimNotDue               // due_at is in the future
	ClaimBusy                 // another worker holds a live lease, or the row is final
)

func (o ClaimOutcome) String() string {
	return [...]string{"claimed", "missing", "not due", "busy or final"}[o]
}

// Claim is a successful receipt claim.
type Claim struct {
	Receipt *ReceiptRow // after the claim: status sending, attempt bumped
	// Reclaimed says this claim took over the expired lease of an attempt that was sending: that
	// attempt may have reached the transport, so this one is in doubt. It is true only for the
	// claim that took the lease over, unlike the sticky Receipt.InDoubt.
	Reclaimed bool
}

// claimSQL is the claim of one table, one statement for both (DESIGN.md invariant 4): the row
// moves to its leased state (fanning_out, sending) from a waiting state once it is due, or from
// the leased state itself once that lease expired (a reclaim); attempt+1 and a new lease. The
// allowed predecessors ($3) come from the transition table. It returns the row's columns and
// whether the claim took over an expired lease; for a receipt that takeover flags it in doubt
// (the attempt it took over may have reached the transport).
func claimSQL(kind Kind) string {
	table, leased, columns, inDoubt := "herald.dispatches", string(DispatchFanningOut), dispatchColumns, ""
	if kind == KindReceipt {
		table, leased, columns = "herald.receipts", string(ReceiptSending), receiptColumns
		inDoubt = "in_doubt = in_doubt OR p.prev = '" + leased + "', "
	}
	return `UPDATE ` + table + ` r
		SET status = '` + leased + `', attempt = attempt + 1, lease_until = now() + $2::interval, ` + inDoubt + `updated_at = now()
		FROM (SELECT id AS pid, status AS prev FROM ` + table + ` WHERE id = $1 FOR UPDATE) p
		WHERE r.id = p.pid AND due_at <= now()
		  AND (status = ANY($3) AND status <> '` + leased + `' OR (status = '` + leased + `' AND lease_until < now()))
		RETURNING ` + columns + `, p.prev = '` + leased + `'`
}

var (
	claimDispatchSQL = claimSQL(KindDispatch)
	claimReceiptSQL  = claimSQL(KindReceipt)
)

// waiting lists the states in which a row waits for its due time to be claimed.
var waiting = map[Kind][]string{
	KindDispatch: {string(DispatchAccepted), string(DispatchRetrying)},
	KindReceipt:  {string(ReceiptScheduled), string(ReceiptRetrying)},
}

// ClaimDispatch takes the fan-out lease: status → fanning_out, attempt+1. When no row is
// claimed the outcome says why (missing, not yet due, busy or final).
func (s *Store) ClaimDispatch(ctx context.Context, id string, lease time.Duration) (*DispatchRow, ClaimOutcome, error) {
	var reclaimed bool
	d, err := scanDispatch(scanLast(s.q.QueryRow(ctx, claimDispatchSQL, id, lease, From(KindDispatch, DispatchFanningOut)), &reclaimed))
	if err == nil {
		return d, Claimed, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("claim dispatch %s: %w", id, err)
	}
	out, err := s.whyNoClaim(ctx, KindDispatch, "herald.dispatches", id)
	return nil, out, err
}

// ClaimReceipt takes the delivery lease: status → sending, attempt+1, lease_until = now+lease.
// A claim over an expired sending lease flags the receipt in_doubt. When no row is claimed the
// outcome says why (missing, not yet due, busy or final).
func (s *Store) ClaimReceipt(ctx context.Context, id string, lease time.Duration) (*Claim, ClaimOutcome, error) {
	var reclaimed bool
	r, err := scanReceipt(scanLast(s.q.QueryRow(ctx, claimReceiptSQL, id, lease, From(KindReceipt, ReceiptSending)), &reclaimed))
	if err == nil {
		return &Claim{Receipt: r, Reclaimed: reclaimed}, Claimed, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("claim receipt %s: %w", id, err)
	}
	out, err := s.whyNoClaim(ctx, KindReceipt, "herald.receipts", id)
	return nil, out, err
}

// whyNoClaim tells apart, after a claim took no row, a row that is missing, one waiting for its
// due time, and one held by a live lease or final.
func (s *Store) whyNoClaim(ctx context.Context, kind Kind, table, id string) (ClaimOutcome, error) {
	var notDue bool
	err := s.q.QueryRow(ctx, `SELECT status = ANY($2) AND due_at > now() FROM `+table+` WHERE id = $1`, id, waiting[kind]).Scan(&notDue)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return ClaimMissing, nil
	case err != nil:
		return 0, fmt.Errorf("claim %s %s: %w", kind, id, err)
	case notDue:
		return ClaimNotDue, nil
	default:
		return ClaimBusy, nil
	}
}

// FinishDispatch ends a fan-out attempt (fenced on attempt): fanned_out, retrying at dueAt, or
// failed, with lastError.
func (s *Store) FinishDispatch(ctx context.Context, id string, attempt int, to Status, dueAt time.Time, lastError string) error {
	var due *time.Time
	if !dueAt.IsZero() {
		due = &dueAt
	}
	tag, err := s.q.Exec(ctx, `UPDATE herald.dispatches
		SET status = $3, due_at = COALESCE($4, due_at), last_error = NULLIF($5, ''), lease_until = NULL,
		    enqueued_at = NULL, updated_at = now()
		WHERE id = $1 AND attempt = $2 AND status = 'fanning_out' AND 'fanning_out' = ANY($6)`,
		id, attempt, string(to), due, storable(lastError), From(KindDispatch, to))
	if err != nil {
		return fmt.Errorf("finish dispatch %s as %s: %w", id, to, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("finish dispatch %s attempt %d as %s: %w", id, attempt, to, ErrTransition)
	}
	return nil
}

// Outcome is the result of one delivery attempt.
type Outcome struct {
	Status           Status    // sent, retrying, failed, expired or skipped
	DueAt            time.Time // retrying: when to try again
	LastError        string
	Subject          string
	MessageID        string
	ProviderResponse string
	// InDoubt flags the receipt in doubt: the transport may have accepted the message although it
	// did not confirm it (a reply lost after the final "."). It is sticky.
	InDoubt bool
}

// Finished is what FinishReceipt recorded.
type Finished struct {
	// Overtaken: a confirmed send landed on a receipt that a reclaim had moved to a later attempt
	// (a PostgreSQL outage longer than the lease). That attempt may have sent too: the receipt is
	// flagged in doubt — counted window (c) of DESIGN.md.
	Overtaken bool
}

// FinishReceipt records an attempt's outcome, fenced on (id, attempt, sending): a stale worker
// whose lease was taken over gets ErrTransition and changes nothing — except for sent. A send the
// transport confirmed beats a lease: it lands on any non-final state of the receipt, even after a
// reclaim moved it to a later attempt (DESIGN.md, "A confirmed outcome beats a lease").
func (s *Store) FinishReceipt(ctx context.Context, id string, attempt int, o Outcome) (Finished, error) {
	var due *time.Time
	if !o.DueAt.IsZero() {
		due = &o.DueAt
	}
	var overtaken bool
	err := s.q.QueryRow(ctx, `UPDATE herald.receipts
		SET status = $3, due_at = COALESCE($4, due_at), last_error = NULLIF($5, ''),
		    subject = COALESCE(NULLIF($6, ''), subject), message_id = COALESCE(NULLIF($7, ''), message_id),
		    provider_response = COALESCE(NULLIF($8, ''), provider_response),
		    lease_until = NULL, enqueued_at = NULL, updated_at = now(), in_doubt = in_doubt OR $10 OR attempt <> $2,
		    sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END
		WHERE id = $1 AND (attempt = $2 AND status = 'sending' AND 'sending' = ANY($9)
		                   OR $3 = 'sent' AND NOT (status = ANY($11)))
		RETURNING attempt <> $2`,
		id, attempt, string(o.Status), due, storable(o.LastError), storable(o.Subject), storable(o.MessageID),
		storable(o.ProviderResponse), From(KindReceipt, o.Status), o.InDoubt, finalStrings(KindReceipt)).Scan(&overtaken)
	if errors.Is(err, pgx.ErrNoRows) {
		return Finished{}, fmt.Errorf("finish receipt %s attempt %d as %s: %w", id, attempt, o.Status, ErrTransition)
	}
	if err != nil {
		return Finished{}, fmt.Errorf("finish receipt %s as %s: %w", id, o.Status, err)
	}
	return Finished{Overtaken: overtaken}, nil
}

// StillClaimed reports whether the receipt is still sending under attempt: a reclaimer re-reads
// the row just before it sends, so that an earlier attempt whose confirmed outcome landed in the
// meantime is not sent again.
func (s *Store) StillClaimed(ctx context.Context, id string, attempt int) (bool, error) {
	var ok bool
	err := s.q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM herald.receipts WHERE id = $1 AND attempt = $2 AND status = 'sending')`,
		id, attempt).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("re-read receipt %s: %w", id, err)
	}
	return ok, nil
}

// dueSQL is a promoter query for table: the rows waiting in one of the waiting states and due
// within the horizon ($1), and the rows in the leased state whose lease expired, each at most
// once per regrace ($2) unless never enqueued; at most $3 of them, of queue $4 or "". The regrace
// filter is checked again on a row a concurrent promoter changed meanwhile, so two promoters
// never enqueue one row twice in one regrace.
func dueSQL(table, waiting, leased string) string {
	notRecent := " AND (enqueued_at IS NULL OR enqueued_at < now() - $2::interval)"
	isDue := "status IN (" + waiting + ") AND due_at <= now() + $1::interval" + notRecent
	isExpired := "status = '" + leased + "' AND lease_until < now()" + notRecent
	return `WITH ` + strings.Join([]string{
		branch("own_due", "id, due_at", table, "$4", isDue, "due_at", "$3"),
		branch("any_due", "id, due_at", table, "''", isDue, "due_at", "$3"),
		branch("own_expired", "id, due_at", table, "$4", isExpired, "lease_until", "$3"),
		branch("any_expired", "id, due_at", table, "''", isExpired, "lease_until", "$3"),
		`due AS (SELECT id FROM (SELECT * FROM own_due UNION ALL SELECT * FROM any_due
			UNION ALL SELECT * FROM own_expired UNION ALL SELECT * FROM any_expired) b
			ORDER BY due_at LIMIT $3)`,
	}, ",\n") + `
		UPDATE herald.` + table + ` t SET enqueued_at = now() WHERE t.id = ANY (ARRAY(SELECT id FROM due))
		RETURNING t.id, t.attempt, t.due_at`
}

var (
	dueDispatchesSQL = dueSQL("dispatches", "'"+strings.Join(waiting[KindDispatch], "','")+"'", string(DispatchFanningOut))
	dueReceiptsSQL   = dueSQL("receipts", "'"+strings.Join(waiting[KindReceipt], "','")+"'", string(ReceiptSending))
)

// Due claims for enqueueing (FOR UPDATE SKIP LOCKED, safe in parallel) up to limit rows of kind
// in queue (or of no known queue) that need a task: waiting (accepted or scheduled, or
// retrying) and due within horizon, or leased (fanning_out, sending) with an expired lease; each
// at most once per regrace unless it was never enqueued.
func (s *Store) Due(ctx context.Context, kind Kind, queue string, horizon, regrace time.Duration, limit int) ([]DueTask, error) {
	if queue == "" {
		return nil, fmt.Errorf("due %ss: %w", kind, errNoQueue)
	}
	sql := dueDispatchesSQL
	if kind == KindReceipt {
		sql = dueReceiptsSQL
	}
	ds, err := collectDue(s.q.Query(ctx, sql, horizon, regrace, limit, queue))
	if err != nil {
		return nil, fmt.Errorf("due %ss of queue %q: %w", kind, queue, err)
	}
	return ds, nil
}
