package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/capture"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/tasks"
)

// canaryEvent is "privacy.canary": an email now and a reminder in an hour to the user it
// references, whose subject and bodies carry the user's name and address and the variable note.
type canaryEvent struct{}

func (canaryEvent) ID() string { return "privacy.canary" }
func (canaryEvent) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return []events.Channel{{Key: "email", Transport: events.TransportEmail, Audience: "user"},
		{Key: "reminder", Transport: events.TransportEmail, Audience: "user", Time: events.In(time.Hour)}}, nil
}
func (canaryEvent) Recipients(_ context.Context, d *events.Dispatch, _ events.Channel) ([]events.Recipient, error) {
	u := d.Data["user"].(examples.User)
	return []events.Recipient{{ID: u.ID, Address: u.Email, Name: u.Name}}, nil
}
func (canaryEvent) Subject(_ context.Context, d *events.Dispatch, _ events.Channel, r events.Recipient) (string, error) {
	return fmt.Sprintf("Hello %s: %v", r.Name, d.Vars["note"]), nil
}
func (canaryEvent) Templates() fs.FS {
	return fstest.MapFS{
		"email.html.tmpl": {Data: []byte(`<p>Hello {{.user.Name}} ({{.user.Email}}): {{.note}}</p>`)},
		"email.text.tmpl": {Data: []byte(`Hello {{.user.Name}} ({{.user.Email}}): {{.note}}`)},
	}
}

// dumpHits returns the dump lines holding any of needles, in any letter case.
func dumpHits(t *testing.T, b *bundle, needles ...string) []string {
	t.Helper()
	var hits []string
	for _, line := range testenv.DumpHerald(t, b.pool) {
		for _, n := range needles {
			if strings.Contains(strings.ToLower(line), strings.ToLower(n)) {
				hits = append(hits, line)
				break
			}
		}
	}
	return hits
}

