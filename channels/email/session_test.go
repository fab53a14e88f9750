package email_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/email"
	"github.com/heraldhq/herald/channels/email/emailtest"
)

// sendWithin runs one Send under a ctx of budget and fails the test if it is still running at
// bound — a liveness bound, far above budget, not a timing measurement.
func sendWithin(t *testing.T, s *email.Sender, m channels.Message, budget, bound time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := s.Send(ctx, m); done <- err }()
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		t.Fatalf("Send still running %v after its %v deadline: the attempt is not bounded by its context", bound, budget)
		return nil
	}
}

func classified(t *testing.T, err error) *channels.Error {
	t.Helper()
	var ce *channels.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want a *channels.Error, got %T %v", err, err)
	}
	return ce
}

// TestSendBoundedByContext: one attempt, redial included, ends at its context's deadline
// whatever step the server stalls in — not after a fresh SendTimeout per step.
func TestSendBoundedByContext(t *testing.T) {
	t.Parallel()
	const stall = 20 * time.Second
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, srv *emailtest.Server, s *email.Sender)
	}{
		{"greeting", func(_ *testing.T, srv *emailtest.Server, _ *email.Sender) { srv.StallGreeting(stall) }},
		{"ehlo", func(_ *testing.T, srv *emailtest.Server, _ *email.Sender) { srv.StallHello(stall) }},
		{"data reply", func(_ *testing.T, srv *emailtest.Server, _ *email.Sender) { srv.SetDelay(stall) }},
		{"redial", func(t *testing.T, srv *emailtest.Server, s *email.Sender) {
			// A pooled connection the relay closed: the NOOP fails, the sender redials, and the
			// new connection's greeting stalls.
			if _, err := s.Send(t.Context(), msg("warm")); err != nil {
				t.Fatal(err)
			}
			srv.StallGreeting(stall)
			srv.CloseConnections()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := emailtest.Start(t)
			s, err := email.New(email.Config{URL: srv.URL(), PoolSize: 1, SendTimeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			tc.setup(t, srv, s)
			err = sendWithin(t, s, msg("bounded"), time.Second, 4*time.Second)
			if ce := classified(t, err); ce.Class != channels.Temporary || ce.InDoubt != (tc.name == "data reply") {
				t.Fatalf("a send cut short by its deadline must be temporary, in doubt only after the final \".\": %#v", ce)
			}
			if tc.name == "redial" && srv.Connections() != 2 {
				t.Fatalf("%d connections, want 2: the stall was meant to hit the redial", srv.Connections())
			}
		})
	}
}

// TestCanceledContextStopsSend: a cancellation (a shutdown) ends a send waiting for the server.
func TestCanceledContextStopsSend(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	s := newSender(t, srv.URL(), 1)
	inData := srv.SetDelay(20 * time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := s.Send(ctx, msg("c")); done <- err }()
	<-inData
	cancel()
	select {
	case err := <-done:
		if ce := classified(t, err); ce.Class != channels.Temporary || !ce.InDoubt {
			t.Fatalf("canceled while waiting for the reply to the final \".\": want temporary and in doubt, got %#v", ce)
		}
	case <-time.After(4 * time.Second):
		t.Fatal("Send ignored its canceled context")
	}
}

// TestLostReplyAfterDataIsInDoubt: only a reply lost after the final "." is in doubt; a real
// answer to it, or a failure before it, is not.
func TestLostReplyAfterDataIsInDoubt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		setup   func(srv *emailtest.Server)
		class   channels.Class
		inDoubt bool
		queued  int // messages the server kept
	}{
		{"dropped after the final dot", func(srv *emailtest.Server) { srv.DropAfterData(1) }, channels.Temporary, true, 1},
		{"no reply to the final dot", func(srv *emailtest.Server) { srv.SetDelay(20 * time.Second) }, channels.Temporary, true, 0},
		{"451 to the final dot", func(srv *emailtest.Server) { srv.FailNext(emailtest.Reply(451, "4.3.0", "try later")) }, channels.Temporary, false, 0},
		{"554 to the final dot", func(srv *emailtest.Server) { srv.FailNext(emailtest.Reply(554, "5.6.0", "bad content")) }, channels.Permanent, false, 0},
		{"stalled greeting", func(srv *emailtest.Server) { srv.StallGreeting(20 * time.Second) }, channels.Temporary, false, 0},
		{"refused recipient", func(srv *emailtest.Server) { srv.RefuseRcpt(emailtest.Reply(450, "4.2.1", "mailbox busy")) }, channels.Temporary, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := emailtest.Start(t)
			s := newSender(t, srv.URL(), 1)
			tc.setup(srv)
			m := msg("doubt")
			ce := classified(t, sendWithin(t, s, m, time.Second, 4*time.Second))
			if ce.Class != tc.class || ce.InDoubt != tc.inDoubt {
				t.Fatalf("class %v in doubt %v, want %v %v: %v", ce.Class, ce.InDoubt, tc.class, tc.inDoubt, ce)
			}
			if got := len(srv.Messages()); got != tc.queued {
				t.Fatalf("server kept %d messages, want %d", got, tc.queued)
			}
			if !tc.inDoubt {
				return
			}
			// The retry carries the same Message-ID on a fresh connection.
			srv.SetDelay(0)
			if _, err := s.Send(t.Context(), m); err != nil {
				t.Fatalf("retry: %v", err)
			}
			got := srv.WaitFor(t, tc.queued+1, 5*time.Second)
			for _, g := range got {
				if g.MessageID != m.MessageID {
					t.Fatalf("Message-ID %q, want %q on every copy", g.MessageID, m.MessageID)
				}
			}
		})
	}
}

