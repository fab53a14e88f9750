package ledger

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Erased is what an erasure writes in place of personal data.
const Erased = "[erased]"

// erasedIDPrefix starts the recipient id an erased receipt keeps: unique per row, so the
// (dispatch, channel key, recipient id) constraint still holds, and naming nobody.
const erasedIDPrefix = "erased:"

// EraseReason is recorded on the deliveries and dispatches an erasure cancels (here and, for
// the queued tasks, in engine.EraseQueued).
const EraseReason = "recipient erased"

// droppedNote ends the reason of a rejected task whose kept payload an erasure dropped.
const droppedNote = " (kept payload dropped by an erasure)"

// ErrIncompleteAddress is returned for a recipient that holds an @ but is not one whole
// address ("@example.net", "ann@", a list, a display name): matched as text it would erase
// every person whose address it is part of.
var ErrIncompleteAddress = errors.New("not one complete address: give the whole address (local@domain) or a recipient id")

// EraseRequest asks EraseRecipient to erase one recipient.
type EraseRequest struct {
	// Who is the recipient: one whole address (matched in any letter case; input holding an @
	// that is not one complete address is refused with ErrIncompleteAddress) or a recipient id,
	// as the event's Recipients gave it (herald.receipts.recipient_id), matched exactly.
	Who string
	// Actor names who asked for the erasure; it is recorded in the audit row.
	Actor string
	// QueuedDeleted and QueuedActive are what the caller erased from Redis just before
	// (engine.EraseQueued): recorded in the audit row. Active tasks count as in flight.
	QueuedDeleted, QueuedActive int64
}

// Erasure is what EraseRecipient did, table by table. It holds counts only: it is what the
// audit row records, and it names nobody.
type Erasure struct {
	AuditID int64 `json:"audit_id"`
	// The person's deliveries redacted: recipient, recipient id and subject replaced, their
	// address and name cut out of the error and the provider's reply. Ids, times, states,
	// attempts, the Message-ID and the in-doubt flag are kept: they prove what was delivered.
	ReceiptsErased int64 `json:"receipts_erased"`
	// Deliveries canceled before they started: the person's, and those of dispatches whose
	// variables named the person (they would be rendered with holes in them).
	ReceiptsCanceled int64 `json:"receipts_canceled"`
	// Other recipients' deliveries whose subject, error or reply mentioned the person, redacted.
	ReceiptsRedacted int64 `json:"receipts_redacted"`
	// Dispatches whose variables, references, actor, idempotency key, error or fan-out progress
	// were redacted.
	DispatchesRedacted int64 `json:"dispatches_redacted"`
	// Open dispatches whose variables named the person, canceled.
	DispatchesCanceled int64 `json:"dispatches_canceled"`
	// The person's dispatches whose sealed and minted secrets were dropped.
	SecretsDropped int64 `json:"secrets_dropped"`
	// Development mailbox: messages to the person deleted; others mentioning them redacted.
	MailDeleted  int64 `json:"mail_deleted"`
	MailRedacted int64 `json:"mail_redacted"`
	// Rejected tasks whose reason was redacted, and kept payloads dropped.
	RejectedRedacted int64 `json:"rejected_redacted"`
	PayloadsDropped  int64 `json:"payloads_dropped"`
	// Tasks the caller deleted from Redis (EraseRequest.QueuedDeleted).
	QueuedDeleted int64 `json:"queued_deleted"`
	// What could not be erased yet and was left as it is, to be erased by the same erasure run
	// again once it settles: deliveries being sent right now (sending cannot be taken back, and
	// its outcome would write the subject and reply after the redaction) or whose dispatch is
	// still fanning out (a resumed fan-out would create them again under the old recipient
	// id), dispatches naming the person that are still open or have a delivery being sent, and
	// queued tasks a worker was running (EraseRequest.QueuedActive).
	InFlight       int64 `json:"in_flight"`
	OpenDispatches int64 `json:"open_dispatches"`
	QueuedActive   int64 `json:"queued_active"`
}

// Complete reports whether nothing was left for a second run.
func (e Erasure) Complete() bool {
	return e.InFlight == 0 && e.OpenDispatches == 0 && e.QueuedActive == 0
}

// auditDetail is the audit row's detail: counts per table, no address, no name, no hash of them
// (a hash of an address is as good as the address to anyone who can guess it).
func (e Erasure) auditDetail() ([]byte, error) {
	return json.Marshal(map[string]any{
		"receipts": map[string]int64{"erased": e.ReceiptsErased, "canceled": e.ReceiptsCanceled, "redacted": e.ReceiptsRedacted,
			"in_flight": e.InFlight},
		"dispatches": map[string]int64{"redacted": e.DispatchesRedacted, "canceled": e.DispatchesCanceled,
			"secrets_dropped": e.SecretsDropped, "open": e.OpenDispatches},
		"dev_mailbox":    map[string]int64{"deleted": e.MailDeleted, "redacted": e.MailRedacted},
		"rejected_tasks": map[string]int64{"redacted": e.RejectedRedacted, "payloads_dropped": e.PayloadsDropped},
		"queue":          map[string]int64{"deleted": e.QueuedDeleted, "active": e.QueuedActive},
		"complete":       e.Complete(),
	})
}

