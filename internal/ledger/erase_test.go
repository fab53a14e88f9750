package ledger_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// canary is a person made up for one test: an address and a name found nowhere else, so a dump
// of the database can be searched for them.
type canary struct{ addr, name string }

func newCanary() canary {
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	return canary{addr: "canary." + hex + "@example.net", name: "Nym" + hex}
}

// assertGone fails the test for every row of the herald schema holding the canary's address or
// name, in any letter case.
func assertGone(t *testing.T, pool *pgxpool.Pool, c canary) {
	t.Helper()
	for _, line := range testenv.DumpHerald(t, pool) {
		l := strings.ToLower(line)
		if strings.Contains(l, strings.ToLower(c.addr)) || strings.Contains(l, strings.ToLower(c.name)) {
			t.Errorf("the erased person survives in %s", line)
		}
	}
}

// assertPresent fails unless the dump holds s: proves the dump sees what the test seeded.
func assertPresent(t *testing.T, pool *pgxpool.Pool, s string) {
	t.Helper()
	for _, line := range testenv.DumpHerald(t, pool) {
		if strings.Contains(strings.ToLower(line), strings.ToLower(s)) {
			return
		}
	}
	t.Fatalf("%q is nowhere in the dump: the test seeded nothing to erase", s)
}

// seed is the world of one erasure test.
type seed struct {
	t     *testing.T
	pool  *pgxpool.Pool
	store *ledger.Store
}

func newSeed(t *testing.T) *seed {
	pool := testenv.DB(t) // a database of its own: an erasure reads the whole schema
	return &seed{t: t, pool: pool, store: ledger.New(pool)}
}

func (s *seed) exec(sql string, args ...any) {
	s.t.Helper()
	if _, err := s.pool.Exec(s.t.Context(), sql, args...); err != nil {
		s.t.Fatal(err)
	}
}

// dispatch inserts a dispatch with vars, then moves it to st.
func (s *seed) dispatch(vars string, st ledger.Status, actor, key string) string {
	s.t.Helper()
	id := newID()
	res, err := s.store.InsertDispatch(s.t.Context(), ledger.NewDispatch{ID: id, EventID: "privacy.canary", Vars: json.RawMessage(vars),
		Refs: []events.Ref{{Name: "user", Resource: "users", ID: "7"}}, Actor: actor, IdempotencyKey: key, Fingerprint: "fp-" + id,
		Sealed: map[string]string{"token": "k1:sealed-value"}}, time.Hour)
	if err != nil || res.Outcome != ledger.Inserted {
		s.t.Fatalf("insert dispatch: %+v %v", res, err)
	}
	s.exec(`UPDATE herald.dispatches SET status = $2, minted = '{"code": {"sealed": "k1:minted"}}', fanout_progress = $3 WHERE id = $1`,
		id, string(st), fmt.Sprintf(`{"channel": "email", "last_key": %q}`, key))
	return id
}

// delivery inserts a receipt for rc (id, address, name) and, unless st is scheduled or
// sending, records st as a worker does, with subject and reply.
func (s *seed) delivery(dispatchID, channel string, rc events.Recipient, st ledger.Status, subject, reply string) string {
	s.t.Helper()
	ctx := s.t.Context()
	id := newID()
	nr := ledger.NewReceipt{ID: id, DispatchID: dispatchID, EventID: "privacy.canary", ChannelKey: channel, Transport: "email",
		RecipientID: rc.Key(), Recipient: ledger.Recipient{Address: rc.Address, Name: rc.Name}, MaxAttempts: 3,
		DueAt: time.Now().Add(-time.Second), ExpiresAt: time.Now().Add(time.Hour), Status: ledger.ReceiptSending, ClaimFor: time.Minute}
	if st == ledger.ReceiptScheduled {
		nr.Status, nr.ClaimFor, nr.DueAt = ledger.ReceiptScheduled, 0, time.Now().Add(24*time.Hour)
		nr.ExpiresAt = nr.DueAt.Add(time.Hour)
	}
	if err := s.store.InsertReceipts(ctx, []ledger.NewReceipt{nr}); err != nil {
		s.t.Fatal(err)
	}
	if st == ledger.ReceiptScheduled || st == ledger.ReceiptSending {
		return id
	}
	s.finish(id, 1, st, subject, reply)
	return id
}

