package email

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/channels"
)

func TestClassifySession(t *testing.T) {
	t.Parallel()
	reply := func(code int, msg string) error { return &textproto.Error{Code: code, Msg: msg} }
	for _, tc := range []struct {
		name  string
		err   error
		code  int
		alert bool
		hint  string // the error names the fix
	}{
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, 0, false, ""},
		{"dropped", io.EOF, 0, false, ""},
		{"deadline", fmt.Errorf("read: %w", context.DeadlineExceeded), 0, false, ""},
		{"greeting 421", reply(421, "4.3.2 too busy"), 421, false, ""},
		{"EHLO and HELO refused", fmt.Errorf("smtp: EHLO/HELO exchange failed. EHLO response: %w, HELO response: %w",
			reply(504, "5.5.2 Helo command rejected: need fully-qualified hostname"), reply(504, "5.5.2 x")), 504, true, "helo="},
		{"greeting 554", reply(554, "5.7.1 no service for you"), 554, true, "helo="},
		{"AUTH 535", fmt.Errorf("SMTP AUTH failed: %w", reply(535, "5.7.8 bad credentials")), 535, true, ""},
		{"private CA", fmt.Errorf("tls: failed to verify certificate: %w", x509.UnknownAuthorityError{}), 0, true, "HERALD_SMTP_CA_FILE"},
		{"wrong host", fmt.Errorf("tls: %w", x509.HostnameError{Certificate: &x509.Certificate{}, Host: "relay"}), 0, true, "host name"},
		{"no STARTTLS", errors.New(`STARTTLS mode set to: "TLSMandatory", but target host does not support STARTTLS`), 0, true, "tls="},
		{"no mechanism", errNoAuthMechanism, 0, true, "auth="},
	} {
		e := classifySession(tc.err, "mail.example.com")
		if e.Class != channels.Temporary || e.Code != tc.code || e.ConfigAlert != tc.alert || e.InDoubt ||
			!strings.Contains(e.Error(), tc.hint) {
			t.Errorf("%s: %v code %d alert %v in doubt %v (%v); want temporary %d %v naming %q",
				tc.name, e.Class, e.Code, e.ConfigAlert, e.InDoubt, e, tc.code, tc.alert, tc.hint)
		}
	}
}

func TestClassifySendReasons(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		reason  gomail.SendErrReason
		class   channels.Class
		inDoubt bool
	}{
		{gomail.ErrSMTPDataClose, channels.Temporary, true}, // no reply code: the answer to "." was lost
		{gomail.ErrWriteContent, channels.Temporary, false},
		{gomail.ErrSMTPData, channels.Temporary, false},
		{gomail.ErrSMTPMailFrom, channels.Temporary, false},
		{gomail.ErrConnCheck, channels.Temporary, false},
		{gomail.ErrGetRcpts, channels.Permanent, false},
	} {
		e := Classify(fmt.Errorf("send: %w", &gomail.SendError{Reason: tc.reason}))
		if e.Class != tc.class || e.InDoubt != tc.inDoubt {
			t.Errorf("%v: %v in doubt %v, want %v %v", tc.reason, e.Class, e.InDoubt, tc.class, tc.inDoubt)
		}
	}
}

func TestSessionBreaker(t *testing.T) {
	t.Parallel()
	var b sessionBreaker
	steps := []struct {
		code      int
		enh, rcpt string // code 0: a message went through
		want      verdict
	}{
		{504, "5.5.2", "a@one.test", undecided},
		{504, "5.5.2", "b@ONE.test", undecided}, // same domain
		{504, "5.5.2", "c@two.test", undecided},
		{501, "5.5.4", "d@three.test", undecided}, // another reply restarts the streak
		{501, "5.5.4", "e@four.test", undecided},
		{501, "5.5.4", "f@five.test", sessionRefused},
		{550, "5.1.1", "g@six.test", recipientRefused},
		{504, "5.5.2", "h@seven.test", sessionRefused}, // open until a success
		{0, "", "", 0},
		{504, "5.5.2", "i@eight.test", recipientRefused},
		{550, "5.7.1", "j@nine.test", recipientRefused},
		{452, "4.5.3", "k@ten.test", recipientRefused},
	}
	for i, s := range steps {
		if s.code == 0 {
			b.delivered()
			continue
		}
		if got := b.rcptRefused(s.code, s.enh, s.rcpt); got != s.want {
			t.Fatalf("step %d (%d %s %s): verdict %d, want %d", i, s.code, s.enh, s.rcpt, got, s.want)
		}
	}
}
