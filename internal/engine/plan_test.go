package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
)

// TestPlanChunk walks the plan's decisions with no service running: states and reasons, due and
// expiry times, attempt ceilings, the inline pick and the hand-off to asynq.
func TestPlanChunk(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	accepted := now.Add(-2 * time.Second)
	ada := events.Recipient{ID: "42", Address: "ada@example.net", Name: "Ada", Locale: "en-GB"}
	bob := events.Recipient{Address: " Bob@Example.net "}
	nobody := events.Recipient{Name: "no id, no address"}
	yes, no := events.Decision{Send: true}, events.Decision{Send: false, Reason: "muted"}
	email := events.Channel{Key: "email", Transport: events.TransportEmail, Audience: "user"}
	later := events.Channel{Key: "tips", Transport: events.TransportEmail, Audience: "user", Time: events.In(72 * time.Hour)}
	soon := events.Channel{Key: "soon", Transport: events.TransportEmail, Audience: "user", Time: events.In(30 * time.Second)}
	capped := events.Channel{Key: "capped", Transport: events.TransportEmail, Audience: "user", Policy: events.Policy{MaxAttempts: 2}}
	pager := events.Channel{Key: "page", Transport: "pager", Audience: "ops"}

	type want struct {
		status    ledger.Status
		recipient string // RecipientID; "invalid:" means the invalid: prefix and the receipt id
		reason    string
		due       time.Time
		enqueued  bool
		attempts  int
	}
	for _, tc := range []struct {
		name    string
		ch      events.Channel
		rcs     []events.Recipient
		answers []events.Decision
		inline  bool
		want    []want
		wantIn  int // the inline index, -1 none
	}{
		{"one immediate delivery is sent inline", email, []events.Recipient{ada}, []events.Decision{yes}, true,
			[]want{{status: ledger.ReceiptSending, recipient: "42", due: accepted, attempts: 10}}, 0},
		{"without inline it is handed to asynq", email, []events.Recipient{ada}, []events.Decision{yes}, false,
			[]want{{status: ledger.ReceiptScheduled, recipient: "42", due: accepted, enqueued: true, attempts: 10}}, -1},
		{"two immediate deliveries both go to asynq", email, []events.Recipient{ada, bob}, []events.Decision{yes, yes}, true,
			[]want{{status: ledger.ReceiptScheduled, recipient: "42", due: accepted, enqueued: true, attempts: 10},
				{status: ledger.ReceiptScheduled, recipient: "bob@example.net", due: accepted, enqueued: true, attempts: 10}}, -1},
		{"a delivery beyond the horizon waits for the promoter", later, []events.Recipient{ada}, []events.Decision{yes}, true,
			[]want{{status: ledger.ReceiptScheduled, recipient: "42", due: accepted.Add(72 * time.Hour), attempts: 10}}, -1},
		{"a delivery within the horizon is scheduled in asynq, not sent inline", soon, []events.Recipient{ada}, []events.Decision{yes}, true,
			[]want{{status: ledger.ReceiptScheduled, recipient: "42", due: accepted.Add(30 * time.Second), enqueued: true, attempts: 10}}, -1},
		{"should_send no is skipped with its reason", email, []events.Recipient{ada}, []events.Decision{no}, true,
			[]want{{status: ledger.ReceiptSkipped, recipient: "42", reason: "muted", due: accepted, attempts: 10}}, -1},
		{"should_send no without a reason", email, []events.Recipient{ada}, []events.Decision{{}}, true,
			[]want{{status: ledger.ReceiptSkipped, recipient: "42", reason: "should_send said no", due: accepted, attempts: 10}}, -1},
		{"a recipient without a key is skipped", email, []events.Recipient{nobody}, []events.Decision{yes}, true,
			[]want{{status: ledger.ReceiptSkipped, recipient: "invalid:", reason: "recipient has neither id nor address", due: accepted, attempts: 10}}, -1},
		{"no sender for the transport fails", pager, []events.Recipient{ada}, []events.Decision{yes}, true,
			[]want{{status: ledger.ReceiptFailed, recipient: "42", reason: `no sender configured for transport "pager" on this worker`, due: accepted, attempts: 10}}, -1},
		{"the channel's policy caps the attempts", capped, []events.Recipient{ada}, []events.Decision{yes}, false,
			[]want{{status: ledger.ReceiptScheduled, recipient: "42", due: accepted, enqueued: true, attempts: 2}}, -1},
		{"the only scheduled delivery beside a skipped one is sent inline", email, []events.Recipient{ada, bob}, []events.Decision{no, yes}, true,
			[]want{{status: ledger.ReceiptSkipped, recipient: "42", reason: "muted", due: accepted, attempts: 10},
				{status: ledger.ReceiptSending, recipient: "bob@example.net", due: accepted, attempts: 10}}, 1},
		{"an empty chunk plans nothing", email, nil, nil, true, nil, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := 0
			p := planChunk(planInput{DispatchID: "d1", EventID: "a.b", AcceptedAt: accepted, Queue: "q", Channel: tc.ch,
				Recipients: tc.rcs, Answers: tc.answers, MaxAge: time.Hour, MaxAttempts: 10,
				CanSend: func(tr string) bool { return tr == events.TransportEmail }, Now: now, Horizon: time.Minute,
				Inline: tc.inline, Lease: 2 * time.Minute, NewID: func() string { n++; return fmt.Sprintf("r%d", n) }})
			if p.Inline != tc.wantIn {
				t.Errorf("inline = %d, want %d", p.Inline, tc.wantIn)
			}
			if len(p.Receipts) != len(tc.want) {
				t.Fatalf("%d receipts, want %d: %+v", len(p.Receipts), len(tc.want), p.Receipts)
			}
			var due []string
			for i, w := range tc.want {
				r := p.Receipts[i]
				id := fmt.Sprintf("r%d", i+1)
				wantRecipient := w.recipient
				if wantRecipient == "invalid:" {
					wantRecipient = "invalid:" + id
				}
				if r.ID != id || r.DispatchID != "d1" || r.EventID != "a.b" || r.Queue != "q" || r.ChannelKey != tc.ch.Key ||
					r.Transport != tc.ch.Transport || r.Audience != tc.ch.Audience {
					t.Errorf("receipt %d identity: %+v", i, r)
				}
				if r.Status != w.status || r.RecipientID != wantRecipient || r.LastError != w.reason || !r.DueAt.Equal(w.due) ||
					!r.ExpiresAt.Equal(w.due.Add(time.Hour)) || r.Enqueued != w.enqueued || r.MaxAttempts != w.attempts {
					t.Errorf("receipt %d: status %s recipient %q reason %q due %v expires %v enqueued %v attempts %d; want %+v",
						i, r.Status, r.RecipientID, r.LastError, r.DueAt, r.ExpiresAt, r.Enqueued, r.MaxAttempts, w)
				}
				if (r.Status == ledger.ReceiptSending) != (r.ClaimFor == 2*time.Minute) {
					t.Errorf("receipt %d: status %s with claim %v (only the inline one is claimed, for the lease)", i, r.Status, r.ClaimFor)
				}
				if w.enqueued {
					due = append(due, id)
				}
			}
			if rc := tc.rcs; len(rc) > 0 && p.Receipts[0].Recipient != (ledger.Recipient{Address: rc[0].Address, Name: rc[0].Name, Locale: rc[0].Locale}) {
				t.Errorf("stored recipient %+v, from %+v", p.Receipts[0].Recipient, rc[0])
			}
			if len(p.Due) != len(due) {
				t.Fatalf("handed to asynq %+v, want %v", p.Due, due)
			}
			for i, d := range p.Due {
				if d.ID != due[i] {
					t.Errorf("handed to asynq %+v, want %v", p.Due, due)
				}
			}
		})
	}
}

// TestPlanChunkIsAFunctionOfItsInput: the plan is a function of its input alone — the same input
// plans the same deliveries, and it calls nothing but NewID and CanSend.
func TestPlanChunkIsAFunctionOfItsInput(t *testing.T) {
	t.Parallel()
	now := time.Now()
	in := func() planInput {
		n := 0
		return planInput{DispatchID: "d", EventID: "a.b", AcceptedAt: now, Channel: events.Channel{Key: "email", Transport: "email"},
			Recipients: []events.Recipient{{ID: "1"}, {ID: "2"}}, Answers: []events.Decision{{Send: true}, {Send: false}},
			MaxAge: time.Hour, MaxAttempts: 3, CanSend: func(string) bool { return true }, Now: now, Horizon: time.Minute,
			NewID: func() string { n++; return fmt.Sprint(n) }}
	}
	a, b := planChunk(in()), planChunk(in())
	if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
		t.Fatalf("two plans of one input differ:\n%+v\n%+v", a, b)
	}
}
