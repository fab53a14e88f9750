package email

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/channels"
)

// Config configures a Sender.
type Config struct {
	// URL is the SMTP endpoint, smtp://user:pass@host:587?tls=starttls. Required.
	URL string
	// PoolSize is how many connections are kept, one per concurrent send. Defaults to 10.
	PoolSize int
	// SendTimeout bounds one dial + send. Defaults to 30s.
	SendTimeout time.Duration
	// TLSConfig overrides the TLS settings (for example a private CA). Optional.
	TLSConfig *tls.Config
}

// Sender sends email over a pool of reused SMTP connections.
type Sender struct {
	ep    Endpoint
	opts  []mail.Option
	slots chan *slot
}

var _ channels.Sender = (*Sender)(nil)

type slot struct {
	c         *mail.Client
	connected bool
}

// New validates cfg and returns a Sender. It dials nothing until the first send.
func New(cfg Config) (*Sender, error) {
	ep, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	size := cfg.PoolSize
	if size <= 0 {
		size = 10
	}
	timeout := cfg.SendTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	opts := []mail.Option{mail.WithPort(ep.Port), mail.WithTimeout(timeout)}
	switch ep.TLS {
	case "tls":
		opts = append(opts, mail.WithSSL())
	case "none":
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	case "opportunistic":
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	default:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	}
	if cfg.TLSConfig != nil {
		opts = append(opts, mail.WithTLSConfig(cfg.TLSConfig))
	}
	if ep.HELO != "" {
		opts = append(opts, mail.WithHELO(ep.HELO))
	}
	if ep.Username != "" {
		var at mail.SMTPAuthType
		_ = at.UnmarshalString(ep.Auth)
		opts = append(opts, mail.WithSMTPAuth(at), mail.WithUsername(ep.Username), mail.WithPassword(ep.Password))
	}
	s := &Sender{ep: ep, opts: opts, slots: make(chan *slot, size)}
	for range size {
		c, err := mail.NewClient(ep.Host, opts...)
		if err != nil {
			return nil, fmt.Errorf("smtp client for %s: %w", ep, err)
		}
		s.slots <- &slot{c: c}
	}
	return s, nil
}

// Endpoint returns the parsed endpoint (its String hides the password).
func (s *Sender) Endpoint() Endpoint { return s.ep }

// Send delivers m. A nil error means the server accepted the message.
func (s *Sender) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	msg, err := build(m)
	if err != nil {
		return channels.Result{}, &channels.Error{Class: channels.Permanent, Err: err}
	}
	var sl *slot
	select {
	case sl = <-s.slots:
	case <-ctx.Done():
		return channels.Result{}, &channels.Error{Class: channels.Temporary, Err: ctx.Err()}
	}
	defer func() { s.slots <- sl }()

	for try := 0; ; try++ {
		if !sl.connected {
			if err := sl.c.DialWithContext(ctx); err != nil {
				return channels.Result{}, Classify(fmt.Errorf("connect to %s: %w", s.ep, err))
			}
			sl.connected = true
		}
		err := sl.c.Send(msg)
		if msg.IsDelivered() {
			if err != nil { // e.g. RSET after DATA failed: delivered, but the connection is suspect
				s.drop(sl)
			}
			return channels.Result{ProviderResponse: msg.ServerResponse()}, nil
		}
		if err == nil {
			return channels.Result{}, &channels.Error{Class: channels.Temporary, Err: errors.New("server did not confirm delivery")}
		}
		var se *mail.SendError
		if errors.As(err, &se) && se.Reason == mail.ErrConnCheck && try == 0 {
			// The pooled connection went stale (server idle timeout). Nothing was sent: redial once.
			s.drop(sl)
			continue
		}
		ce := Classify(err)
		if ce.Code == 0 || ce.ConfigAlert {
			s.drop(sl) // no reply: the connection is gone or unusable
		}
		return channels.Result{}, ce
	}
}

func (s *Sender) drop(sl *slot) {
	_ = sl.c.Close()
	sl.connected = false
}

// Close closes every pooled connection. Concurrent sends finish first.
func (s *Sender) Close() error {
	for range cap(s.slots) {
		sl := <-s.slots
		if sl.connected {
			_ = sl.c.Close()
		}
	}
	return nil
}

func build(m channels.Message) (*mail.Msg, error) {
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := msg.FromFormat(m.FromName, m.From); err != nil {
		return nil, fmt.Errorf("from address: %w", err)
	}
	if err := msg.AddToFormat(m.ToName, m.To); err != nil {
		return nil, fmt.Errorf("to address: %w", err)
	}
	msg.Subject(m.Subject)
	if id := strings.Trim(m.MessageID, "<>"); id != "" {
		msg.SetMessageIDWithValue(id)
	}
	msg.SetGenHeader(mail.HeaderXMailer, "Herald")
	for k, v := range m.Headers {
		if strings.ContainsAny(k, "\r\n:") {
			return nil, fmt.Errorf("header name %q is not valid", k)
		}
		msg.SetGenHeader(mail.Header(k), v) // values are Q-encoded if they contain CR/LF
	}
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	case m.HTML != "":
		msg.SetBodyString(mail.TypeTextHTML, m.HTML)
	default:
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
	}
	return msg, nil
}
