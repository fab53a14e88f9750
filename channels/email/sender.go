package email

import (
	"context"
	"errors"
	"fmt"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/channels"
)

// Sender sends email over a pool of reused SMTP connections.
type Sender struct {
	ep      Endpoint
	helo    string
	timeout time.Duration
	slots   chan *slot
	breaker sessionBreaker
}

var _ channels.Sender = (*Sender)(nil)

// New validates cfg and returns a Sender. It dials nothing until the first send; a CA file that
// is missing or holds no certificate is an error here, at start-up.
func New(cfg Config) (*Sender, error) {
	cfg = cfg.withDefaults()
	ep, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	name, err := helo(ep, cfg.HELO)
	if err != nil {
		return nil, err
	}
	tc, err := tlsConfig(cfg, ep)
	if err != nil {
		return nil, err
	}
	// go-mail's own timeout still applies per step; the attempt's context bounds all of them.
	opts := []gomail.Option{gomail.WithPort(ep.Port), gomail.WithTimeout(cfg.SendTimeout), gomail.WithHELO(name),
		gomail.WithTLSConfig(tc)}
	implicitTLS := ep.TLS == "tls"
	switch ep.TLS {
	case "tls", "none": // implicit TLS is the dialer's job: go-mail sees an established connection
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case "opportunistic":
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	s := &Sender{ep: ep, helo: name, timeout: cfg.SendTimeout, slots: make(chan *slot, cfg.PoolSize)}
	for range cfg.PoolSize {
		sl := &slot{}
		slotOpts := append([]gomail.Option(nil), opts...)
		dialTLS := tc
		if !implicitTLS {
			dialTLS = nil
		}
		slotOpts = append(slotOpts, gomail.WithDialContextFunc(sl.dialer(dialTLS)))
		if ep.Username != "" {
			var at gomail.SMTPAuthType
			_ = at.UnmarshalString(ep.Auth)
			if implicitTLS && at == gomail.SMTPAuthAutoDiscover {
				slotOpts = append(slotOpts, gomail.WithSMTPAuthCustom(&tlsAutoAuth{user: ep.Username, pass: ep.Password, host: ep.Host}))
			} else {
				slotOpts = append(slotOpts, gomail.WithSMTPAuth(at), gomail.WithUsername(ep.Username), gomail.WithPassword(ep.Password))
			}
		}
		if sl.c, err = gomail.NewClient(ep.Host, slotOpts...); err != nil {
			return nil, fmt.Errorf("smtp client for %s: %w", ep, err)
		}
		s.slots <- sl
	}
	return s, nil
}

// Endpoint returns the parsed endpoint (its String hides the password).
func (s *Sender) Endpoint() Endpoint { return s.ep }

// HELO returns the name the Sender gives in EHLO/HELO.
func (s *Sender) HELO() string { return s.helo }

// Send delivers m. A nil error means the server accepted the message.
//
// One call is one attempt, bounded as a whole by SendTimeout or ctx's deadline, whichever comes
// first (after waiting for a free connection): dial, TLS, authentication, the message, and the
// one redial of a pooled connection the server closed. A canceled ctx closes the connection.
// Failures are *channels.Error; see Classify and sessionBreaker for the classes.
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
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	end := sl.begin(ctx)
	defer func() {
		if end() {
			s.drop(sl) // the context closed the connection
		}
	}()

	for try := 0; ; try++ {
		if !sl.connected {
			if err := sl.c.DialWithContext(ctx); err != nil {
				s.drop(sl)
				ce := classifySession(ended(ctx, err), s.helo)
				ce.Err = fmt.Errorf("connect to %s: %w", s.ep, ce.Err)
				return channels.Result{}, ce
			}
			sl.connected = true
		}
		err := sl.c.Send(msg)
		if msg.IsDelivered() {
			s.breaker.delivered()
			if err != nil { // e.g. RSET after DATA failed: delivered, but the connection is suspect
				s.drop(sl)
			}
			return channels.Result{ProviderResponse: msg.ServerResponse()}, nil
		}
		if err == nil {
			return channels.Result{}, &channels.Error{Class: channels.Temporary, Err: errors.New("server did not confirm delivery")}
		}
		var se *gomail.SendError
		if errors.As(err, &se) && se.Reason == gomail.ErrConnCheck && try == 0 {
			// The pooled connection went stale (server idle timeout). Nothing was sent: redial
			// once, within the same bound.
			s.drop(sl)
			continue
		}
		ce := Classify(ended(ctx, err))
		switch {
		case ce.InDoubt && sl.lastWriteFailed():
			// The final "." never fully left: the server cannot have taken the message.
			ce.InDoubt = false
		case se != nil && se.Reason == gomail.ErrSMTPRcptTo:
			s.rcptRefused(ce, m.To)
		}
		if ce.Code == 0 || ce.ConfigAlert {
			s.drop(sl) // no reply: the connection is gone or unusable
		}
		return channels.Result{}, ce
	}
}

// rcptRefused applies the session breaker to a refusal of RCPT.
func (s *Sender) rcptRefused(ce *channels.Error, rcpt string) {
	if ce.Code == 0 {
		return // not a refusal: the connection failed
	}
	switch s.breaker.rcptRefused(ce.Code, ce.Enhanced, rcpt) {
	case sessionRefused:
		ce.Class, ce.ConfigAlert = channels.Temporary, true
		ce.Err = fmt.Errorf("the relay gives the same %d %s to recipients in %d or more different domains in a row: it refuses our session, not the recipients; if it names the EHLO name %q, set helo=<this host's fully-qualified name> in HERALD_SMTP_URL: %w",
			ce.Code, ce.Enhanced, breakerDomains, s.helo, ce.Err)
	case undecided:
		ce.Class = channels.Temporary
		ce.Err = fmt.Errorf("%w (retried: no message has gone through this relay yet, so a %s refusal may be the relay refusing our session rather than this recipient)", ce.Err, ce.Enhanced)
	}
}

// ended adds to err that the attempt's context ended, if it did: the reason a read failed.
func ended(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("%w (attempt ended: %w)", err, context.Cause(ctx))
}

func (s *Sender) drop(sl *slot) {
	_ = sl.c.Close() // QUIT, bounded by the attempt; fails at once on a dead connection
	sl.closeConn()
	sl.connected = false
}

// Close closes every pooled connection, sending QUIT where it can within a few seconds.
// Concurrent sends finish first.
func (s *Sender) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for range cap(s.slots) {
		sl := <-s.slots
		end := sl.begin(ctx)
		if sl.connected {
			s.drop(sl)
		}
		end()
		sl.closeConn()
	}
	return nil
}