// RecipientAddresses returns the addresses, lower-cased, that Herald's erasure of who covers:
// who itself when it is an address (it holds an @, or a delivery went to it), and the
// addresses of the deliveries to recipient id who. Callers that erase elsewhere first (the
// tasks queued in Redis) use it; EraseRecipient computes the same. Like EraseRecipient, it
// refuses input holding an @ that is not one complete address (ErrIncompleteAddress).
func (s *Store) RecipientAddresses(ctx context.Context, who string) ([]string, error) {
	who = strings.TrimSpace(who)
	if who == "" {
		return nil, nil
	}
	if err := checkWho(ctx, s.q, who); err != nil {
		return nil, err
	}
	rows, err := s.q.Query(ctx, `SELECT DISTINCT lower(btrim(recipient->>'address')) FROM herald.receipts
		WHERE (recipient_id = $1 OR lower(btrim(recipient->>'address')) = lower($1)) AND recipient->>'address' <> ''`, who)
	if err != nil {
		return nil, fmt.Errorf("look up the recipient's addresses: %w", err)
	}
	addrs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("look up the recipient's addresses: %w", err)
	}
	if strings.Contains(who, "@") {
		addrs = append(addrs, strings.ToLower(who))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// EraseRecipient removes or irreversibly redacts the personal data of one recipient across
// Herald's tables, in one transaction, and writes one herald.audit_log row (action
// erase_recipient) holding the actor and the counts — never the address or the name.
//
// The person is req.Who: an address, in any letter case, or a recipient id. Their deliveries
// are those to that id or to one of their addresses (an id brings in the addresses its
// deliveries went to, so erasing by id erases the address too). What it does:
//   - deliveries to them that have not started are canceled ("recipient erased"); then each
//     final one loses its recipient (→ {"erased": true}), its recipient id (→ "erased:<id>")
//     and its subject, and their address and name are cut out of its error and reply. Ids,
//     times, states, attempts, the Message-ID and the in-doubt flag stay: an operator can
//     still prove that a delivery happened;
//   - dispatches: a string in the variables or a reference id that holds their address (in
//     any dispatch: another person's message may name them), or their name (in their own
//     dispatches), becomes "[erased]"; in a dispatch whose deliveries were all theirs every
//     string variable does. Such a dispatch that is still open is canceled, and one already
//     fanned out has its deliveries that have not started canceled, as they would be rendered
//     from the redacted variables. The actor and error lose the occurrences, an idempotency
//     key that holds them is released, the fingerprint (a hash over the variables) and the
//     fan-out progress (which may hold their recipient key) are cleared, and the sealed and
//     minted secrets of their dispatches are dropped once no delivery needs them;
//   - development mailbox: messages to them are deleted, others lose the occurrences;
//   - rejected tasks: the reason loses the occurrences; a kept payload that holds their
//     address, or that belongs to one of their dispatches, is dropped, and the reason says so.
//
// Addresses are found as whole addresses only (AddressMatcher): erasing bob@x.com leaves
// abob@x.com and bob@x.community alone. Names are cut out, as whole words, only where the row
// is theirs or also holds their address: a name alone is too common to hunt through every
// table. Refs keep their ids: an application's row id names nobody by itself (a reference id
// holding the address is redacted all the same).
//
// A row that may still change is left as it is and counted instead (Erasure.InFlight,
// OpenDispatches): a delivery being sent cannot be taken back, and its outcome, written after
// the redaction, would bring the subject and reply back. Run the same erasure again once they
// have settled; a second run over data already erased finds nothing and changes nothing.
//
// Matching free text reads whole tables (no index serves a search inside text); that is the
// price of a rare administrative action, paid inside one transaction. Deliveries the
// application creates later (a new dispatch naming the person) are the application's to stop:
// erase the person in the application first.
//
// The store's Querier must be able to begin a transaction (a pool, a connection, or a
// transaction, in which a savepoint is used).
func (s *Store) EraseRecipient(ctx context.Context, req EraseRequest) (Erasure, error) {
	who := strings.TrimSpace(req.Who)
	if who == "" {
		return Erasure{}, errors.New("erase recipient: no address or recipient id given")
	}
	if strings.HasPrefix(who, erasedIDPrefix) {
		return Erasure{}, errors.New(`erase recipient: an id starting with "erased:" names a delivery already erased`)
	}
	if err := checkWho(ctx, s.q, who); err != nil {
		return Erasure{}, err
	}
	b, ok := s.q.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if !ok {
		return Erasure{}, errors.New("erase recipient: the store's Querier cannot begin a transaction; pass a pool, a connection or a transaction")
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		return Erasure{}, fmt.Errorf("erase recipient: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	e := &eraser{q: tx, who: who}
	e.out.QueuedDeleted, e.out.QueuedActive = req.QueuedDeleted, req.QueuedActive
	if err := e.run(ctx); err != nil {
		return Erasure{}, fmt.Errorf("erase recipient: %w", err) // never the address: errors are logged
	}
	if err := e.audit(ctx, req.Actor); err != nil {
		return Erasure{}, fmt.Errorf("erase recipient: audit row: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return Erasure{}, fmt.Errorf("erase recipient: commit: %w", err)
	}
	return e.out, nil
}

// checkWho refuses a recipient that holds an @ but does not look like one whole address (a
// domain, a local part, a list, a display name): a person gives the address they want erased,
// and an operator's typo must fail loudly rather than erase nobody or the wrong person. The
// check is loose on purpose (net/mail refuses real, deliverable addresses such as
// "taro..yamada@example.jp"), and an address a delivery went to is always accepted however it
// is written: it is how that recipient is known to Herald. Matching is by whole address in any
// case, so even a partial term never reaches into a longer address. A recipient without an @ is
// an id, matched exactly.
func checkWho(ctx context.Context, q Querier, who string) error {
	if !strings.Contains(who, "@") || looksLikeAddress(who) {
		return nil
	}
	var stored bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM herald.receipts
		WHERE lower(btrim(recipient->>'address')) = lower($1))`, who).Scan(&stored); err != nil {
		return fmt.Errorf("erase recipient: look the address up: %w", err)
	}
	if !stored {
		return fmt.Errorf("erase recipient: %w", ErrIncompleteAddress) // never the input: errors are logged
	}
	return nil
}

// looksLikeAddress reports whether s is one local@domain: a non-empty local part and domain,
// one @ (outside a quoted local part), no space, comma or angle bracket.
func looksLikeAddress(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n,<>;") {
		return false
	}
	local := s[:at]
	return !strings.Contains(local, "@") || strings.HasPrefix(local, `"`) && strings.HasSuffix(local, `"`)
}

// eraser is one erasure in progress, inside its transaction.
type eraser struct {
	q     pgx.Tx
	who   string
	terms terms
	// the person's deliveries, locked: id → state
	mine map[string]*mineRow
	// linked dispatches, locked: the person's and those whose columns mention their address
	linked map[string]*linkedDispatch
	out    Erasure
}

type mineRow struct {
	dispatchID string
	status     Status
	dispatchSt Status
}

type linkedDispatch struct {
	id       string
	status   Status
	vars     []byte
	refs     []byte
	persons  bool   // the person has a delivery in it
	mentions bool   // its variables or references hold the address
	shared   bool   // someone else has a delivery in it
	open     bool   // a delivery of it is scheduled, retrying or sending
	sending  bool   // a delivery of it is being sent
	newVars  []byte // the redacted variables, nil when unchanged
	newRefs  []byte // the redacted references, nil when unchanged
}

func (e *eraser) run(ctx context.Context) error {
	store := New(e.q)
	addrs, err := store.RecipientAddresses(ctx, e.who)
	if err != nil {
		return err
	}
	e.terms.setAddresses(addrs)
	steps := []func(context.Context) error{e.lockDispatches, e.lockMine, e.readDeliveries, e.planDispatches,
		func(ctx context.Context) error { return e.cancel(ctx, store) },
		e.readMine, e.readDeliveries, e.planDispatches, // after the cancels: what is still open, what became final
		e.eraseMine, e.redactDispatches, e.redactOtherReceipts, e.eraseMail, e.redactRejected}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// args are the named arguments every statement may use.
func (e *eraser) args(extra pgx.NamedArgs) pgx.NamedArgs {
	a := pgx.NamedArgs{"who": e.who, "addrs": e.terms.addresses, "addr": e.terms.addrPattern(), "names": e.terms.namePattern(),
		"erased": Erased, "addrRepl": addrReplacement}
	for k, v := range extra {
		a[k] = v
	}
	return a
}

// lockDispatches locks the dispatches linked to the person: those they have a delivery in,
// and those whose columns hold their address.
func (e *eraser) lockDispatches(ctx context.Context) error {
	rows, err := e.q.Query(ctx, `SELECT id::text, status, vars, refs FROM herald.dispatches
		WHERE id IN (SELECT dispatch_id FROM herald.receipts
		             WHERE recipient_id = @who OR lower(btrim(recipient->>'address')) = ANY(@addrs))
		   OR vars::text ~* @addr OR refs::text ~* @addr OR actor ~* @addr OR idempotency_key ~* @addr
		   OR last_error ~* @addr OR fanout_progress::text ~* @addr
		ORDER BY id FOR UPDATE`, e.args(nil))
	if err != nil {
		return fmt.Errorf("lock the dispatches: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*linkedDispatch, error) {
		var d linkedDispatch
		err := r.Scan(&d.id, &d.status, &d.vars, &d.refs)
		return &d, err
	})
	if err != nil {
		return fmt.Errorf("lock the dispatches: %w", err)
	}
	e.linked = make(map[string]*linkedDispatch, len(ds))
	for _, d := range ds {
		d.mentions = e.terms.mentionsJSON(d.vars, false) || e.terms.mentionsJSON(d.refs, false)
		e.linked[d.id] = d
	}
	// Their open deliveries, everyone's, are locked too: a worker cannot claim one while this
	// transaction decides what to cancel and what is still being sent.
	_, err = e.q.Exec(ctx, `SELECT 1 FROM herald.receipts WHERE dispatch_id = ANY(@ids::uuid[])
		AND status IN ('scheduled','retrying','sending') ORDER BY id FOR UPDATE`, e.args(pgx.NamedArgs{"ids": e.linkedIDs()}))
	if err != nil {
		return fmt.Errorf("lock the open deliveries: %w", err)
	}
	return nil
}

// lockMine locks the person's deliveries and learns their names from them.
func (e *eraser) lockMine(ctx context.Context) error {
	rows, err := e.q.Query(ctx, `SELECT r.id::text, r.dispatch_id::text, r.status, d.status, COALESCE(r.recipient->>'name', '')
		FROM herald.receipts r JOIN herald.dispatches d ON d.id = r.dispatch_id
		WHERE r.recipient_id = @who OR lower(btrim(r.recipient->>'address')) = ANY(@addrs)
		ORDER BY r.id FOR UPDATE OF r`, e.args(nil))
	if err != nil {
		return fmt.Errorf("lock the recipient's deliveries: %w", err)
	}
	defer rows.Close()
	e.mine = map[string]*mineRow{}
	var names []string
	for rows.Next() {
		var id, name string
		var m mineRow
		if err := rows.Scan(&id, &m.dispatchID, &m.status, &m.dispatchSt, &name); err != nil {
			return fmt.Errorf("lock the recipient's deliveries: %w", err)
		}
		e.mine[id] = &m
		names = append(names, name)
		if d := e.linked[m.dispatchID]; d != nil {
			d.persons = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("lock the recipient's deliveries: %w", err)
	}
	e.terms.setNames(names)
	return nil
}

// planDispatches works out the new variables and references of each linked dispatch.
func (e *eraser) planDispatches(context.Context) error {
	for _, d := range e.linked {
		all := d.persons && Final(KindDispatch, d.status) && !d.shared
		// Every linked dispatch is theirs or holds their address somewhere: their name goes too.
		vars, changed, err := e.terms.redactJSON(d.vars, true, all)
		if err != nil {
			return fmt.Errorf("dispatch %s: variables: %w", d.id, err)
		}
		d.newVars = nil
		if changed {
			d.newVars = vars
		}
		refs, changed, err := e.terms.redactJSON(d.refs, false, false)
		if err != nil {
			return fmt.Errorf("dispatch %s: references: %w", d.id, err)
		}
		d.newRefs = nil
		if changed {
			d.newRefs = refs
		}
	}
	return nil
}

// cancel cancels, with the same guarded moves as an operator's cancel, what must not go out
// any more: dispatches whose variables will be redacted (open ones stop; fanned-out ones lose
// their deliveries that have not started, which would render the redacted variables), then the
// person's own deliveries that have not started.
func (e *eraser) cancel(ctx context.Context, store *Store) error {
	for _, id := range e.linkedIDs() {
		d := e.linked[id]
		if !d.mentions && (d.newVars == nil && d.newRefs == nil || !Final(KindDispatch, d.status)) {
			continue // nothing of theirs is rendered from it, or it is left open for a second run
		}
		c, err := store.CancelDispatch(ctx, id, EraseReason, false)
		if err != nil {
			return err
		}
		if c.Dispatch {
			e.out.DispatchesCanceled++
			d.status = DispatchCanceled
		}
		e.out.ReceiptsCanceled += c.Receipts
	}
	rows, err := e.q.Query(ctx, `UPDATE herald.receipts SET status = 'canceled', last_error = @reason, lease_until = NULL,
		updated_at = now() WHERE id = ANY(@ids::uuid[]) AND status = ANY(@from) RETURNING id::text`,
		e.args(pgx.NamedArgs{"ids": e.mineIDs(), "reason": EraseReason, "from": From(KindReceipt, ReceiptCanceled)}))
	if err != nil {
		return fmt.Errorf("cancel the recipient's deliveries: %w", err)
	}
	canceled, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("cancel the recipient's deliveries: %w", err)
	}
	e.out.ReceiptsCanceled += int64(len(canceled))
	return nil
}

// readMine reads the state of the person's deliveries and of their dispatches again, after the
// cancels; the deliveries are locked, and a final dispatch stays final.
func (e *eraser) readMine(ctx context.Context) error {
	rows, err := e.q.Query(ctx, `SELECT r.id::text, r.status, d.status FROM herald.receipts r
		JOIN herald.dispatches d ON d.id = r.dispatch_id WHERE r.id = ANY(@ids::uuid[])`, e.args(pgx.NamedArgs{"ids": e.mineIDs()}))
	if err != nil {
		return fmt.Errorf("read the recipient's deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var st, dst Status
		if err := rows.Scan(&id, &st, &dst); err != nil {
			return fmt.Errorf("read the recipient's deliveries: %w", err)
		}
		e.mine[id].status, e.mine[id].dispatchSt = st, dst
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the recipient's deliveries: %w", err)
	}
	return nil
}

// readDeliveries reads, for each linked dispatch, whether a delivery of it is open or being sent,
// and whether someone other than the person has one.
func (e *eraser) readDeliveries(ctx context.Context) error {
	rows, err := e.q.Query(ctx, `SELECT d.id::text, d.status,
		       EXISTS (SELECT 1 FROM herald.receipts r WHERE r.dispatch_id = d.id AND r.status IN ('scheduled','retrying','sending')),
		       EXISTS (SELECT 1 FROM herald.receipts r WHERE r.dispatch_id = d.id AND r.status = 'sending'),
		       EXISTS (SELECT 1 FROM herald.receipts r WHERE r.dispatch_id = d.id AND NOT (r.id = ANY(@mine::uuid[])))
		FROM herald.dispatches d WHERE d.id = ANY(@ids::uuid[])`, e.args(pgx.NamedArgs{"ids": e.linkedIDs(), "mine": e.mineIDs()}))
	if err != nil {
		return fmt.Errorf("read the dispatches' deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var st Status
		var open, sending, shared bool
		if err := rows.Scan(&id, &st, &open, &sending, &shared); err != nil {
			return fmt.Errorf("read the dispatches' deliveries: %w", err)
		}
		d := e.linked[id]
		d.status, d.open, d.sending, d.shared = st, open, sending, shared
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the dispatches' deliveries: %w", err)
	}
	return nil
}

// settled reports whether a linked dispatch can no longer change: final (no fan-out will run
// again) and no delivery of it being sent (one that fails would be rendered again from it).
func (d *linkedDispatch) settled() bool { return Final(KindDispatch, d.status) && !d.sending }

// eraseMine redacts the person's deliveries that are final in a dispatch that is final; the
// others are counted as in flight.
func (e *eraser) eraseMine(ctx context.Context) error {
	var ids []string
	for id, m := range e.mine {
		switch {
		case !Final(KindReceipt, m.status) || !Final(KindDispatch, m.dispatchSt):
			e.out.InFlight++
		case e.linked[m.dispatchID] == nil: // its dispatch appeared after the lock: its variables were not looked at
			e.out.InFlight++
		default:
			ids = append(ids, id)
		}
	}
	tag, err := e.q.Exec(ctx, `UPDATE herald.receipts SET recipient = '{"erased": true}', recipient_id = 'erased:' || id::text,
		subject = CASE WHEN subject IS NULL THEN NULL ELSE @erased END,
		last_error = `+redactSQL("last_error")+`, provider_response = `+redactSQL("provider_response")+`
		WHERE id = ANY(@ids::uuid[])`, e.args(pgx.NamedArgs{"ids": ids}))
	if err != nil {
		return fmt.Errorf("redact the recipient's deliveries: %w", err)
	}
	e.out.ReceiptsErased = tag.RowsAffected()
	return nil
}

// redactDispatches redacts the linked dispatches that have settled; the others are counted.
// Their times stay as they were (updated_at drives retention).
func (e *eraser) redactDispatches(ctx context.Context) error {
	b := &pgx.Batch{}
	for _, id := range e.linkedIDs() {
		d := e.linked[id]
		if !d.settled() {
			e.out.OpenDispatches++
			continue
		}
		b.Queue(`WITH old AS (SELECT * FROM herald.dispatches WHERE id = @id)
			UPDATE herald.dispatches d SET
			    vars = COALESCE(@vars::jsonb, d.vars), refs = COALESCE(@refs::jsonb, d.refs),
			    fingerprint = CASE WHEN @vars::jsonb IS NULL AND @refs::jsonb IS NULL THEN d.fingerprint ELSE '' END,
			    actor = `+redactSQL("d.actor")+`, last_error = `+redactSQL("d.last_error")+`,
			    idempotency_key = CASE WHEN d.idempotency_key ~* @addr OR d.idempotency_key ~* @names THEN NULL ELSE d.idempotency_key END,
			    fanout_progress = NULL,
			    sealed = CASE WHEN @drop THEN NULL ELSE d.sealed END, minted = CASE WHEN @drop THEN NULL ELSE d.minted END,
			    scrubbed_at = CASE WHEN @drop AND (d.sealed IS NOT NULL OR d.minted IS NOT NULL) THEN now() ELSE d.scrubbed_at END
			FROM old WHERE d.id = old.id
			RETURNING (d.vars, d.refs, d.fingerprint, d.actor, d.last_error, d.idempotency_key, d.fanout_progress, d.sealed, d.minted)
			          IS DISTINCT FROM
			          (old.vars, old.refs, old.fingerprint, old.actor, old.last_error, old.idempotency_key, old.fanout_progress, old.sealed, old.minted),
			          @drop AND (old.sealed IS NOT NULL OR old.minted IS NOT NULL)`,
			e.args(pgx.NamedArgs{"id": id, "vars": nullJSON(d.newVars), "refs": nullJSON(d.newRefs),
				"drop": d.persons && !d.open}))
	}
	if b.Len() == 0 {
		return nil
	}
	br := e.q.SendBatch(ctx, b)
	for range b.Len() {
		var changed, dropped bool
		if err := br.QueryRow().Scan(&changed, &dropped); err != nil {
			_ = br.Close()
			return fmt.Errorf("redact the dispatches: %w", err)
		}
		if changed {
			e.out.DispatchesRedacted++
		}
		if dropped {
			e.out.SecretsDropped++
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("redact the dispatches: %w", err)
	}
	return nil
}

// redactOtherReceipts cuts the person out of other recipients' deliveries: their address
// anywhere, their name where the delivery also holds the address or belongs to a dispatch
// linked to them. A delivery being sent is counted instead: its outcome rewrites those columns.
func (e *eraser) redactOtherReceipts(ctx context.Context) error {
	cond := `NOT (r.id = ANY(@mine::uuid[])) AND (r.subject ~* @addr OR r.last_error ~* @addr OR r.provider_response ~* @addr
		OR (r.dispatch_id = ANY(@linked::uuid[]) AND (r.subject ~* @names OR r.last_error ~* @names OR r.provider_response ~* @names)))`
	args := e.args(pgx.NamedArgs{"mine": e.mineIDs(), "linked": e.linkedIDs()})
	tag, err := e.q.Exec(ctx, `UPDATE herald.receipts r SET subject = `+redactSQL("r.subject")+`,
		last_error = `+redactSQL("r.last_error")+`, provider_response = `+redactSQL("r.provider_response")+`
		WHERE r.status <> 'sending' AND `+cond, args)
	if err != nil {
		return fmt.Errorf("redact other deliveries: %w", err)
	}
	e.out.ReceiptsRedacted = tag.RowsAffected()
	var sending int64
	if err := e.q.QueryRow(ctx, `SELECT count(*) FROM herald.receipts r WHERE r.status = 'sending' AND `+cond, args).Scan(&sending); err != nil {
		return fmt.Errorf("count other deliveries being sent: %w", err)
	}
	e.out.InFlight += sending
	return nil
}

// eraseMail deletes the captured messages to the person and cuts them out of the others.
func (e *eraser) eraseMail(ctx context.Context) error {
	args := e.args(pgx.NamedArgs{"mine": e.mineIDs(), "linked": e.linkedIDs()})
	tag, err := e.q.Exec(ctx, `DELETE FROM herald.dev_mailbox WHERE receipt_id = ANY(@mine::uuid[]) OR rcpt_to ~* @addr`, args)
	if err != nil {
		return fmt.Errorf("delete the recipient's captured mail: %w", err)
	}
	e.out.MailDeleted = tag.RowsAffected()
	tag, err = e.q.Exec(ctx, `UPDATE herald.dev_mailbox m SET mail_from = `+redactSQL("m.mail_from")+`,
		rcpt_to = `+redactSQL("m.rcpt_to")+`, subject = `+redactSQL("m.subject")+`,
		html_body = `+redactSQL("m.html_body")+`, text_body = `+redactSQL("m.text_body")+`
		WHERE m.mail_from ~* @addr OR m.subject ~* @addr OR m.html_body ~* @addr OR m.text_body ~* @addr
		   OR (m.receipt_id IN (SELECT id FROM herald.receipts WHERE dispatch_id = ANY(@linked::uuid[]))
		       AND (m.mail_from ~* @names OR m.rcpt_to ~* @names OR m.subject ~* @names OR m.html_body ~* @names OR m.text_body ~* @names))`,
		args)
	if err != nil {
		return fmt.Errorf("redact captured mail: %w", err)
	}
	e.out.MailRedacted = tag.RowsAffected()
	return nil
}

// redactRejected cuts the person out of rejected tasks' reasons and drops the kept payloads
// that hold their address or belong to a dispatch or delivery of theirs. A task belongs to
// one when its id (dispatch:<id>:<n>, deliver:<id>:<n>) names it.
func (e *eraser) redactRejected(ctx context.Context) error {
	own := append(e.linkedIDs(), e.mineIDs()...)
	tag, err := e.q.Exec(ctx, `UPDATE herald.rejected_tasks SET reason = `+redactSQL("reason")+`
		WHERE reason ~* @addr OR (split_part(task_id, ':', 2) = ANY(@own) AND reason ~* @names)`, e.args(pgx.NamedArgs{"own": own}))
	if err != nil {
		return fmt.Errorf("redact rejected tasks: %w", err)
	}
	e.out.RejectedRedacted = tag.RowsAffected()
	// Payloads are bytes that may not be text: they are matched here rather than in SQL.
	rows, err := e.q.Query(ctx, `SELECT id, task_id, payload FROM herald.rejected_tasks WHERE payload IS NOT NULL`)
	if err != nil {
		return fmt.Errorf("read kept payloads: %w", err)
	}
	var drop []int64
	for rows.Next() {
		var id int64
		var taskID string
		var payload []byte
		if err := rows.Scan(&id, &taskID, &payload); err != nil {
			rows.Close()
			return fmt.Errorf("read kept payloads: %w", err)
		}
		owned := slices.ContainsFunc(own, func(o string) bool {
			return strings.Contains(taskID, o) || bytes.Contains(payload, []byte(o))
		})
		if owned || e.terms.mentionsBytes(payload) {
			drop = append(drop, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read kept payloads: %w", err)
	}
	// The reason records the loss: a task held for a newer worker can no longer be requeued.
	tag, err = e.q.Exec(ctx, `UPDATE herald.rejected_tasks SET payload = NULL, reason = reason || $2 WHERE id = ANY($1)`,
		drop, droppedNote)
	if err != nil {
		return fmt.Errorf("drop kept payloads: %w", err)
	}
	e.out.PayloadsDropped = tag.RowsAffected()
	return nil
}

// audit writes the audit row: the actor, the action and the counts.
func (e *eraser) audit(ctx context.Context, actor string) error {
	detail, err := e.out.auditDetail()
	if err != nil {
		return err
	}
	return e.q.QueryRow(ctx, `INSERT INTO herald.audit_log (actor, action, detail) VALUES ($1, 'erase_recipient', $2) RETURNING id`,
		storable(actor), detail).Scan(&e.out.AuditID)
}

func (e *eraser) mineIDs() []string {
	ids := make([]string, 0, len(e.mine))
	for id := range e.mine {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (e *eraser) linkedIDs() []string {
	ids := make([]string, 0, len(e.linked))
	for id := range e.linked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// nullJSON is b as a jsonb argument, or SQL NULL when there is nothing.
func nullJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// redactSQL is SQL that cuts the addresses (@addr) and the names (@names) out of col. The
// addresses go in two passes: a match takes the character before the address with it, so of
// two occurrences apart by only a ";" the first pass may leave the second.
func redactSQL(col string) string {
	return "regexp_replace(regexp_replace(regexp_replace(" + col + ", @addr, @addrRepl, 'gi'), @addr, @addrRepl, 'gi'), @names, @erased, 'gi')"
}

// terms are what an erasure looks for in free text: the person's addresses and names, each
// also as HTML and URL escaping write it (a captured HTML body holds "a&#43;b@x" for "a+b@x").
type terms struct {
	addresses []string // lower-cased, as stored (for equality with the recipient's address)
	addrForms []string // lower-cased, with their escaped forms
	nameForms []string // lower-cased, with their escaped forms, longest first
}

// noMatch is a PostgreSQL regular expression that matches nothing: "a" then the start.
const noMatch = `a^`

func (t *terms) setAddresses(addrs []string) {
	t.addresses = addrs
	t.addrForms = forms(addrs)
}

func (t *terms) setNames(names []string) {
	var ns []string
	for _, n := range names {
		if n = strings.TrimSpace(n); n != "" {
			ns = append(ns, n)
		}
	}
	t.nameForms = forms(ns)
}

// forms returns each term lower-cased, with the forms escaping gives it, longest first.
func forms(ts []string) []string {
	var out []string
	for _, s := range ts {
		s = strings.ToLower(s)
		out = append(out, s, htmlEscape(s), strings.ToLower(url.QueryEscape(s)), strings.ToLower(url.PathEscape(s)))
	}
	slices.SortFunc(out, func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b)) })
	return slices.Compact(out)
}

// htmlEscape escapes s as html/template does in text: it also writes + as &#43;.
func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;", "+", "&#43;").Replace(s)
}

// An address is matched as a whole address only: bob@x.com is not in abob@x.com, a.bob@x.com,
// bob@x.community or bob@x.com.au. Right before it there is no character an address may hold
// (a letter, a digit, . _ % + - or @), and after it the domain does not go on (no letter, digit
// or -, no dot followed by one). A URL escape (%2B), a numeric HTML entity (&#43;) or a JSON
// escape written out as text (\u003c, \n) right before it counts as the character it escapes:
// an ASCII character that no address holds is a boundary, and so is any non-ASCII one (&#160;,
// &#8220;, %C2%A0: escaped, a letter cannot be told from a space here, and an erasure errs on
// the side of erasing): "a%2Bbob%40x.com" is a+bob's address, "mailto%3Abob%40x.com" and
// "\u003cbob@x.com" bob's.
// addrBefore and addrAfter say it in SQL (always matched ignoring case), addrStartsAt and
// addrEndsAt in Go: keep them in step (TestEraseMatchesWholeAddressesOnly compares them).
//
// addrBefore is matched, and put back (addrReplacement), rather than looked behind for:
// PostgreSQL checks a lookbehind longer than one character by running it from the start of
// the text, which made a scan of captured mail a hundred times slower than a plain search.
const (
	// nonAddrHex and nonAddrDec are the ASCII characters no address holds, as two hex digits
	// and in decimal.
	nonAddrHex = `(?:[01][0-9a-f]|2[0-46-9acf]|3[a-f]|5[b-e]|60|7[b-f]|[89a-f][0-9a-f])`
	nonAddrDec = `(?:[0-9]|[12][0-9]|3[0-689]|4[0-24]|47|5[89]|6[0-3]|9[1-46]|12[3-9]|1[3-9][0-9]|[2-9][0-9]{2}|[1-9][0-9]{3,7})`
	addrBefore = `(^` +
		`|[^[:alnum:]._%+@;-]` + // a character no address holds (; below)
		`|%` + nonAddrHex + `|&#0{0,7}` + nonAddrDec + `;|&#x0{0,7}(?:[0-9a-f]|` + nonAddrHex + `|[1-9a-f][0-9a-f]{2,7});` + // the same, escaped
		`|\\u00` + nonAddrHex + `|\\u(?:0[1-9a-f]|[1-9a-f][0-9a-f])[0-9a-f]{2}|\\[nrtbf]` + // JSON escapes written as text
		// a ; that ends no numeric entity (&lt;): one not after &# and 1 to 8 digits, or &#x
		// and 1 to 8 hex digits. Bounded repeats and one-character lookbehinds only: a match
		// that may start anywhere (an unbounded repeat, a leading [^…]) is slow to place.
		`|(?<![0-9a-f]);|(?<![#x0-9a-f])[0-9a-f]{1,8};|[0-9a-f]{9};|#[0-9]{0,7}[a-f][0-9a-f]{0,7};` +
		`|(?<!&)#[0-9a-f]{1,8};|(?<!#)x[0-9a-f]{1,8};|(?<!&)#x[0-9a-f]{1,8};)`
	addrAfter = `(?![[:alnum:]-])(?!\.[[:alnum:]])`
	// addrReplacement replaces a match of addrPattern: what came before the address, then
	// Erased.
	addrReplacement = `\1` + Erased
)

// addrPattern is a PostgreSQL regular expression matching any form of the addresses, as a
// whole address, with what comes before it (its first group).
func (t *terms) addrPattern() string {
	if len(t.addrForms) == 0 {
		return noMatch
	}
	return addrBefore + alternation(t.addrForms, false) + addrAfter
}

// namePattern is a PostgreSQL regular expression matching any form of the names as a word.
func (t *terms) namePattern() string { return alternation(t.nameForms, true) }

func alternation(ts []string, word bool) string {
	if len(ts) == 0 {
		return noMatch
	}
	qs := make([]string, len(ts))
	for i, s := range ts {
		qs[i] = quoteRegexp(s)
	}
	p := "(?:" + strings.Join(qs, "|") + ")"
	if word {
		p = `(?<![[:alnum:]_])` + p + `(?![[:alnum:]_])`
	}
	return p
}

// quoteRegexp escapes the characters special in a PostgreSQL regular expression.
func quoteRegexp(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\^$.|?*+()[]{}`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// mentions reports whether s holds an address, or a name as a word when names is set.
func (t *terms) mentions(s string, names bool) bool {
	ls := strings.ToLower(s)
	if containsAddress(ls, t.addrForms) {
		return true
	}
	if names {
		for _, n := range t.nameForms {
			if containsWord(ls, n) {
				return true
			}
		}
	}
	return false
}

// containsAddress reports whether s, lower-cased, holds one of forms as a whole address.
func containsAddress(s string, forms []string) bool {
	for _, f := range forms {
		for i := 0; i+len(f) <= len(s); {
			j := strings.Index(s[i:], f)
			if j < 0 {
				break
			}
			start := i + j
			if addrStartsAt(s, start) && addrEndsAt(s, start+len(f)) {
				return true
			}
			i = start + 1
		}
	}
	return false
}

// addrStartsAt reports whether an address may start at s[i]: what comes before, unescaped, is
// not a character of an address.
func addrStartsAt(s string, i int) bool {
	if i == 0 {
		return true
	}
	if i >= 3 && s[i-3] == '%' && isHex(s[i-2]) && isHex(s[i-1]) {
		v, _ := strconv.ParseUint(s[i-2:i], 16, 8)
		return escapedBoundary(rune(v))
	}
	if v, ok := entityBefore(s[:i]); ok {
		return escapedBoundary(v)
	}
	if i >= 6 && s[i-6] == '\\' && s[i-5] == 'u' && isHex(s[i-4]) && isHex(s[i-3]) && isHex(s[i-2]) && isHex(s[i-1]) {
		v, _ := strconv.ParseUint(s[i-4:i], 16, 16)
		return escapedBoundary(rune(v))
	}
	if i >= 2 && s[i-2] == '\\' && strings.IndexByte("nrtbf", s[i-1]) >= 0 {
		return true
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return !isAlnum(r) && !strings.ContainsRune("._%+@-", r)
}

// addrEndsAt reports whether an address may end at s[i]: its domain does not go on.
func addrEndsAt(s string, i int) bool {
	r, n := utf8.DecodeRuneInString(s[i:])
	switch {
	case n == 0:
		return true
	case isAlnum(r) || r == '-':
		return false
	case r == '.':
		next, _ := utf8.DecodeRuneInString(s[i+1:])
		return !isAlnum(next)
	}
	return true
}

// entityBefore decodes the numeric HTML entity (&#43; or &#x2b;, 1 to 8 digits) that s ends
// with. A value too large for a rune decodes to utf8.MaxRune.
func entityBefore(s string) (rune, bool) {
	body, ok := strings.CutSuffix(s, ";")
	if !ok {
		return 0, false
	}
	dec := len(body)
	for dec > 0 && body[dec-1] >= '0' && body[dec-1] <= '9' {
		dec--
	}
	hex := dec
	for hex > 0 && isHex(body[hex-1]) {
		hex--
	}
	var digits string
	var base int
	switch {
	case dec < len(body) && len(body)-dec <= 8 && strings.HasSuffix(body[:dec], "&#"):
		digits, base = body[dec:], 10
	case hex < len(body) && len(body)-hex <= 8 && strings.HasSuffix(body[:hex], "&#x"):
		digits, base = body[hex:], 16
	default:
		return 0, false
	}
	v, err := strconv.ParseUint(digits, base, 32)
	if err != nil || v > utf8.MaxRune {
		return utf8.MaxRune, true
	}
	return rune(v), true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func isAlnum(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// escapedBoundary reports whether an escaped character r right before an address ends what
// comes before it: an ASCII character no address holds, or any non-ASCII one.
func escapedBoundary(r rune) bool { return r >= utf8.RuneSelf || nonAddrASCII(r) }

// nonAddrASCII reports whether r is an ASCII character that no address holds: not a letter, a
// digit, . _ % + - or @.
func nonAddrASCII(r rune) bool {
	return r < utf8.RuneSelf && !isAlnum(r) && !strings.ContainsRune("._%+@-", r)
}

// containsWord reports whether w occurs in s with no letter, digit or _ right before or after.
func containsWord(s, w string) bool {
	for i := 0; i <= len(s)-len(w); {
		j := strings.Index(s[i:], w)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(w)
		if !wordRuneBefore(s, start) && !wordRuneAt(s, end) {
			return true
		}
		i = start + 1
	}
	return false
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func wordRuneBefore(s string, i int) bool {
	if i == 0 {
		return false
	}
	r := []rune(s[:i])
	return isWordRune(r[len(r)-1])
}

func wordRuneAt(s string, i int) bool {
	for _, r := range s[i:] {
		return isWordRune(r)
	}
	return false
}

// AddressMatcher finds addresses as EraseRecipient does: in any letter case, raw or escaped as
// URLs and HTML write them, and only as whole addresses (bob@x.com is not in abob@x.com).
// engine.EraseQueued uses it on the payloads queued in Redis.
type AddressMatcher struct{ t terms }

// NewAddressMatcher returns a matcher of addrs, blank ones (and a lone "@") skipped. Every
// address is matched whole, so one that is itself malformed as stored ("ann@", from a failed
// delivery) still finds only itself, never a longer address ("ann@example.org"). It never fails
// today; the error is kept for the checks a caller may need.
func NewAddressMatcher(addrs []string) (*AddressMatcher, error) {
	var as []string
	for _, a := range addrs {
		a = strings.ToLower(strings.TrimSpace(a))
		if strings.Trim(a, "@") == "" {
			continue
		}
		as = append(as, a)
	}
	m := &AddressMatcher{}
	m.t.setAddresses(as)
	return m, nil
}

// Empty reports whether the matcher has no address to find.
func (m *AddressMatcher) Empty() bool { return len(m.t.addrForms) == 0 }

// MatchPayload reports whether payload holds one of the addresses, as bytes or inside a JSON
// string (where it may be written with \u escapes).
func (m *AddressMatcher) MatchPayload(payload []byte) bool { return m.t.mentionsBytes(payload) }

// mentionsBytes reports whether b holds an address, as bytes or inside a JSON string.
func (t *terms) mentionsBytes(b []byte) bool {
	return t.mentions(string(b), false) || t.mentionsJSON(b, false)
}

// mentionsJSON reports whether a string (key or value) of the JSON document doc mentions the
// person. A document that is not JSON mentions nobody here.
func (t *terms) mentionsJSON(doc []byte, names bool) bool {
	_, changed, err := t.redactJSON(doc, names, false)
	return err == nil && changed
}

// redactJSON replaces every string of doc (value or key) that mentions the person with
// "[erased]" — every string value when all is set — and reports whether anything changed.
// Numbers are kept exactly as written.
func (t *terms) redactJSON(doc []byte, names, all bool) ([]byte, bool, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		return doc, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false, err
	}
	changed := false
	v = t.walk(v, names, all, &changed)
	if !changed {
		return doc, false, nil
	}
	out, err := json.Marshal(v)
	return out, true, err
}

func (t *terms) walk(v any, names, all bool, changed *bool) any {
	switch v := v.(type) {
	case string:
		if v != Erased && (all || t.mentions(v, names)) {
			*changed = true
			return Erased
		}
		return v
	case []any:
		for i := range v {
			v[i] = t.walk(v[i], names, all, changed)
		}
		return v
	case map[string]any:
		out := make(map[string]any, len(v))
		var renamed []string
		for k, e := range v {
			if t.mentions(k, names) {
				renamed = append(renamed, k)
				continue
			}
			out[k] = t.walk(e, names, all, changed)
		}
		slices.Sort(renamed)
		for _, k := range renamed { // a key that names the person becomes "[erased]", "[erased]2", …
			*changed = true
			nk := Erased
			for n := 2; hasKey(out, nk); n++ {
				nk = fmt.Sprintf("%s%d", Erased, n)
			}
			out[nk] = t.walk(v[k], names, all, changed)
		}
		return out
	default:
		return v
	}
}

func hasKey(m map[string]any, k string) bool { _, ok := m[k]; return ok }