// TestSessionRefusalIsConfiguration: a relay that refuses our session (EHLO/HELO, MAIL FROM)
// refuses every message alike: that is a configuration problem to retry and alert on, not a bad
// recipient. A refusal of one recipient stays that recipient's permanent failure.
func TestSessionRefusalIsConfiguration(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(srv *emailtest.Server)
		code  int
		class channels.Class
		alert bool
	}{
		{"EHLO and HELO refused", func(srv *emailtest.Server) {
			srv.RefuseHello(emailtest.Reply(504, "5.5.2", "Helo command rejected: need fully-qualified hostname"))
		}, 504, channels.Temporary, true},
		{"MAIL FROM refused", func(srv *emailtest.Server) {
			srv.RefuseMail(emailtest.Reply(553, "5.7.1", "Sender address rejected: not owned by user"))
		}, 553, channels.Temporary, true},
		{"MAIL FROM deferred", func(srv *emailtest.Server) {
			srv.RefuseMail(emailtest.Reply(451, "4.3.0", "try later"))
		}, 451, channels.Temporary, false},
		{"one recipient refused 5.7.1", func(srv *emailtest.Server) {
			srv.RefuseRcpt(emailtest.Reply(550, "5.7.1", "Recipient address rejected: Access denied"), "b@example.net")
		}, 550, channels.Permanent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := emailtest.Start(t)
			s := newSender(t, srv.URL(), 1)
			tc.setup(srv)
			ce := classified(t, sendWithin(t, s, msg("r"), 5*time.Second, 10*time.Second))
			if ce.Code != tc.code || ce.Class != tc.class || ce.ConfigAlert != tc.alert || ce.InDoubt {
				t.Fatalf("code %d class %v alert %v in doubt %v; want %d %v %v false: %v", ce.Code, ce.Class, ce.ConfigAlert, ce.InDoubt,
					tc.code, tc.class, tc.alert, ce)
			}
		})
	}
}

func to(addr string) channels.Message {
	m := msg(strings.ReplaceAll(addr, "@", ".at."))
	m.To = addr
	return m
}

