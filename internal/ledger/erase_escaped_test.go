package ledger_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestEraseFindsEscapedNeighbours: the address is erased when what comes right before it is
// escaped — encoding/json's "\u003c" in a malformed kept payload or in a rejected reason quoting
// JSON, a numeric HTML entity of a non-ASCII character (&#160;, &#8220;) in captured mail. The
// whole-address matching first missed these (a third review found it).
func TestEraseFindsEscapedNeighbours(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	c := newCanary()
	// A truncated payload (why it was rejected), marshalled by encoding/json: < is \u003c.
	s.rejected("dispatch:"+newID()+":0", "malformed payload", `{"v":1,"vars":{"to":"Nym \u003c`+c.addr+`\u003e"`)
	s.rejected("dispatch:"+newID()+":0", `decode vars: {"to":"\u003c`+c.addr+`\u003e"}`, "")
	s.exec(`INSERT INTO herald.dev_mailbox (message_id, mail_from, rcpt_to, subject, html_body, text_body)
		VALUES ('m1', 'app@example.org', 'other@example.org', 'cc list', $1, 'x')`,
		`<p>Also copied:&#160;`+c.addr+`</p><p>&#8220;`+c.addr+`&#8221;</p>`)
	assertPresent(t, s.pool, c.addr)
	er := s.erase(c.addr)
	if er.MailRedacted != 1 || er.RejectedRedacted != 1 || er.PayloadsDropped != 1 {
		t.Errorf("erasure %+v: want the captured message and one rejected reason redacted, one kept payload dropped", er)
	}
	assertGone(t, s.pool, c)
}

// TestEraseTakesAddressesNetMailRefuses: an address net/mail does not parse but mail systems
// deliver to (consecutive or trailing dots in the local part, common on Japanese carriers) can
// be erased; so can any address a delivery went to, however it is written.
func TestEraseTakesAddressesNetMailRefuses(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	for _, addr := range []string{"taro..yamada@example.jp", "hanako.@example.jp"} {
		s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", events.Recipient{Address: addr, Name: "Taro"},
			ledger.ReceiptFailed, "Hi", "550 no")
		assertPresent(t, s.pool, addr)
		er, err := s.store.EraseRecipient(t.Context(), ledger.EraseRequest{Who: addr, Actor: "dpo"})
		if err != nil || er.ReceiptsErased != 1 {
			t.Errorf("erase %q (its receipt's recipient id and address): %+v, %v; want its receipt erased", addr, er, err)
		}
		for _, line := range testenv.DumpHerald(t, s.pool) {
			if strings.Contains(strings.ToLower(line), addr) {
				t.Errorf("%q survives its erasure in %s", addr, line)
			}
		}
	}
}

// TestEraseByIDWithAStoredPartialAddress: erasing by recipient id passes the addresses its
// deliveries went to on to engine.EraseQueued; one stored malformed ("ann@", a failed delivery)
// must not abort the erasure.
func TestEraseByIDWithAStoredPartialAddress(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", events.Recipient{ID: "cust-7", Address: "ann@", Name: "Ann"},
		ledger.ReceiptFailed, "Hi", "553 bad address")
	s.delivery(s.dispatch(`{}`, ledger.DispatchFannedOut, "cli", ""), "email", events.Recipient{ID: "cust-7", Address: "ann@example.org", Name: "Ann"},
		ledger.ReceiptSent, "Hi", "250 ok")
	addrs, err := s.store.RecipientAddresses(t.Context(), "cust-7")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(addrs, []string{"ann@", "ann@example.org"}) {
		t.Fatalf("addresses of recipient id cust-7: %q", addrs)
	}
	m, err := ledger.NewAddressMatcher(addrs)
	if err != nil {
		t.Fatalf("addresses %q of recipient id cust-7: %v (EraseQueued, hence `enqueue erase cust-7`, fails)", addrs, err)
	}
	if !m.MatchPayload([]byte(`{"to":"ann@example.org"}`)) || m.MatchPayload([]byte(`{"to":"joann@example.org"}`)) {
		t.Error("the matcher of cust-7's addresses finds the wrong payloads")
	}
}
