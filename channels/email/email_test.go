package email_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/channeltest"
	"github.com/heraldhq/herald/channels/email"
	"github.com/heraldhq/herald/channels/email/emailtest"
)

func newSender(t *testing.T, url string, pool int) *email.Sender {
	t.Helper()
	s, err := email.New(email.Config{URL: url, PoolSize: pool, SendTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	channeltest.Run(t, func(t *testing.T) channeltest.Harness {
		srv := emailtest.Start(t)
		return channeltest.Harness{
			Sender: newSender(t, srv.URL(), 4),
			Received: func(*testing.T) []channeltest.Delivered {
				var out []channeltest.Delivered
				for _, m := range srv.Messages() {
					out = append(out, channeltest.Delivered{MessageID: m.MessageID, To: strings.Join(m.To, ","),
						Subject: m.Subject, HTML: m.HTML, Text: m.Text})
				}
				return out
			},
		}
	})
}

func msg(n string) channels.Message {
	return channels.Message{MessageID: "<" + n + "@herald.test>", From: "a@herald.test", To: "b@example.net",
		Subject: "s " + n, HTML: "<p>x</p>", Text: "x"}
}

func TestMultipartAndConnectionReuse(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	s := newSender(t, srv.URL(), 1)
	for _, n := range []string{"1", "2", "3"} {
		if _, err := s.Send(t.Context(), msg(n)); err != nil {
			t.Fatal(err)
		}
	}
	got := srv.WaitFor(t, 3, 5*time.Second)
	if got[0].Multipart != "multipart/alternative" {
		t.Errorf("content type %q, want multipart/alternative", got[0].Multipart)
	}
	if got[0].MessageID != "<1@herald.test>" {
		t.Errorf("Message-ID %q", got[0].MessageID)
	}
	if c := srv.Connections(); c != 1 {
		t.Errorf("%d connections for 3 messages on a pool of 1, want 1", c)
	}
}

func TestClassification(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code  int
		enh   string
		class channels.Class
		alert bool
	}{
		{421, "4.3.0", channels.Temporary, false},
		{451, "4.3.0", channels.Temporary, false},
		{452, "4.2.2", channels.Temporary, false},
		{550, "5.1.1", channels.Permanent, false},
		{552, "5.3.4", channels.Permanent, false},
		{554, "5.7.1", channels.Permanent, false},
		{530, "5.7.0", channels.Temporary, true},
		{534, "5.7.9", channels.Temporary, true},
		{535, "5.7.8", channels.Temporary, true},
		{538, "5.7.11", channels.Temporary, true},
		{554, "5.7.8", channels.Temporary, true},
		{0, "", channels.Temporary, false},
	} {
		e := email.ClassifyCode(tc.code, tc.enh, errors.New("x"))
		if e.Class != tc.class || e.ConfigAlert != tc.alert {
			t.Errorf("%d %s: class %v alert %v; want %v %v", tc.code, tc.enh, e.Class, e.ConfigAlert, tc.class, tc.alert)
		}
	}
}

func TestServerReplies(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	s := newSender(t, srv.URL(), 1)
	srv.FailNext(emailtest.Reply(451, "4.3.0", "try later"), emailtest.Reply(550, "5.1.1", "no such user"))
	_, err := s.Send(t.Context(), msg("a"))
	var ce *channels.Error
	if !errors.As(err, &ce) || ce.Class != channels.Temporary || ce.Code != 451 {
		t.Fatalf("451: %v", err)
	}
	_, err = s.Send(t.Context(), msg("b"))
	if !errors.As(err, &ce) || ce.Class != channels.Permanent || ce.Code != 550 {
		t.Fatalf("550: %v", err)
	}
	if _, err := s.Send(t.Context(), msg("c")); err != nil {
		t.Fatalf("after failures the connection must still work: %v", err)
	}
	if got := srv.WaitFor(t, 1, 5*time.Second); got[0].Subject != "s c" {
		t.Fatalf("got %q", got[0].Subject)
	}
}

func TestAuthFailureIsTemporaryConfigAlertWithoutPassword(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	srv.RequireAuth("herald", "right-password")
	s := newSender(t, "smtp://herald:wrong-pa55word@"+srv.Addr+"?tls=none&auth=plain-noenc", 1)
	_, err := s.Send(t.Context(), msg("a"))
	var ce *channels.Error
	if !errors.As(err, &ce) || ce.Class != channels.Temporary || !ce.ConfigAlert || ce.Code != 535 {
		t.Fatalf("535: %#v", err)
	}
	if strings.Contains(err.Error(), "wrong-pa55word") {
		t.Fatalf("error leaks the password: %v", err)
	}
	ok := newSender(t, "smtp://herald:right-password@"+srv.Addr+"?tls=none&auth=plain-noenc", 1)
	if _, err := ok.Send(t.Context(), msg("b")); err != nil {
		t.Fatalf("right password: %v", err)
	}
}

func TestNetworkErrorIsTemporary(t *testing.T) {
	t.Parallel()
	s := newSender(t, "smtp://127.0.0.1:1?tls=none", 1)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := s.Send(ctx, msg("a"))
	if channels.ClassOf(err) != channels.Temporary || err == nil {
		t.Fatalf("connection refused: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		port    int
		tls     string
		wantErr bool
	}{
		{in: "smtp://u:p@mail.example.com", port: 587, tls: "starttls"},
		{in: "smtps://mail.example.com", port: 465, tls: "tls"},
		{in: "smtp://mail.example.com:2525?tls=none", port: 2525, tls: "none"},
		{in: "smtp://mail.example.com?tls=opportunistic", port: 587, tls: "opportunistic"},
		{in: "smtp://mail.example.com?tls=maybe", wantErr: true},
		{in: "http://mail.example.com", wantErr: true},
		{in: "smtp://user:s3cret@exa mple.com:x", wantErr: true},
		{in: "smtp://mail.example.com:99999", wantErr: true},
	} {
		ep, err := email.ParseURL(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: accepted", tc.in)
			} else if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%s: error leaks password: %v", tc.in, err)
			}
			continue
		}
		if err != nil || ep.Port != tc.port || ep.TLS != tc.tls {
			t.Errorf("%s: %+v %v", tc.in, ep, err)
		}
		if strings.Contains(ep.String(), ":p@") {
			t.Errorf("String leaks password: %s", ep)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("smtp://u:p@h:25?tls=none")
	f.Add("smtps://h")
	f.Fuzz(func(t *testing.T, s string) {
		ep, err := email.ParseURL(s)
		if err == nil && (ep.Port <= 0 || ep.Port > 65535) {
			t.Fatalf("bad port accepted: %+v", ep)
		}
		if err != nil && strings.Contains(s, "@") {
			if _, pass, ok := strings.Cut(s, ":"); ok && len(pass) > 12 && strings.Contains(err.Error(), pass) {
				t.Fatalf("error echoes input: %v", err)
			}
		}
	})
}