// TestRcptBreaker: the same 5.5.x refusal of RCPT for recipients in several domains in a row is
// our session being refused (a short HELO name with Postfix's reject_non_fqdn_helo_hostname
// answers 504 5.5.2 at RCPT time), until a message goes through again.
func TestRcptBreaker(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	s := newSender(t, srv.URL(), 1)
	helo := emailtest.Reply(504, "5.5.2", "<vm>: Helo command rejected: need fully-qualified hostname")
	type want struct {
		class channels.Class
		alert bool
	}
	temporary, alert, permanent := want{channels.Temporary, false}, want{channels.Temporary, true}, want{channels.Permanent, false}
	step := func(rcpt string, w *want) {
		t.Helper()
		_, err := s.Send(t.Context(), to(rcpt))
		if w == nil {
			if err != nil {
				t.Fatalf("%s: %v", rcpt, err)
			}
			return
		}
		ce := classified(t, err)
		if ce.Class != w.class || ce.ConfigAlert != w.alert {
			t.Fatalf("%s: class %v alert %v, want %v %v: %v", rcpt, ce.Class, ce.ConfigAlert, w.class, w.alert, ce)
		}
	}

	// Before anything went through, a 5.5.x refusal is not yet known to be the recipient's fault.
	srv.RefuseRcpt(helo)
	step("a@one.test", &temporary)
	step("b@two.test", &temporary)
	step("c@three.test", &alert) // three domains in a row: the breaker opens
	step("a@one.test", &alert)   // and stays open
	srv.RefuseRcpt(nil)
	step("d@four.test", nil) // a success closes it

	// Once the session is known to work, one recipient's refusal is that recipient's.
	srv.RefuseRcpt(helo, "x@five.test")
	step("x@five.test", &permanent)
	srv.RefuseRcpt(emailtest.Reply(550, "5.7.1", "Access denied"), "y@six.test")
	step("y@six.test", &permanent) // a different reply breaks the streak
	srv.RefuseRcpt(helo)
	step("u1@same.test", &permanent)
	step("u2@same.test", &permanent)
	step("u3@same.test", &permanent) // one domain, however often, is not a pattern
	step("p@a1.test", &permanent)
	step("q@a2.test", &alert) // same.test, a1.test, a2.test
	srv.RefuseRcpt(nil)
	step("ok@a3.test", nil)
	srv.RefuseRcpt(helo, "z@seven.test")
	step("z@seven.test", &permanent)
}