func (s *seed) finish(id string, attempt int, st ledger.Status, subject, reply string) {
	s.t.Helper()
	o := ledger.Outcome{Status: st, Subject: subject, MessageID: "<" + id + "@herald.test>", ProviderResponse: reply}
	if st != ledger.ReceiptSent {
		o.LastError = reply
	}
	if _, err := s.store.FinishReceipt(s.t.Context(), id, attempt, o); err != nil {
		s.t.Fatal(err)
	}
}

// rejected records a rejected task whose reason and kept payload hold text.
func (s *seed) rejected(taskID, reason, payload string) {
	s.t.Helper()
	if err := s.store.RecordRejectedTask(s.t.Context(), "herald:dispatch", taskID, "q", reason, []byte(payload)); err != nil {
		s.t.Fatal(err)
	}
	s.exec(`UPDATE herald.rejected_tasks SET payload = $2 WHERE id = (SELECT max(id) FROM herald.rejected_tasks WHERE task_id = $1)`,
		taskID, []byte(payload))
}

func (s *seed) erase(who string) ledger.Erasure {
	s.t.Helper()
	er, err := s.store.EraseRecipient(s.t.Context(), ledger.EraseRequest{Who: who, Actor: "dpo@herald.test"})
	if err != nil {
		s.t.Fatal(err)
	}
	return er
}