// queueDispatchTask puts a first-sight herald:dispatch task into queue as a producer would,
// due after delay (0: pending now), and returns its dispatch id.
func queueDispatchTask(t *testing.T, b *bundle, queue string, delay time.Duration, vars map[string]any) string {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	v, _ := json.Marshal(vars)
	p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: id, EventID: "privacy.canary", Refs: user("42"), Vars: v,
		AcceptedAt: time.Now()})
	c := asynq.NewClient(b.redis)
	defer c.Close()
	opts := []asynq.Option{asynq.TaskID(tasks.DispatchTaskID(id, 0)), asynq.Queue(queue)}
	if delay > 0 {
		opts = append(opts, asynq.ProcessIn(delay))
	}
	if _, err := c.Enqueue(asynq.NewTask(tasks.TypeDispatch, p, opts...)); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestEraseRecipientEndToEnd: the real worker sends a person several messages (captured in the
// development mailbox), a reminder waits for tomorrow, another person's message names them, a
// rejected task kept their payload, and dispatches naming them still wait in Redis. After
// EraseQueued and EraseRecipient, neither their address nor their name is anywhere in the herald
// schema or in Redis, in any letter case; the deliveries are still there with their ids, states,
// send times and Message-IDs.
func TestEraseRecipientEndToEnd(t *testing.T) {
	t.Parallel()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	addr, name := "Canary."+hex+"@Example.net", "Nym"+hex
	b := setup(t, withEvents(canaryEvent{}), func(b *bundle) {
		b.cfg.Senders = map[string]channels.Sender{events.TransportEmail: capture.New(b.pool)}
	})
	ctx := t.Context()
	if err := examples.SeedUser(ctx, b.pool, examples.User{ID: "c1", Email: addr, Name: name}); err != nil {
		t.Fatal(err)
	}
	b.start()

	// Their messages, through the worker: each sends one now and schedules a reminder.
	var own []string
	for i := range 2 {
		id, err := dispatchID(b.client.Dispatch(ctx, "privacy.canary", user("c1"), map[string]any{"note": fmt.Sprintf("note %d for %s", i, strings.ToUpper(addr))}))
		if err != nil {
			t.Fatal(err)
		}
		own = append(own, id)
	}
	// Bob's message names them in its variables.
	bobs, err := dispatchID(b.client.Dispatch(ctx, "privacy.canary", user("43"), map[string]any{"note": "ask " + name + " <" + addr + ">"}))
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]*ledger.ReceiptRow{}
	for _, id := range append(own, bobs) {
		sent[id] = b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
	}
	// A rejected task whose kept payload holds the address (as a payload held for a newer worker).
	if err := b.store.RecordRejectedTask(ctx, tasks.TypeDispatch, "dispatch:"+uuid.NewString()+":0", b.queue, "payload v2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE herald.rejected_tasks SET payload = $1`, []byte(`{"v":2,"vars":{"to":"`+addr+`"}}`)); err != nil {
		t.Fatal(err)
	}
	// Dispatches naming them that no worker has seen: pending and scheduled in a queue no worker
	// serves, and one of Bob's that names nobody.
	parked := testenv.Queue(t)
	queued := []string{queueDispatchTask(t, b, parked, 0, map[string]any{"to": strings.ToLower(addr)}),
		queueDispatchTask(t, b, parked, time.Hour, map[string]any{"note": "for " + addr})}
	innocent := queueDispatchTask(t, b, parked, 0, map[string]any{"to": "bob@example.net"})
	if hits := dumpHits(t, b, addr); len(hits) < 6 {
		t.Fatalf("only %d rows hold the address before the erasure: the test seeded too little\n%s", len(hits), strings.Join(hits, "\n"))
	}

	addrs, err := b.store.RecipientAddresses(ctx, strings.ToUpper(addr))
	if err != nil || len(addrs) != 1 || addrs[0] != strings.ToLower(addr) {
		t.Fatalf("addresses = %v %v", addrs, err)
	}
	q, err := engine.EraseQueued(ctx, b.redis, b.store, parked, addrs)
	if err != nil || q.Deleted != 2 || q.Active != 0 {
		t.Fatalf("EraseQueued = %+v %v", q, err)
	}
	er, err := b.store.EraseRecipient(ctx, ledger.EraseRequest{Who: strings.ToUpper(addr), Actor: "test", QueuedDeleted: q.Deleted})
	if err != nil {
		t.Fatal(err)
	}
	if !er.Complete() || er.ReceiptsErased != 4 || er.ReceiptsCanceled < 3 || er.MailDeleted != 2 || er.MailRedacted != 1 || er.PayloadsDropped != 1 {
		t.Errorf("erasure = %+v", er)
	}
	for _, line := range dumpHits(t, b, addr, name) {
		t.Errorf("the erased person survives in %s", line)
	}
	for _, s := range []string{strings.ToLower(addr), strings.ToUpper(addr), addr, name} {
		if keys := redisContains(t, b.redis, s); len(keys) > 0 {
			t.Errorf("Redis still holds %q in %v", s, keys)
		}
	}

	// The deliveries are there, with what proves they happened.
	for _, id := range own {
		rs := b.receipts(id)
		if len(rs) != 2 {
			t.Fatalf("dispatch %s has %d receipts after the erasure", id, len(rs))
		}
		for _, r := range rs {
			switch r.ChannelKey {
			case "email":
				if r.ID != sent[id].ID || r.Status != ledger.ReceiptSent || r.SentAt == nil || !r.SentAt.Equal(*sent[id].SentAt) ||
					r.MessageID == "" || r.MessageID != sent[id].MessageID || r.RecipientID != "erased:"+r.ID {
					t.Errorf("sent delivery after the erasure: %+v (before %+v)", r, sent[id])
				}
			case "reminder":
				if r.Status != ledger.ReceiptCanceled || r.LastError != "recipient erased" {
					t.Errorf("reminder after the erasure: %s %q", r.Status, r.LastError)
				}
			}
		}
	}
	// Bob's delivery: untouched but for the mention; his reminder, which would name them, canceled.
	for _, r := range b.receipts(bobs) {
		if r.Recipient.Address != "bob@example.net" || r.RecipientID != "43" {
			t.Errorf("Bob's delivery lost Bob: %+v", r)
		}
		if r.ChannelKey == "email" && (r.Status != ledger.ReceiptSent || r.Subject != "Hello Bob: ask [erased] <[erased]>" ||
			r.MessageID != sent[bobs].MessageID) {
			t.Errorf("Bob's sent delivery: %+v", r)
		}
		if r.ChannelKey == "reminder" && r.Status != ledger.ReceiptCanceled {
			t.Errorf("Bob's reminder naming them: %s, want canceled", r.Status)
		}
	}
	// The queued dispatches are canceled, not lost; Bob's queued one is still there.
	for _, id := range queued {
		if st := b.dispatchStatus(id); st != ledger.DispatchCanceled {
			t.Errorf("queued dispatch %s: %q, want a canceled tombstone", id, st)
		}
		// Its task is gone from Redis: the tombstone counts as met, so the retention can take it.
		var met bool
		if err := b.pool.QueryRow(ctx, `SELECT retention_from IS NOT NULL FROM herald.dispatches WHERE id = $1`, id).Scan(&met); err != nil || !met {
			t.Errorf("tombstone of deleted task %s not met (%v): the retention would keep it forever", id, err)
		}
	}
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	if _, err := insp.GetTaskInfo(parked, tasks.DispatchTaskID(innocent, 0)); err != nil {
		t.Errorf("the queued dispatch naming nobody was removed: %v", err)
	}
	// The audit row counts, and names nobody.
	var detail string
	if err := b.pool.QueryRow(ctx, `SELECT actor || ' ' || action || ' ' || detail::text FROM herald.audit_log WHERE id = $1`, er.AuditID).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(detail, "test erase_recipient") || !strings.Contains(detail, `"queue": {"active": 0, "deleted": 2}`) {
		t.Errorf("audit row: %s", detail)
	}
	// Once more: nothing left to do, in Redis or in PostgreSQL.
	if q, err := engine.EraseQueued(ctx, b.redis, b.store, parked, addrs); err != nil || q != (engine.QueuedErasure{}) {
		t.Errorf("second EraseQueued = %+v %v", q, err)
	}
	again, err := b.store.EraseRecipient(ctx, ledger.EraseRequest{Who: addr, Actor: "test"})
	again.AuditID = 0
	if err != nil || again != (ledger.Erasure{}) {
		t.Errorf("second erasure = %+v %v", again, err)
	}
}

