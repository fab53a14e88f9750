package email

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// go-mail v0.8.1 applies a context to the TCP dial only: it then sets a fresh full timeout before
// the greeting, before each message and around the handshake, so one attempt with a redial could
// last about three timeouts. The slot's dialer hands go-mail a boundConn instead, whose
// deadlines never pass the deadline of the attempt using it, and which is closed when the
// attempt's context is done: every step of an attempt, the redial included, shares one bound.

// boundConn is a connection whose deadlines are clamped to a limit.
type boundConn struct {
	net.Conn

	mu       sync.Mutex
	limit    time.Time // zero: no limit
	writeErr bool      // a write failed since the last bind: what was being written may not have left
}

func (c *boundConn) clamp(t time.Time) time.Time {
	if !c.limit.IsZero() && (t.IsZero() || t.After(c.limit)) {
		return c.limit
	}
	return t
}

func (c *boundConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetDeadline(c.clamp(t))
}

func (c *boundConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.clamp(t))
}

func (c *boundConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

func (c *boundConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.mu.Lock()
		c.writeErr = true
		c.mu.Unlock()
	}
	return n, err
}

// bind starts an attempt bounded by limit (zero: none) and applies the limit at once, so even a
// step go-mail starts without setting a deadline (its NOOP on a pooled connection) is bounded.
func (c *boundConn) bind(limit time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.limit, c.writeErr = limit, false
	if !limit.IsZero() {
		_ = c.Conn.SetDeadline(limit)
	}
}

func (c *boundConn) writeFailed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeErr
}

// slot is one pooled connection. The goroutine holding the slot owns c and connected; the
// fields under mu are shared with the dialer and with the attempt context's AfterFunc.
type slot struct {
	c         *gomail.Client
	connected bool

	mu    sync.Mutex
	conn  *boundConn // the newest connection the dialer made
	limit time.Time  // the deadline of the attempt in progress
	ended bool       // the attempt's context is done: connections are closed, new ones refused
}

// begin binds the slot to one attempt: its connections' deadlines are clamped to ctx's deadline
// and they are closed when ctx is done. end unbinds it and reports whether ctx interrupted the
// attempt (the connection is closed then, and must be dropped).
func (sl *slot) begin(ctx context.Context) (end func() (interrupted bool)) {
	limit, _ := ctx.Deadline()
	sl.mu.Lock()
	sl.limit, sl.ended = limit, false
	if sl.conn != nil {
		sl.conn.bind(limit)
	}
	sl.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		sl.mu.Lock()
		defer sl.mu.Unlock()
		sl.ended = true
		if sl.conn != nil {
			_ = sl.conn.Close()
		}
	})
	return func() bool {
		interrupted := !stop()
		sl.mu.Lock()
		defer sl.mu.Unlock()
		sl.limit, sl.ended = time.Time{}, false
		if sl.conn != nil {
			sl.conn.bind(time.Time{})
		}
		return interrupted
	}
}

// lastWriteFailed reports whether a write on the current connection failed in this attempt.
func (sl *slot) lastWriteFailed() bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.conn != nil && sl.conn.writeFailed()
}

// closeConn closes the current connection (go-mail leaves a connection open when the handshake
// after the dial fails, and its QUIT may fail on a broken one).
func (sl *slot) closeConn() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.conn != nil {
		_ = sl.conn.Close()
		sl.conn = nil
	}
}

// errAttemptEnded refuses a connection dialed after the attempt's context was done.
var errAttemptEnded = errors.New("smtp: the delivery attempt has ended (its deadline passed or it was canceled)")

// dialer is the slot's go-mail DialContextFunc. With implicit TLS (tlsConfig non-nil) it also
// runs the handshake, over the bounded connection.
func (sl *slot) dialer(tlsConfig *tls.Config) gomail.DialContextFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		bc := &boundConn{Conn: raw}
		sl.mu.Lock()
		if sl.conn != nil {
			_ = sl.conn.Close() // the connection this one replaces
		}
		sl.conn = bc
		bc.bind(sl.limit)
		ended := sl.ended
		sl.mu.Unlock()
		if ended {
			_ = bc.Close()
			// Never (nil, nil): go-mail would use the nil connection. The attempt's context is
			// done, but the context go-mail dials with need not be that one.
			return nil, cmp.Or(context.Cause(ctx), errAttemptEnded)
		}
		if tlsConfig == nil {
			return bc, nil
		}
		tc := tls.Client(bc, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = bc.Close()
			return nil, err
		}
		return tc, nil
	}
}

// tlsAutoAuth discovers the authentication mechanism on a connection the dialer encrypted
// (implicit TLS). go-mail cannot tell that such a connection is encrypted, so its own discovery
// would never pick PLAIN or LOGIN; this one picks the strongest mechanism the server offers.
type tlsAutoAuth struct {
	user, pass, host string
	chosen           smtp.Auth
}

var errNoAuthMechanism = errors.New("the server offers no authentication mechanism Herald supports (SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN): set auth= in HERALD_SMTP_URL")

func (a *tlsAutoAuth) Start(si *smtp.ServerInfo) (string, []byte, error) {
	for _, mech := range []struct {
		name string
		auth func() smtp.Auth
	}{
		{"SCRAM-SHA-256", func() smtp.Auth { return smtp.ScramSHA256Auth(a.user, a.pass) }},
		{"SCRAM-SHA-1", func() smtp.Auth { return smtp.ScramSHA1Auth(a.user, a.pass) }},
		{"CRAM-MD5", func() smtp.Auth { return smtp.CRAMMD5Auth(a.user, a.pass) }},
		{"PLAIN", func() smtp.Auth { return smtp.PlainAuth("", a.user, a.pass, a.host, false) }},
		{"LOGIN", func() smtp.Auth { return smtp.LoginAuth(a.user, a.pass, a.host, false) }},
	} {
		if slices.Contains(si.Auth, mech.name) {
			a.chosen = mech.auth()
			return a.chosen.Start(si)
		}
	}
	return "", nil, errNoAuthMechanism
}

func (a *tlsAutoAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	return a.chosen.Next(fromServer, more)
}