// TestEraseRecipientLeavesNoTrace seeds the person in every table Herald has — sent and
// scheduled deliveries, another person's message that names them, an open dispatch naming them,
// captured mail, a rejected task with its payload — erases them by address in another letter
// case, and searches a dump of the whole schema for them. What proves a delivery happened stays.
func TestEraseRecipientLeavesNoTrace(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := t.Context()
	c := newCanary()
	upper := strings.ToUpper(c.addr)
	ada := events.Recipient{ID: "7", Address: c.addr, Name: c.name}
	bob := events.Recipient{ID: "8", Address: "bob@example.net", Name: "Bob"}

	// Their own dispatch: sent now, a reminder scheduled tomorrow; the variables hold their
	// name, address and a value of theirs that matches neither (a city).
	own := s.dispatch(fmt.Sprintf(`{"greeting": "Hello %s", "to": %q, "city": "Lyon", "amount": 1.50, "list": ["%s"]}`, c.name, upper, c.name),
		ledger.DispatchFannedOut, c.addr, "reset:"+c.addr)
	sent := s.delivery(own, "email", ada, ledger.ReceiptSent, "Hello "+c.name, "250 2.0.0 OK queued for <"+upper+">")
	later := s.delivery(own, "reminder", ada, ledger.ReceiptScheduled, "", "")
	// A failed delivery: the relay's error names them.
	failedD := s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", "")
	failed := s.delivery(failedD, "email", ada, ledger.ReceiptFailed, "Hi "+c.name, "550 5.1.1 <"+c.addr+">: no such user")
	// Bob's message about them: fanned out, Bob's copy sent, a reminder to Bob still scheduled.
	about := s.dispatch(fmt.Sprintf(`{"about": "%s <%s>", "topic": "kept"}`, c.name, c.addr), ledger.DispatchFannedOut, "cli", "")
	bobSent := s.delivery(about, "email", bob, ledger.ReceiptSent, "News about "+c.name, "250 OK")
	bobLater := s.delivery(about, "reminder", bob, ledger.ReceiptScheduled, "", "")
	// An open dispatch naming them: canceled.
	open := s.dispatch(fmt.Sprintf(`{"cc": %q}`, c.addr), ledger.DispatchAccepted, "cli", "")
	// An unrelated dispatch and delivery: untouched.
	other := s.dispatch(`{"topic": "other"}`, ledger.DispatchFannedOut, "cli", "k-other")
	otherSent := s.delivery(other, "email", bob, ledger.ReceiptSent, "Other news", "250 OK")
	// Captured mail: theirs, and Bob's naming them.
	for _, m := range []ledger.Mail{
		{ReceiptID: sent, MessageID: "<" + sent + "@herald.test>", From: "noreply@herald.test", To: c.name + " <" + c.addr + ">",
			Subject: "Hello " + c.name, Text: "Hello " + c.name, HTML: "<p>Hello " + c.name + "</p>"},
		{ReceiptID: bobSent, MessageID: "<" + bobSent + "@herald.test>", From: "noreply@herald.test", To: "Bob <bob@example.net>",
			Subject: "News about " + c.name, Text: "Write to " + upper, HTML: "<a href=\"mailto:" + c.addr + "\">" + c.name + "</a>"},
	} {
		if _, err := s.store.InsertMail(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Rejected tasks: one whose reason and kept payload name them, one of their dispatch, one not.
	s.rejected("dispatch:"+newID()+":0", "payload v2 for "+c.addr, fmt.Sprintf(`{"v":2,"vars":{"to":%q}}`, upper))
	s.rejected("dispatch:"+own+":0", "payload v2 held", `{"v":2,"dispatch_id":"`+own+`"}`)
	s.rejected("dispatch:"+newID()+":0", "payload v2 held", `{"v":2,"vars":{"to":"bob@example.net"}}`)
	assertPresent(t, s.pool, c.addr)
	assertPresent(t, s.pool, c.name)

	er := s.erase(upper)
	assertGone(t, s.pool, c)
	if !er.Complete() || er.ReceiptsErased != 3 || er.ReceiptsCanceled != 2 || er.DispatchesCanceled != 1 || er.MailDeleted != 1 ||
		er.MailRedacted != 1 || er.PayloadsDropped != 2 || er.RejectedRedacted != 1 || er.ReceiptsRedacted != 1 || er.SecretsDropped != 2 {
		t.Errorf("erasure = %+v", er)
	}

	// What proves a delivery happened stays: ids, times, states, attempts, Message-ID.
	r, err := s.store.GetReceipt(ctx, sent)
	if err != nil || r.Status != ledger.ReceiptSent || r.SentAt == nil || r.MessageID != "<"+sent+"@herald.test>" || r.Attempt != 1 ||
		r.RecipientID != "erased:"+sent || r.Recipient != (ledger.Recipient{}) || r.Subject != ledger.Erased ||
		r.ProviderResponse != "250 2.0.0 OK queued for <[erased]>" || r.DispatchID != own {
		t.Errorf("the sent delivery after the erasure: %+v %v", r, err)
	}
	if r, _ := s.store.GetReceipt(ctx, later); r.Status != ledger.ReceiptCanceled || r.LastError != "recipient erased" {
		t.Errorf("the scheduled delivery: %s %q, want canceled", r.Status, r.LastError)
	}
	if r, _ := s.store.GetReceipt(ctx, failed); r.Status != ledger.ReceiptFailed || r.LastError != "550 5.1.1 <[erased]>: no such user" {
		t.Errorf("the failed delivery: %s %q", r.Status, r.LastError)
	}
	// Bob's delivery: untouched but for the mention; his reminder (rendered from variables that
	// named them) canceled.
	if r, _ := s.store.GetReceipt(ctx, bobSent); r.Status != ledger.ReceiptSent || r.RecipientID != "8" ||
		r.Recipient.Address != "bob@example.net" || r.Recipient.Name != "Bob" || r.Subject != "News about [erased]" ||
		r.ProviderResponse != "250 OK" || r.SentAt == nil {
		t.Errorf("Bob's delivery: %+v", r)
	}
	if r, _ := s.store.GetReceipt(ctx, bobLater); r.Status != ledger.ReceiptCanceled {
		t.Errorf("Bob's reminder naming them: %s, want canceled", r.Status)
	}
	if r, _ := s.store.GetReceipt(ctx, otherSent); r.Subject != "Other news" || r.RecipientID != "8" {
		t.Errorf("an unrelated delivery changed: %+v", r)
	}
	d, _ := s.store.GetDispatch(ctx, own)
	var vars map[string]any
	_ = json.Unmarshal(d.Vars, &vars)
	if vars["greeting"] != ledger.Erased || vars["city"] != ledger.Erased || vars["amount"] != 1.5 || d.Sealed != nil || d.Minted != nil ||
		d.ScrubbedAt == nil || d.IdempotencyKey != "" || d.Actor != ledger.Erased || d.Fingerprint != "" || d.Progress != nil ||
		d.Status != ledger.DispatchFannedOut || len(d.Refs) != 1 || d.Refs[0].ID != "7" {
		t.Errorf("their dispatch: %+v vars %s", d, d.Vars)
	}
	d, _ = s.store.GetDispatch(ctx, about)
	if string(d.Vars) != `{"about": "[erased]", "topic": "kept"}` || d.Status != ledger.DispatchFannedOut {
		t.Errorf("Bob's dispatch: %s %s", d.Status, d.Vars)
	}
	if st, _ := s.store.Status(ctx, ledger.KindDispatch, open); st != ledger.DispatchCanceled {
		t.Errorf("the open dispatch naming them: %s, want canceled", st)
	}
	if d, _ := s.store.GetDispatch(ctx, other); d.IdempotencyKey != "k-other" || d.Sealed == nil || d.Fingerprint == "" {
		t.Errorf("an unrelated dispatch changed: %+v", d)
	}
	var kept int
	_ = s.pool.QueryRow(ctx, `SELECT count(*) FROM herald.rejected_tasks WHERE payload IS NOT NULL`).Scan(&kept)
	if kept != 1 {
		t.Errorf("%d kept payloads, want Bob's alone", kept)
	}

	// The audit row names the actor and counts, and nobody.
	var actor, action string
	var detail struct {
		Receipts struct{ Erased int }
		Mailbox  struct{ Deleted int } `json:"dev_mailbox"`
		Complete bool
	}
	if err := s.pool.QueryRow(ctx, `SELECT actor, action, detail FROM herald.audit_log WHERE id = $1`, er.AuditID).Scan(&actor, &action, &detail); err != nil {
		t.Fatal(err)
	}
	if actor != "dpo@herald.test" || action != "erase_recipient" || detail.Receipts.Erased != 3 || detail.Mailbox.Deleted != 1 || !detail.Complete {
		t.Errorf("audit row: %s %s %+v", actor, action, detail)
	}

	// A second erasure finds nothing to do.
	again := s.erase(c.addr)
	again.AuditID = 0
	if again != (ledger.Erasure{}) {
		t.Errorf("second erasure = %+v, want all zero", again)
	}
}

// TestEraseByRecipientIDErasesTheAddress: an id brings in the address its deliveries went to,
// so the address goes from every table, including rows that never held the id.
func TestEraseByRecipientIDErasesTheAddress(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	c := newCanary()
	id := "user-" + strings.TrimPrefix(c.name, "Nym")
	own := s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", "")
	s.delivery(own, "email", events.Recipient{ID: id, Address: c.addr, Name: c.name}, ledger.ReceiptSent, "Hi "+c.name, "250 OK")
	// A delivery to the same address with no id (keyed by the address), and a dispatch naming it.
	noID := s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", events.Recipient{Address: strings.ToUpper(c.addr)},
		ledger.ReceiptSent, "Hi", "250 OK")
	s.dispatch(fmt.Sprintf(`{"cc": %q}`, c.addr), ledger.DispatchFannedOut, "cli", "")
	s.rejected("dispatch:"+newID()+":0", "held for "+c.addr, "{}")
	assertPresent(t, s.pool, c.addr)

	er := s.erase(id)
	assertGone(t, s.pool, c)
	if er.ReceiptsErased != 2 || er.DispatchesRedacted < 2 || er.RejectedRedacted != 1 || !er.Complete() {
		t.Errorf("erasure by id = %+v", er)
	}
	if r, _ := s.store.GetReceipt(t.Context(), noID); r.RecipientID != "erased:"+noID {
		t.Errorf("the delivery keyed by the address: recipient id %q", r.RecipientID)
	}
	if again := s.erase(id); again.ReceiptsErased+again.DispatchesRedacted+again.RejectedRedacted != 0 {
		t.Errorf("second erasure by id = %+v", again)
	}
	// An id with no delivery, and no @: nothing is an address, nothing is touched.
	if er := s.erase("nobody-" + id); er.DispatchesRedacted+er.ReceiptsErased != 0 {
		t.Errorf("erasing an unknown id = %+v", er)
	}
}

// TestEraseLeavesADeliveryBeingSent: a delivery being sent cannot be taken back, and its outcome
// (subject, reply) is written after the erasure: it is left whole and counted, and the same
// erasure run once it has settled finishes the job.
func TestEraseLeavesADeliveryBeingSent(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := t.Context()
	c := newCanary()
	ada := events.Recipient{ID: "7", Address: c.addr, Name: c.name}
	d := s.dispatch(fmt.Sprintf(`{"to": %q}`, c.addr), ledger.DispatchFannedOut, "cli", "")
	sending := s.delivery(d, "email", ada, ledger.ReceiptSending, "", "")
	done := s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", ada, ledger.ReceiptSent, "Hi "+c.name, "250 OK")

	er := s.erase(c.addr)
	if er.Complete() || er.InFlight != 1 || er.OpenDispatches != 1 || er.ReceiptsErased != 1 {
		t.Fatalf("erasure with a delivery being sent = %+v", er)
	}
	if r, _ := s.store.GetReceipt(ctx, sending); r.Status != ledger.ReceiptSending || r.Recipient.Address != c.addr {
		t.Fatalf("the delivery being sent was touched: %+v", r)
	}
	if r, _ := s.store.GetReceipt(ctx, done); r.RecipientID != "erased:"+done {
		t.Fatalf("the settled delivery was not erased: %+v", r)
	}
	// Its worker records the outcome, subject and reply naming them.
	s.finish(sending, 1, ledger.ReceiptSent, "Hello "+c.name, "250 OK for "+c.addr)
	assertPresent(t, s.pool, c.name)
	er = s.erase(c.addr)
	if !er.Complete() || er.ReceiptsErased != 1 || er.DispatchesRedacted != 1 {
		t.Errorf("second run = %+v", er)
	}
	assertGone(t, s.pool, c)
}

// TestEraseRefusesEmptyInput: nothing to match is an error, not an erasure of everything.
func TestEraseRefusesEmptyInput(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	for _, who := range []string{"", "  ", "erased:0193a0c4-0000-7000-8000-0000000000aa"} {
		if _, err := s.store.EraseRecipient(t.Context(), ledger.EraseRequest{Who: who}); err == nil {
			t.Errorf("EraseRecipient(%q) succeeded", who)
		}
	}
}

// TestEraseFindsEscapedFormsAndWholeNames: an address is found as HTML and URLs escape it (a
// captured HTML body writes + as &#43;), and a name is cut out as a whole word only: a longer
// word that starts with it is someone else's.
func TestEraseFindsEscapedFormsAndWholeNames(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := t.Context()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	c := canary{addr: "ann+" + hex + "@example.net", name: "Ann" + hex}
	bob := events.Recipient{ID: "8", Address: "bob@example.net", Name: "Bob"}
	s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", events.Recipient{ID: "7", Address: c.addr, Name: c.name},
		ledger.ReceiptSent, "Hi", "250 OK")
	about := s.dispatch(fmt.Sprintf(`{"cc": %q, "who": "%s", "nick": "%sson", "n": 7}`, c.addr, c.name, c.name), ledger.DispatchFannedOut, "cli", "")
	bobSent := s.delivery(about, "email", bob, ledger.ReceiptSent, "About "+c.name+" and "+c.name+"son", "250 OK")
	if _, err := s.store.InsertMail(ctx, ledger.Mail{ReceiptID: newID(), MessageID: "<m@x>", From: "a@x", To: "Bob <bob@example.net>", Subject: "s",
		HTML: `<a href="mailto:ann&#43;` + hex + `@example.net">x</a>`, Text: "https://x/unsubscribe?email=ann%2B" + hex + "%40example.net"}); err != nil {
		t.Fatal(err)
	}
	er := s.erase(c.addr)
	if er.ReceiptsErased != 1 || er.MailRedacted != 1 || er.ReceiptsRedacted != 1 {
		t.Errorf("erasure = %+v", er)
	}
	d, _ := s.store.GetDispatch(ctx, about)
	var vars map[string]any
	if err := json.Unmarshal(d.Vars, &vars); err != nil || vars["cc"] != ledger.Erased || vars["who"] != ledger.Erased ||
		vars["nick"] != c.name+"son" || vars["n"] != 7.0 {
		t.Errorf("variables naming them: %s", d.Vars)
	}
	if r, _ := s.store.GetReceipt(ctx, bobSent); r.Subject != "About [erased] and "+c.name+"son" {
		t.Errorf("subject naming them: %q", r.Subject)
	}
	ms, err := s.store.ListMail(ctx, 10)
	if err != nil || len(ms) != 1 || ms[0].HTML != `<a href="mailto:[erased]">x</a>` || ms[0].Text != "https://x/unsubscribe?email=[erased]" {
		t.Errorf("escaped forms in captured mail: %+v %v", ms, err)
	}
}