// TestEraseQueuedIgnoresOtherQueuesAndDeliverTasks: only the named queue's dispatch tasks are
// read; a deliver task carries ids only, and a queue that does not exist holds nothing.
func TestEraseQueuedIgnoresOtherQueuesAndDeliverTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	addr := "canary." + strings.TrimPrefix(testenv.Name("c"), "c_") + "@example.net"
	elsewhere := testenv.Queue(t)
	mine := testenv.Queue(t)
	other := queueDispatchTask(t, b, elsewhere, 0, map[string]any{"to": addr})
	c := asynq.NewClient(b.redis)
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask(tasks.TypeDeliver, []byte(`{"v":1,"receipt_id":"`+uuid.NewString()+`","attempt":1,"note":"`+addr+`"}`)),
		asynq.Queue(mine)); err != nil {
		t.Fatal(err)
	}
	q, err := engine.EraseQueued(ctx, b.redis, b.store, mine, []string{addr})
	if err != nil || q != (engine.QueuedErasure{}) {
		t.Fatalf("EraseQueued on a queue with a deliver task only = %+v %v", q, err)
	}
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	if _, err := insp.GetTaskInfo(elsewhere, tasks.DispatchTaskID(other, 0)); err != nil {
		t.Errorf("a task of another queue was touched: %v", err)
	}
	if q, err := engine.EraseQueued(ctx, b.redis, b.store, testenv.Name("never_used"), []string{addr}); err != nil || q.Deleted != 0 {
		t.Errorf("EraseQueued on a queue that does not exist = %+v %v", q, err)
	}
}

