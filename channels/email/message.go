package email

import (
	"encoding/base64"
	"fmt"
	"maps"
	"net/mail"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald/channels"
)

// reservedHeaders are written by build itself; channels.Message.Headers may not set them (a To,
// Cc or Bcc there would add a recipient the envelope does not have, or hide one it has).
var reservedHeaders = map[string]bool{
	"From": true, "Sender": true, "To": true, "Cc": true, "Bcc": true, "Subject": true, "Message-Id": true,
	"Date": true, "Mime-Version": true, "Content-Type": true, "Content-Transfer-Encoding": true,
	"Content-Disposition": true, "Return-Path": true, "X-Mailer": true,
}

// messageID is the inside of a Message-ID: dot-atom-text "@" dot-atom-text (RFC 5322 3.6.4).
var messageID = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")

// build turns m into a go-mail message.
//
// Text — display names, the subject, header values — is cleaned: control characters (CR, LF,
// NUL, …) and the Unicode line and paragraph separators become spaces, invalid UTF-8 becomes
// U+FFFD, so no input can fold into a new header. Identifiers are strict: an address must be
// one bare address (no display name, no list, no control character), the Message-ID one
// id-left@id-right, and a header name printable ASCII that is not one build writes itself;
// anything else is an error, as it is a bug upstream rather than text to tidy.
func build(m channels.Message) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	from, err := address(m.FromName, m.From)
	if err != nil {
		return nil, fmt.Errorf("from address: %w", err)
	}
	to, err := address(m.ToName, m.To)
	if err != nil {
		return nil, fmt.Errorf("to address: %w", err)
	}
	msg.SetAddrHeaderFromMailAddress(gomail.HeaderFrom, from)
	msg.SetAddrHeaderFromMailAddress(gomail.HeaderTo, to)
	if subject := cleanLine(m.Subject); strings.Contains(subject, "=?") {
		// Written as is, it would be decoded by readers as an encoded word of its own.
		msg.SetGenHeader(gomail.HeaderSubject, encodeWords(subject))
	} else {
		msg.Subject(subject)
	}
	if m.MessageID != "" {
		id := strings.TrimSuffix(strings.TrimPrefix(m.MessageID, "<"), ">")
		if !messageID.MatchString(id) {
			return nil, fmt.Errorf("message id %q is not id-left@id-right", m.MessageID)
		}
		msg.SetMessageIDWithValue(id)
	}
	msg.SetGenHeader(gomail.HeaderXMailer, "Herald")
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		name := canonicalHeader(k)
		switch {
		case !validHeaderName(k):
			return nil, fmt.Errorf("header name %q is not valid: want printable ASCII without ':' or spaces", k)
		case reservedHeaders[name]:
			return nil, fmt.Errorf("header %s is set by Herald itself and cannot be overridden", name)
		}
		msg.SetGenHeader(gomail.Header(name), cleanLine(m.Headers[k])) // Q-encoded when not plain ASCII
	}
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	case m.HTML != "":
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML)
	default:
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	}
	return msg, nil
}

// address checks that addr is one bare address and pairs it with the cleaned display name.
func address(name, addr string) (*mail.Address, error) {
	if strings.IndexFunc(addr, func(r rune) bool { return r <= ' ' || isBreak(r) }) >= 0 || !utf8.ValidString(addr) {
		return nil, fmt.Errorf("%q holds spaces or control characters", addr)
	}
	a, err := mail.ParseAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", addr, err)
	}
	if a.Name != "" || a.Address != addr {
		return nil, fmt.Errorf("%q is not a bare address (want local@domain)", addr)
	}
	a.Name = strings.TrimSpace(cleanLine(name))
	if strings.IndexFunc(a.Name, func(r rune) bool { return r > '~' }) >= 0 {
		// String() Q-encodes such a name and leaves a backslash raw in the encoded word, which
		// RFC 2047 forbids in a phrase and net/mail itself cannot read back.
		a.Name = strings.ReplaceAll(a.Name, `\`, "\uFF3C")
	}
	return a, nil // String() quotes or encodes the name as needed
}

// isBreak reports characters that end a line or are not text: C0 and C1 controls, DEL, and the
// Unicode line and paragraph separators.
func isBreak(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// cleanLine makes s one line of valid UTF-8: each control character or line separator becomes a
// space.
func cleanLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexFunc(s, isBreak) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isBreak(r) {
			return ' '
		}
		return r
	}, s)
}

func canonicalHeader(k string) string { return textproto.CanonicalMIMEHeaderKey(k) }

// validHeaderName reports a field name of RFC 5322: printable ASCII except ':'.
func validHeaderName(k string) bool {
	if k == "" || len(k) > 76 {
		return false
	}
	for i := range len(k) {
		if c := k[i]; c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// encodeWords encodes s as RFC 2047 B encoded words of at most 75 characters, split on rune
// boundaries, whatever s holds (the mime package leaves plain ASCII as is).
func encodeWords(s string) string {
	const maxChunk = 45 // 60 base64 characters + 12 for "=?UTF-8?B?" and "?="
	var words []string
	for s != "" {
		n := 0
		for n < len(s) {
			_, size := utf8.DecodeRuneInString(s[n:])
			if n+size > maxChunk {
				break
			}
			n += size
		}
		words = append(words, "=?UTF-8?B?"+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
		s = s[n:]
	}
	return strings.Join(words, " ")
}