// TestEraseDoesNotTouchALongerAddress: erasing bob@… leaves alone the people whose addresses
// merely contain bob's (abob@…, bob@….network): their deliveries, subjects, replies, dispatch
// variables, captured mail and held tasks, while bob's own data is erased.
func TestEraseDoesNotTouchALongerAddress(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := t.Context()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	bob := events.Recipient{ID: "8", Address: "bob" + hex + "@example.net", Name: "Bob" + hex}
	mine := s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", bob, ledger.ReceiptSent, "Hi", "250 OK for "+bob.Address)

	for i, other := range []events.Recipient{
		{ID: "9", Address: "abob" + hex + "@example.net", Name: "Abe"},
		{ID: "10", Address: "bob" + hex + "@example.network", Name: "Bea"},
		{ID: "11", Address: "bob" + hex + "@example.net.example", Name: "Ben"},
	} {
		vars := fmt.Sprintf(`{"to": %q, "link": "https://x/u?email=%s"}`, other.Address, url.QueryEscape(other.Address))
		d := s.dispatch(vars, ledger.DispatchFannedOut, "cli", "")
		sent := s.delivery(d, "email", other, ledger.ReceiptSent, "Welcome "+other.Address, "250 OK queued for <"+other.Address+">")
		later := s.delivery(d, "reminder", other, ledger.ReceiptScheduled, "", "")
		if _, err := s.store.InsertMail(ctx, ledger.Mail{ReceiptID: sent, MessageID: "<" + sent + "@herald.test>", From: "noreply@herald.test",
			To: other.Address, Subject: "Welcome", Text: "hi " + other.Address, HTML: "<p>" + strings.ReplaceAll(other.Address, "+", "&#43;") + "</p>"}); err != nil {
			t.Fatal(err)
		}
		s.rejected(fmt.Sprintf("dispatch:%s:%d", newID(), i), "held for "+other.Address, fmt.Sprintf(`{"v":2,"vars":{"to":%q}}`, other.Address))

		er := s.erase(bob.Address)
		if r, _ := s.store.GetReceipt(ctx, later); r.Status != ledger.ReceiptScheduled {
			t.Errorf("%s: the scheduled reminder is %s (%q): erasing bob canceled another person's delivery", other.Address, r.Status, r.LastError)
		}
		if r, _ := s.store.GetReceipt(ctx, sent); r.ProviderResponse != "250 OK queued for <"+other.Address+">" ||
			r.Subject != "Welcome "+other.Address || r.RecipientID != other.ID {
			t.Errorf("%s: the sent delivery was redacted: %+v", other.Address, r)
		}
		if dd, _ := s.store.GetDispatch(ctx, d); string(dd.Vars) != vars || dd.Sealed == nil {
			t.Errorf("%s: the dispatch variables: %s", other.Address, dd.Vars)
		}
		var n int
		_ = s.pool.QueryRow(ctx, `SELECT count(*) FROM herald.dev_mailbox WHERE receipt_id = $1 AND rcpt_to = $2 AND text_body = $3`,
			sent, other.Address, "hi "+other.Address).Scan(&n)
		if n != 1 {
			t.Errorf("%s: the captured mail was deleted or redacted by bob's erasure", other.Address)
		}
		_ = s.pool.QueryRow(ctx, `SELECT count(*) FROM herald.rejected_tasks WHERE reason = $1 AND payload IS NOT NULL`,
			"held for "+other.Address).Scan(&n)
		if n != 1 {
			t.Errorf("%s: the held task lost its reason or payload", other.Address)
		}
		if er.ReceiptsCanceled+er.ReceiptsRedacted+er.DispatchesRedacted+er.MailDeleted+er.MailRedacted+er.RejectedRedacted+er.PayloadsDropped > 0 &&
			i > 0 {
			t.Errorf("%s: the erasure of bob changed something: %+v", other.Address, er)
		}
	}
	if r, _ := s.store.GetReceipt(ctx, mine); r.RecipientID != "erased:"+mine || r.ProviderResponse != "250 OK for [erased]" {
		t.Errorf("bob's own delivery was not erased: %+v", r)
	}
}