// TestHELO: the name given in EHLO is fully qualified by default: the URL's helo= wins, then
// Config.HELO (the worker passes the Message-ID domain).
func TestHELO(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	for _, tc := range []struct {
		url, helo, want string
	}{
		{srv.URL(), "mail.example.com", "mail.example.com"},
		{srv.URL() + "&helo=relay-client.example.org", "mail.example.com", "relay-client.example.org"},
	} {
		s, err := email.New(email.Config{URL: tc.url, PoolSize: 1, SendTimeout: 5 * time.Second, HELO: tc.helo})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Send(t.Context(), msg(tc.want)); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		helos := srv.Helos()
		if got := helos[len(helos)-1]; got != tc.want {
			t.Errorf("EHLO %q, want %q", got, tc.want)
		}
	}
	s, err := email.New(email.Config{URL: srv.URL(), PoolSize: 1, SendTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if _, err := s.Send(t.Context(), msg("default")); err != nil {
		t.Fatal(err)
	}
	helos := srv.Helos()
	if got := helos[len(helos)-1]; !strings.Contains(got, ".") {
		t.Errorf("default EHLO %q is not fully qualified", got)
	}
	for _, bad := range []email.Config{
		{URL: srv.URL() + "&helo=" + "two%20words"},
		{URL: srv.URL(), HELO: "bad\r\nname"},
	} {
		if _, err := email.New(bad); err == nil {
			t.Errorf("HELO of %+v accepted", bad)
		}
	}
}

// TestPrivateCA: a relay whose certificate comes from a private CA is a configuration alert
// that names the fix; with ca= (or Config.CAFile) the mail goes through, verified.
func TestPrivateCA(t *testing.T) {
	t.Parallel()
	ca := emailtest.NewCA(t)
	srv := emailtest.Start(t, emailtest.WithSTARTTLS(ca.ServerTLS(t)))
	base := "smtp://" + srv.Addr + "?tls=starttls"

	s := newSender(t, base, 1)
	ce := classified(t, sendWithin(t, s, msg("untrusted"), 5*time.Second, 10*time.Second))
	if ce.Class != channels.Temporary || !ce.ConfigAlert {
		t.Fatalf("untrusted certificate: class %v alert %v, want temporary and a configuration alert: %v", ce.Class, ce.ConfigAlert, ce)
	}
	for _, fix := range []string{"ca=", "HERALD_SMTP_CA_FILE", "SSL_CERT_FILE"} {
		if !strings.Contains(ce.Error(), fix) {
			t.Errorf("the error does not name the fix %q: %v", fix, ce)
		}
	}

	file := ca.File(t)
	viaURL := newSender(t, base+"&ca="+file, 1)
	if _, err := viaURL.Send(t.Context(), msg("via-url")); err != nil {
		t.Fatalf("ca= in the URL: %v", err)
	}
	viaConfig, err := email.New(email.Config{URL: base, PoolSize: 1, SendTimeout: 5 * time.Second, CAFile: file})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = viaConfig.Close() }()
	if _, err := viaConfig.Send(t.Context(), msg("via-config")); err != nil {
		t.Fatalf("Config.CAFile: %v", err)
	}
	srv.WaitFor(t, 2, 5*time.Second)
}

// TestImplicitTLS: smtps:// through the bounded dialer still verifies the certificate and
// authenticates (autodiscover picks PLAIN over TLS).
func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	ca := emailtest.NewCA(t)
	srv := emailtest.Start(t, emailtest.WithImplicitTLS(ca.ServerTLS(t)))
	srv.RequireAuth("herald", "s3cret-pass")
	s := newSender(t, "smtps://herald:s3cret-pass@"+srv.Addr+"?ca="+ca.File(t), 1)
	if _, err := s.Send(t.Context(), msg("smtps")); err != nil {
		t.Fatalf("smtps with auth: %v", err)
	}
	srv.WaitFor(t, 1, 5*time.Second)

	untrusted := newSender(t, "smtps://herald:s3cret-pass@"+srv.Addr, 1)
	ce := classified(t, sendWithin(t, untrusted, msg("x"), 5*time.Second, 10*time.Second))
	if !ce.ConfigAlert || strings.Contains(ce.Error(), "s3cret-pass") {
		t.Fatalf("untrusted smtps: %v", ce)
	}
}

// TestBadCAFile: a CA file that is missing or holds no certificate stops the start, naming it.
func TestBadCAFile(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	notPEM := emailtest.NewCA(t).File(t) + ".bad"
	writeFile(t, notPEM, "not a certificate")
	for _, tc := range []struct {
		cfg  email.Config
		want string // the error names the file or the setting
	}{
		{email.Config{URL: "smtp://" + srv.Addr + "?ca=/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		{email.Config{URL: "smtp://" + srv.Addr, CAFile: "/nonexistent/ca.pem"}, "HERALD_SMTP_CA_FILE"},
		{email.Config{URL: "smtp://" + srv.Addr, CAFile: notPEM}, notPEM},
		{email.Config{URL: srv.URL() + "&ca=" + notPEM}, "tls=none"}, // nothing to verify
		{email.Config{URL: srv.URL(), CAFile: notPEM}, "tls=none"},
	} {
		s, err := email.New(tc.cfg)
		if err == nil {
			_ = s.Close()
			t.Errorf("%+v: accepted", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error does not say %q: %v", tc.cfg, tc.want, err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
