package email

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/channels"
)

var (
	replyCode    = regexp.MustCompile(`(?:^|[:\s])([2-5]\d\d)(?:[\s-]|$)`)
	enhancedCode = regexp.MustCompile(`\b([245]\.\d{1,3}\.\d{1,3})\b`)
)

// configCodes are replies that point at our configuration (authentication, TLS), not at the
// message: retrying is right once an operator fixes the setting, so they are temporary and
// flagged as configuration alerts.
var configCodes = map[int]bool{530: true, 534: true, 535: true, 538: true}

// Classify maps a failure of go-mail's Send to a channels.Error. It does not trust go-mail's
// IsTemp alone: network errors report false there.
//
//   - MAIL FROM refused with 5xx: the relay refuses our sender, the same for every message —
//     temporary and a configuration alert.
//   - no reply to the final "." (a timeout or a dropped connection while waiting for the answer
//     to DATA): temporary and InDoubt, since the server may have queued the message. A 4xx or
//     5xx answer to it is a real answer and classified by its code.
//   - a message go-mail cannot build an envelope for: permanent.
//   - anything else: by its reply code (ClassifyCode).
func Classify(err error) *channels.Error {
	if err == nil {
		return nil
	}
	var se *gomail.SendError
	if !errors.As(err, &se) {
		code, enh := replyOf(err)
		return ClassifyCode(code, enh, err)
	}
	code, enh := se.ErrorCode(), se.EnhancedStatusCode()
	if code != 0 && enh == "" {
		// go-mail reads it only when the server announced ENHANCEDSTATUSCODES. The reply leads
		// the error text; recipients and the Message-ID follow it.
		reply, _, _ := strings.Cut(se.Error(), ", affected ")
		if m := enhancedCode.FindStringSubmatch(reply); m != nil {
			enh = m[1]
		}
	}
	switch se.Reason {
	case gomail.ErrGetSender, gomail.ErrGetRcpts, gomail.ErrNoUnencoded:
		return &channels.Error{Class: channels.Permanent, Err: err}
	case gomail.ErrSMTPMailFrom:
		e := ClassifyCode(code, enh, err)
		if code >= 500 && !e.ConfigAlert { // 530 and its kin already say what to fix
			e.Class, e.ConfigAlert = channels.Temporary, true
			e.Err = fmt.Errorf("the relay refuses our sender (MAIL FROM), whatever the message: check HERALD_MAIL_FROM or the event's from address against what the relay allows: %w", err)
		}
		return e
	case gomail.ErrSMTPDataClose:
		if code == 0 { // no reply after the final ".": go-mail reports the read error here
			return &channels.Error{Class: channels.Temporary, InDoubt: true,
				Err: fmt.Errorf("no reply to the end of the message; the server may have accepted it: %w", err)}
		}
	}
	return ClassifyCode(code, enh, err)
}

// ClassifyCode classifies an SMTP reply code (0: no reply — a network error or dropped
// connection) and enhanced status code.
func ClassifyCode(code int, enhanced string, err error) *channels.Error {
	e := &channels.Error{Code: code, Enhanced: enhanced, Err: err}
	switch {
	case configCodes[code] || enhanced == "5.7.8" || enhanced == "5.7.0" && code == 530:
		e.Class, e.ConfigAlert = channels.Temporary, true
	case code == 0, code >= 400 && code < 500:
		e.Class = channels.Temporary
	case code >= 500:
		e.Class = channels.Permanent
	default:
		e.Class = channels.Temporary
	}
	return e
}

// classifySession classifies a failure to open a session — dial, greeting, EHLO/HELO, STARTTLS,
// AUTH. It is never the message's fault, so never permanent: a network error or a 4xx is
// temporary; a 5xx refusal, an untrusted certificate or a mechanism we cannot use is the relay
// refusing our configuration, temporary and a configuration alert that names the fix. helo is
// the name we gave.
func classifySession(err error, helo string) *channels.Error {
	code, enh := replyOf(err)
	e := &channels.Error{Class: channels.Temporary, Code: code, Enhanced: enh, Err: err}
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		badCert   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &unknownCA):
		e.ConfigAlert = true
		e.Err = fmt.Errorf("%w: the server's certificate is not signed by a CA this host trusts; if the relay uses a private CA, set ca=/path/to/ca.pem in HERALD_SMTP_URL or HERALD_SMTP_CA_FILE (or SSL_CERT_FILE)", err)
	case errors.As(err, &badHost):
		e.ConfigAlert = true
		e.Err = fmt.Errorf("%w: the server's certificate does not name the host in HERALD_SMTP_URL; use the host name the certificate names", err)
	case errors.As(err, &badCert):
		e.ConfigAlert = true
		e.Err = fmt.Errorf("%w: the server's certificate is not valid (expired, or not for a server)", err)
	case code >= 500 && (configCodes[code] || strings.Contains(err.Error(), "AUTH")):
		e.ConfigAlert = true
	case code >= 500:
		e.ConfigAlert = true
		e.Err = fmt.Errorf("the relay refused our session: %w; if it objects to the EHLO name %q, set helo=<this host's fully-qualified name> in HERALD_SMTP_URL", err, helo)
	case code == 0 && !isNetwork(err):
		// Not the network and not a reply: STARTTLS required but not offered, no usable
		// authentication mechanism, a TLS protocol mismatch.
		e.ConfigAlert = true
		if strings.Contains(err.Error(), "does not support STARTTLS") {
			e.Err = fmt.Errorf("%w: use tls=tls for a relay that speaks TLS from the start (port 465); tls=opportunistic or tls=none only for a relay on a trusted network", err)
		}
	}
	return e
}

// replyOf finds the SMTP reply in err: its code and enhanced status code.
func replyOf(err error) (int, string) {
	var te *textproto.Error
	if errors.As(err, &te) {
		enh := ""
		if m := enhancedCode.FindStringSubmatch(te.Msg); m != nil {
			enh = m[1]
		}
		return te.Code, enh
	}
	code, enh := 0, ""
	if m := replyCode.FindStringSubmatch(err.Error()); m != nil {
		code, _ = strconv.Atoi(m[1])
	}
	if m := enhancedCode.FindStringSubmatch(err.Error()); m != nil {
		enh = m[1]
	}
	return code, enh
}

// isNetwork reports a failure of the connection rather than of the protocol.
func isNetwork(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