// TestEraseRefusesAPartialAddress: input holding an @ must be one whole address; a domain
// ("@example.net"), a local part ("ann@") or a list would match everyone it is part of. It is
// refused with ErrIncompleteAddress before anything is touched; a recipient id stays allowed.
func TestEraseRefusesAPartialAddress(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := t.Context()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	ann := events.Recipient{ID: "1", Address: "ann" + hex + "@example.net", Name: "Ann"}
	d := s.dispatch(fmt.Sprintf(`{"to": %q}`, ann.Address), ledger.DispatchFannedOut, "cli", "")
	later := s.delivery(d, "reminder", ann, ledger.ReceiptScheduled, "", "")
	for _, who := range []string{"@example.net", "ann" + hex + "@", "@", "ann" + hex + "@example.net, x@y.z", "Ann <" + ann.Address + ">",
		"ann" + hex + "@@example.net"} {
		if _, err := s.store.EraseRecipient(ctx, ledger.EraseRequest{Who: who, Actor: "x"}); !errors.Is(err, ledger.ErrIncompleteAddress) {
			t.Errorf("EraseRecipient(%q) = %v, want ErrIncompleteAddress", who, err)
		} else if strings.Contains(err.Error(), "example.net") {
			t.Errorf("the error repeats the input: %v", err)
		}
		if _, err := s.store.RecipientAddresses(ctx, who); !errors.Is(err, ledger.ErrIncompleteAddress) {
			t.Errorf("RecipientAddresses(%q) = %v, want ErrIncompleteAddress", who, err)
		}
	}
	if r, _ := s.store.GetReceipt(ctx, later); r.Status != ledger.ReceiptScheduled {
		t.Errorf("a partial address canceled ann's delivery (%s, %q)", r.Status, r.LastError)
	}
	var audits int
	_ = s.pool.QueryRow(ctx, `SELECT count(*) FROM herald.audit_log`).Scan(&audits)
	if audits != 0 {
		t.Errorf("%d audit rows written for refused erasures", audits)
	}
	// "example.net" holds no @: it is a recipient id, matched exactly, and nobody has it.
	if er := s.erase("example.net"); er.ReceiptsCanceled+er.DispatchesRedacted != 0 {
		t.Errorf("erasing the id example.net = %+v", er)
	}
	if er := s.erase(" " + strings.ToUpper(ann.Address) + " "); er.ReceiptsCanceled != 1 {
		t.Errorf("erasing the whole address = %+v", er)
	}
}

