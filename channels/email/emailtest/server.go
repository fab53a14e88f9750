// Package emailtest is an in-process SMTP server (emersion/go-smtp) for Herald's tests: it
// records messages, decodes their parts, counts connections, and can answer with scripted
// failures, require authentication, speak TLS with a certificate from a test CA, refuse the
// session at each step, stall at each step, or drop the connection after the final ".".
//
// Every stall ends when the test ends, so a stalled server never leaks a goroutine.
package emailtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is a received message.
type Message struct {
	Helo      string // the name the client gave in EHLO/HELO
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

	stop chan struct{} // closed when the test ends: every stall gives up

	mu          sync.Mutex
	msgs        []Message
	conns       int
	open        map[*conn]struct{}
	failures    []*smtp.SMTPError // answered to DATA, in order, before accepting
	delay       time.Duration     // before answering DATA
	inData      chan struct{}     // closed when a DATA command starts waiting out the delay
	release     chan struct{}     // closed by the next SetDelay: waiting DATA commands give up
	greetStall  time.Duration
	helloStall  time.Duration
	dropAfter   int // the next DATA commands that drop the connection instead of replying
	refuseHello *smtp.SMTPError
	refuseMail  *smtp.SMTPError
	refuseRcpt  *smtp.SMTPError
	refuseTo    []string // the recipients refuseRcpt applies to; empty: all
	helos       []string
	user        string
	pass        string
	changed     chan struct{}
	srv         *smtp.Server
}

// Option configures a Server at Start.
type Option func(*options)

type options struct {
	starttls *tls.Config
	implicit *tls.Config
}

// WithSTARTTLS makes the server offer STARTTLS with this configuration (see CA.ServerTLS).
func WithSTARTTLS(cfg *tls.Config) Option { return func(o *options) { o.starttls = cfg } }

// WithImplicitTLS makes the server speak TLS from the first byte (smtps://).
func WithImplicitTLS(cfg *tls.Config) Option { return func(o *options) { o.implicit = cfg } }

// Start starts a server on a loopback port, stopped at the end of the test.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s := &Server{changed: make(chan struct{}), stop: make(chan struct{}), open: map[*conn]struct{}{}}
	srv := smtp.NewServer(s)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxRecipients = 10
	srv.EnableSMTPUTF8 = true
	srv.TLSConfig = o.starttls
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	s.srv = srv
	var ln net.Listener = &listener{Listener: l, s: s}
	if o.implicit != nil {
		ln = tls.NewListener(ln, o.implicit)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		close(s.stop)
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

// SetDelay makes the server wait d before answering each DATA command (a slow relay, or with a
// long d one that never answers after the final "."), and returns a channel closed when the
// first delayed DATA begins.
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

// StallGreeting makes the server wait d before it greets each new connection (0: greet at once).
func (s *Server) StallGreeting(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.greetStall = d
}

// StallHello makes the server wait d before it answers EHLO/HELO (0: answer at once).
func (s *Server) StallHello(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.helloStall = d
}

// DropAfterData makes the next n DATA commands read the whole message, up to and including the
// final ".", keep it (as a relay that queued it would) and close the connection without a reply:
// the client cannot know whether the message was accepted.
func (s *Server) DropAfterData(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropAfter = n
}

// RefuseHello makes the server answer EHLO and HELO with r (nil: accept them again).
func (s *Server) RefuseHello(r *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseHello = r
}

// RefuseMail makes the server answer MAIL FROM with r (nil: accept it again).
func (s *Server) RefuseMail(r *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseMail = r
}

// RefuseRcpt makes the server answer RCPT TO with r for these recipients, or for every recipient
// when none is named (nil: accept them again).
func (s *Server) RefuseRcpt(r *smtp.SMTPError, recipients ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseRcpt, s.refuseTo = r, recipients
}

// CloseConnections closes every open client connection, as a relay's idle timeout would: a
// client holding one finds it dead on its next command.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		_ = c.Conn.Close()
	}
}

// Helos returns the names clients gave in EHLO/HELO, in order (refused ones included).
func (s *Server) Helos() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.helos)
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

// Connections returns how many connections were accepted.
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

// wait waits d, or less if the test ends; it reports whether the whole d passed.
func (s *Server) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-s.stop:
		return false
	}
}

// NewSession implements smtp.Backend. go-smtp calls it on EHLO/HELO: its error is the reply.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.helos = append(s.helos, c.Hostname())
	stall, refuse, needAuth := s.helloStall, s.refuseHello, s.user != ""
	s.mu.Unlock()
	if stall > 0 && !s.wait(stall) {
		return nil, Reply(421, "4.3.2", "shutting down")
	}
	if refuse != nil {
		return nil, refuse
	}
	return &session{s: s, c: c, needAuth: needAuth, helo: c.Hostname()}, nil
}

// listener counts and tracks accepted connections, and stalls their greeting on request.
type listener struct {
	net.Listener
	s *Server
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.s.conns++
	tc := &conn{Conn: c, s: l.s, stall: l.s.greetStall}
	l.s.open[tc] = struct{}{}
	return tc, nil
}

type conn struct {
	net.Conn
	s       *Server
	stall   time.Duration
	greeted sync.Once
}

// Write holds the first write (the greeting, or the TLS handshake) for the greeting stall.
func (c *conn) Write(p []byte) (int, error) {
	stalled := false
	c.greeted.Do(func() { stalled = c.stall > 0 && !c.s.wait(c.stall) })
	if stalled {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	c.s.mu.Lock()
	delete(c.s.open, c)
	c.s.mu.Unlock()
	return c.Conn.Close()
}

type session struct {
	s        *Server
	c        *smtp.Conn
	helo     string
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
	ss.s.mu.Lock()
	refuse := ss.s.refuseMail
	ss.s.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.s.mu.Lock()
	refuse := ss.s.refuseRcpt
	if refuse != nil && len(ss.s.refuseTo) > 0 && !slices.Contains(ss.s.refuseTo, to) {
		refuse = nil
	}
	ss.s.mu.Unlock()
	if refuse != nil {
		return refuse
	}
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
	drop := ss.s.dropAfter > 0
	if drop {
		ss.s.dropAfter--
	}
	ss.s.mu.Unlock()
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-release:
			return Reply(421, "4.3.2", "giving up on this message")
		case <-ss.s.stop:
			return Reply(421, "4.3.2", "shutting down")
		}
	}
	if err := ss.keep(raw, drop); err != nil {
		return err
	}
	if drop {
		_ = ss.c.Conn().Close() // queued, but the reply is never sent
		return errors.New("connection dropped after the final \".\"")
	}
	return nil
}

// keep records a received message, or answers with the next scripted failure.
func (ss *session) keep(raw []byte, drop bool) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if len(ss.s.failures) > 0 && !drop {
		f := ss.s.failures[0]
		ss.s.failures = ss.s.failures[1:]
		return f
	}
	m, err := parse(raw)
	if err != nil {
		return Reply(554, "5.6.0", "unparseable message: "+err.Error())
	}
	m.Helo, m.From, m.To = ss.helo, ss.from, append([]string(nil), ss.to...)
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