// TestEraseQueuedDoesNotTouchALongerAddress: erasing bob@… neither cancels nor deletes the
// queued dispatches of abob@… or bob@….network, whose addresses merely contain bob's.
func TestEraseQueuedDoesNotTouchALongerAddress(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	bob := "bob" + hex + "@example.net"
	parked := testenv.Queue(t)
	var others []string
	for _, addr := range []string{"abob" + hex + "@example.net", "bob" + hex + "@example.network"} {
		others = append(others, queueDispatchTask(t, b, parked, 0, map[string]any{"to": addr, "link": "https://x/u?email=" + url.QueryEscape(addr)}))
	}
	bobs := queueDispatchTask(t, b, parked, 0, map[string]any{"to": strings.ToUpper(bob)})

	q, err := engine.EraseQueued(ctx, b.redis, b.store, parked, []string{bob})
	if err != nil || q.Deleted != 1 {
		t.Errorf("EraseQueued = %+v %v, want bob's task alone deleted", q, err)
	}
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	for _, id := range others {
		if _, err := insp.GetTaskInfo(parked, tasks.DispatchTaskID(id, 0)); err != nil {
			t.Errorf("another person's queued dispatch was deleted by bob's erasure: %v", err)
		}
		if st := b.dispatchStatus(id); st == ledger.DispatchCanceled {
			t.Errorf("another person's queued dispatch was canceled (tombstone) by bob's erasure")
		}
	}
	if st := b.dispatchStatus(bobs); st != ledger.DispatchCanceled {
		t.Errorf("bob's queued dispatch: %q, want a canceled tombstone", st)
	}
}

// TestEraseQueuedFindsEscapedAddress: a queued dispatch whose variables hold the address only
// URL- or HTML-escaped (an unsubscribe link) is found, as EraseRecipient finds it in PostgreSQL.
func TestEraseQueuedFindsEscapedAddress(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	ann := "ann+" + hex + "@example.net"
	parked := testenv.Queue(t)
	ids := []string{
		queueDispatchTask(t, b, parked, 0, map[string]any{"unsubscribe": "https://app.test/u?email=ann%2B" + hex + "%40example.net"}),
		queueDispatchTask(t, b, parked, 0, map[string]any{"html": `<a href="mailto:ann&#43;` + hex + `@example.net">x</a>`}),
	}
	q, err := engine.EraseQueued(ctx, b.redis, b.store, parked, []string{ann})
	if err != nil || q.Deleted != 2 {
		t.Errorf("EraseQueued = %+v %v, want 2 deleted", q, err)
	}
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	for _, id := range ids {
		if _, err := insp.GetTaskInfo(parked, tasks.DispatchTaskID(id, 0)); err == nil {
			t.Errorf("a queued dispatch holding the escaped address survives the erasure in Redis")
		}
	}
}

// TestEraseQueuedPartialAddressMatchesNobodyElse: a domain or a local part alone (as a failed
// delivery may have stored it) is matched as a whole address too, so it never reaches into a
// longer one: ann's queued dispatch stays.
func TestEraseQueuedPartialAddressMatchesNobodyElse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	parked := testenv.Queue(t)
	id := queueDispatchTask(t, b, parked, 0, map[string]any{"to": "ann" + hex + "@example.net"})
	for _, partial := range []string{"@example.net", "ann" + hex + "@", "@"} {
		q, err := engine.EraseQueued(ctx, b.redis, b.store, parked, []string{"bob@example.net", partial})
		if err != nil || q != (engine.QueuedErasure{}) {
			t.Errorf("EraseQueued(%q) = %+v %v, want nothing erased", partial, q, err)
		}
	}
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	if _, err := insp.GetTaskInfo(parked, tasks.DispatchTaskID(id, 0)); err != nil || b.dispatchStatus(id) == ledger.DispatchCanceled {
		t.Errorf("a partial address deleted or canceled ann's queued dispatch: %v", err)
	}
}