// TestEraseRecordsADroppedHeldPayload: a task held for a newer worker whose kept payload names
// the person loses the payload, and its reason says so: it can no longer be requeued, and an
// operator reading the rejected tasks learns why.
func TestEraseRecordsADroppedHeldPayload(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	ctx := t.Context()
	c := newCanary()
	s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", events.Recipient{ID: "7", Address: c.addr, Name: c.name},
		ledger.ReceiptSent, "Hi", "250 OK")
	s.rejected("dispatch:"+newID()+":0", "payload version 2 is newer", fmt.Sprintf(`{"v":2,"vars":{"cc":%q}}`, c.addr))
	s.rejected("dispatch:"+newID()+":0", "payload version 2 is newer", `{"v":2,"vars":{"cc":"someone@example.net"}}`)
	er := s.erase(c.addr)
	if er.PayloadsDropped != 1 {
		t.Fatalf("erasure = %+v", er)
	}
	rows, err := s.store.ListRejectedTasks(ctx, 10)
	if err != nil || len(rows) != 2 {
		t.Fatalf("rejected tasks: %+v %v", rows, err)
	}
	for _, r := range rows {
		dropped := strings.Contains(r.Reason, "payload dropped by an erasure")
		if dropped == r.Requeueable || !strings.HasPrefix(r.Reason, "payload version 2 is newer") {
			t.Errorf("rejected task %d: reason %q, requeueable %v", r.ID, r.Reason, r.Requeueable)
		}
	}
	if again := s.erase(c.addr); again.PayloadsDropped+again.RejectedRedacted != 0 {
		t.Errorf("second erasure = %+v", again)
	}
}
