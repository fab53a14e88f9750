// Package emailtest is an in-process SMTP server (emersion/go-smtp) for Herald's tests: it
// records messages, decodes their parts, counts connections, and can answer with scripted
// failures or require authentication.
package emailtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is a received message.
type Message struct {
	From      string
	To        []string
	Raw       []byte
	Subject   string
	MessageID string
	Header    mail.Header
	Text      string
	HTML      string
	Multipart string // the top-level content type, e.g. multipart/alternative
}

// Server is a recording SMTP server.
type Server struct {
	Addr string

	mu       sync.Mutex
	msgs     []Message
	conns    int
	failures []*smtp.SMTPError // answered to DATA, in order, before accepting
	delay    time.Duration     // before answering DATA
	inData   chan struct{}     // closed when a DATA command starts waiting out the delay
	release  chan struct{}     // closed by the next SetDelay: waiting DATA commands give up
	user     string
	pass     string
	changed  chan struct{}
	srv      *smtp.Server
}

// Start starts a server on a loopback port, stopped at the end of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{changed: make(chan struct{})}
	srv := smtp.NewServer(s)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxRecipients = 10
	srv.EnableSMTPUTF8 = true
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	s.srv = srv
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = l.Close() // Close misses a listener that Serve has not registered yet
		<-served
	})
	return s
}

// URL is the HERALD_SMTP_URL for this server (plain text, no auth).
func (s *Server) URL() string { return "smtp://" + s.Addr + "?tls=none" }

// RequireAuth makes the server demand AUTH PLAIN with these credentials.
func (s *Server) RequireAuth(user, pass string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user, s.pass = user, pass
}

// FailNext makes the next DATA commands fail with these replies, in order.
func (s *Server) FailNext(errs ...*smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, errs...)
}

// SetDelay makes the server wait d before answering each DATA command (a slow relay), and
// returns a channel closed when the first delayed DATA begins.
//
// A DATA command still waiting when SetDelay is called again is answered 421 and its message
// dropped, as a relay that gave up would.
func (s *Server) SetDelay(d time.Duration) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.release != nil {
		close(s.release)
	}
	s.delay = d
	s.inData = make(chan struct{})
	s.release = make(chan struct{})
	return s.inData
}

// Reply builds an SMTP error reply such as Reply(451, "4.3.0", "try later").
func Reply(code int, enhanced, msg string) *smtp.SMTPError {
	var ec smtp.EnhancedCode
	if enhanced != "" {
		_, _ = fmt.Sscanf(enhanced, "%d.%d.%d", &ec[0], &ec[1], &ec[2])
	} else {
		ec = smtp.NoEnhancedCode
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// Messages returns what was received so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Connections returns how many SMTP sessions were opened.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// WaitFor waits until at least n messages arrived, failing the test after timeout.
func (s *Server) WaitFor(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		msgs, ch := append([]Message(nil), s.msgs...), s.changed
		s.mu.Unlock()
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("emailtest: %d message(s) after %v, want %d", len(msgs), timeout, n)
		}
	}
}

// NewSession implements smtp.Backend.
func (s *Server) NewSession(*smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.conns++
	needAuth := s.user != ""
	s.mu.Unlock()
	return &session{s: s, needAuth: needAuth}, nil
}

type session struct {
	s        *Server
	needAuth bool
	authed   bool
	from     string
	to       []string
}

func (ss *session) AuthMechanisms() []string {
	if !ss.needAuth {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		ss.s.mu.Lock()
		ok := user == ss.s.user && pass == ss.s.pass
		ss.s.mu.Unlock()
		if !ok {
			return Reply(535, "5.7.8", "authentication credentials invalid")
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.needAuth && !ss.authed {
		return Reply(530, "5.7.0", "authentication required")
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	delay, started, release := ss.s.delay, ss.s.inData, ss.s.release
	if started != nil && delay > 0 {
		select {
		case <-started:
		default:
			close(started)
		}
	}
	ss.s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-release:
			return Reply(421, "4.3.2", "giving up on this message")
		}
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if len(ss.s.failures) > 0 {
		f := ss.s.failures[0]
		ss.s.failures = ss.s.failures[1:]
		return f
	}
	m, err := parse(raw)
	if err != nil {
		return Reply(554, "5.6.0", "unparseable message: "+err.Error())
	}
	m.From, m.To = ss.from, append([]string(nil), ss.to...)
	ss.s.msgs = append(ss.s.msgs, m)
	close(ss.s.changed)
	ss.s.changed = make(chan struct{})
	return nil
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }

func parse(raw []byte) (Message, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Message{}, err
	}
	dec := new(mime.WordDecoder)
	subject, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
	m := Message{Raw: raw, Header: msg.Header, Subject: subject, MessageID: msg.Header.Get("Message-Id")}
	ct, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		return Message{}, err
	}
	if !strings.HasPrefix(ct, "multipart/") {
		body, err := decode(msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
		if err != nil {
			return Message{}, err
		}
		if ct == "text/html" {
			m.HTML = body
		} else {
			m.Text = body
		}
		return m, nil
	}
	m.Multipart = ct
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Message{}, err
		}
		body, err := decode(p.Header.Get("Content-Transfer-Encoding"), p)
		if err != nil {
			return Message{}, err
		}
		pct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch pct {
		case "text/plain":
			m.Text = body
		case "text/html":
			m.HTML = body
		}
	}
	return m, nil
}

func decode(cte string, r io.Reader) (string, error) {
	if strings.EqualFold(cte, "quoted-printable") {
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	return string(b), err
}
