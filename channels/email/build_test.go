package email

import (
	"bytes"
	"mime"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/heraldhq/herald/channels"
)

const (
	testFrom = "sender@herald.test"
	testTo   = "user@example.net"
	testID   = "<0190d2a4-7b1c-7000-8000-000000000001@herald.test>"
)

// written builds m and parses the bytes go-mail would put on the wire.
func written(t *testing.T, m channels.Message) (*mail.Message, error) {
	t.Helper()
	msg, err := build(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		t.Fatalf("write: %v", err)
	}
	parsed, err := mail.ReadMessage(&buf)
	if err != nil {
		t.Fatalf("the built message does not parse: %v\n%s", err, buf.String())
	}
	return parsed, nil
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
	}) >= 0
}

// checkWritten asserts what no input may change: exactly the expected headers, once each; one
// From and one To, the given addresses; the Message-ID and X-Mailer as set; no control
// characters in a decoded display name or subject.
func checkWritten(t *testing.T, m channels.Message, got *mail.Message) {
	t.Helper()
	want := []string{"Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Subject", "To", "X-Mailer"}
	for k := range m.Headers {
		want = append(want, canonicalHeader(k))
	}
	var keys []string
	for k, v := range got.Header {
		if k == "Content-Transfer-Encoding" { // single-part bodies
			continue
		}
		if len(v) != 1 {
			t.Fatalf("header %s appears %d times: %q", k, len(v), v)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, slices.Compact(want)) {
		t.Fatalf("headers %q, want %q (input %+q)", keys, want, m)
	}
	for _, h := range []struct{ name, addr string }{{"From", m.From}, {"To", m.To}} {
		list, err := mail.ParseAddressList(got.Header.Get(h.name))
		if err != nil {
			t.Fatalf("%s %q does not parse: %v", h.name, got.Header.Get(h.name), err)
		}
		if len(list) != 1 || list[0].Address != h.addr {
			t.Fatalf("%s lists %v, want exactly %q", h.name, list, h.addr)
		}
		if hasControl(list[0].Name) {
			t.Fatalf("%s display name %q holds control characters", h.name, list[0].Name)
		}
	}
	wantID := "<" + strings.TrimSuffix(strings.TrimPrefix(m.MessageID, "<"), ">") + ">"
	if id := got.Header.Get("Message-Id"); id != wantID && (m.MessageID != "" || id == "") {
		t.Fatalf("Message-ID %q, want %q", id, wantID) // go-mail makes one when none is given
	}
	if x := got.Header.Get("X-Mailer"); x != "Herald" {
		t.Fatalf("X-Mailer %q", x)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(got.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject %q: %v", got.Header.Get("Subject"), err)
	}
	if hasControl(subject) {
		t.Fatalf("decoded subject %q holds control characters", subject)
	}
	if !slices.Equal(strings.Fields(subject), strings.Fields(cleanLine(m.Subject))) {
		t.Fatalf("subject %q, want %q", subject, cleanLine(m.Subject))
	}
}

func FuzzBuild(f *testing.F) {
	for _, s := range []string{
		"Ada", "x\r\nBcc: evil@attacker.test", "\"quoted\" <evil@attacker.test>, ", "nul\x00byte", "line\u2028sep",
		"=?utf-8?q?a=0D=0ABcc:_evil@attacker.test?=", "=?utf-8?b?QmNjOiBldmlsQGF0dGFja2VyLnRlc3Q=?=", "é\\\"", "",
	} {
		f.Add(s, s, s, s, testFrom, testTo, testID)
	}
	f.Add("A", "B", "s", "v", "a@b.c\r\nBcc: e@x.y", "x@y.z, e@x.y", "<a b@c>")
	f.Fuzz(func(t *testing.T, fromName, toName, subject, value, from, to, id string) {
		// Display names, subject and header values are text: cleaned, never a reason to fail.
		m := channels.Message{MessageID: testID, FromName: fromName, From: testFrom, ToName: toName, To: testTo,
			Subject: subject, Text: "body", HTML: "<p>body</p>", Headers: map[string]string{"X-Herald-Test": value}}
		got, err := written(t, m)
		if err != nil {
			t.Fatalf("display names, subject and header values must be cleaned, not refused: %v (input %+q)", err, m)
		}
		checkWritten(t, m, got)

		// Addresses and the Message-ID are strict: refused, or written exactly as given.
		m.From, m.To, m.MessageID = from, to, id
		if got, err = written(t, m); err == nil {
			checkWritten(t, m, got)
		}
	})
}

func TestBuild(t *testing.T) {
	t.Parallel()
	base := func() channels.Message {
		return channels.Message{MessageID: testID, FromName: "Herald", From: testFrom, ToName: "User", To: testTo,
			Subject: "Hello", Text: "x"}
	}
	for _, tc := range []struct {
		name    string
		edit    func(m *channels.Message)
		wantErr string
	}{
		{"plain", func(*channels.Message) {}, ""},
		{"CRLF in display names and subject", func(m *channels.Message) {
			m.FromName, m.ToName, m.Subject = "a\r\nBcc: e@attacker.test", "b\nCc: e@attacker.test", "s\r\nBcc: e@attacker.test"
		}, ""},
		{"quotes in a display name", func(m *channels.Message) { m.ToName = `x" <e@attacker.test>, "y` }, ""},
		{"NUL and U+2028", func(m *channels.Message) { m.FromName, m.Subject = "a\x00b", "a\u2028b\u2029c" }, ""},
		{"encoded word in the subject", func(m *channels.Message) { m.Subject = "=?utf-8?q?a=0D=0ABcc:_e@attacker.test?=" }, ""},
		{"header value with CRLF", func(m *channels.Message) {
			m.Headers = map[string]string{"List-Unsubscribe": "<https://x.test/u>\r\nBcc: e@attacker.test"}
		}, ""},
		{"address with CRLF", func(m *channels.Message) { m.To = "user@example.net\r\nRCPT TO:<e@attacker.test>" }, "to address"},
		{"two addresses", func(m *channels.Message) { m.To = "user@example.net, e@attacker.test" }, "to address"},
		{"address with a name", func(m *channels.Message) { m.From = "Evil <e@attacker.test>" }, "from address"},
		{"Message-ID with a space", func(m *channels.Message) { m.MessageID = "<a b@herald.test>" }, "message id"},
		{"Bcc header", func(m *channels.Message) { m.Headers = map[string]string{"bcc": "e@attacker.test"} }, "header"},
		{"X-Mailer header", func(m *channels.Message) { m.Headers = map[string]string{"X-Mailer": "x"} }, "header"},
		{"header name with a space", func(m *channels.Message) { m.Headers = map[string]string{"X Bad": "x"} }, "header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := base()
			tc.edit(&m)
			got, err := written(t, m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkWritten(t, m, got)
		})
	}
}
