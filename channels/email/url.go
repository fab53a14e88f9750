package email

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/wneessen/go-mail"
)

// Endpoint is a parsed HERALD_SMTP_URL:
// smtp://user:pass@host:port?tls=starttls|tls|none|opportunistic&auth=…&helo=…&ca=….
type Endpoint struct {
	Host     string
	Port     int
	TLS      string // starttls (default, required), tls (implicit), opportunistic, none
	Username string
	Password string
	Auth     string // go-mail mechanism name (plain, login, cram-md5, scram-sha-256, …); default autodiscover
	HELO     string // the name given in EHLO/HELO (helo=); empty: Config.HELO or its default
	CAFile   string // a PEM file of CAs trusted for the server's certificate (ca=)
}

// ParseURL parses an SMTP URL. Errors never echo the URL (it may hold a password).
func ParseURL(raw string) (Endpoint, error) {
	const hint = "want smtp://user:pass@host:587?tls=starttls (tls: starttls, tls, opportunistic or none)"
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return Endpoint{}, errors.New("HERALD_SMTP_URL is not a valid URL: " + hint)
	}
	if u.Scheme != "smtp" && u.Scheme != "smtps" {
		return Endpoint{}, fmt.Errorf("HERALD_SMTP_URL scheme %q: %s", u.Scheme, hint)
	}
	ep := Endpoint{Host: u.Hostname(), TLS: "starttls", Auth: "autodiscover"}
	if u.Scheme == "smtps" {
		ep.TLS = "tls"
	}
	q := u.Query()
	if v := q.Get("tls"); v != "" {
		switch v {
		case "starttls", "tls", "none", "opportunistic":
			ep.TLS = v
		default:
			return Endpoint{}, fmt.Errorf("HERALD_SMTP_URL tls=%q: %s", v, hint)
		}
	}
	if v := q.Get("auth"); v != "" {
		var at mail.SMTPAuthType
		if err := at.UnmarshalString(v); err != nil {
			return Endpoint{}, fmt.Errorf("HERALD_SMTP_URL auth=%q: unknown mechanism", v)
		}
		ep.Auth = v
	}
	if v := q.Get("helo"); v != "" {
		if !validHELO(v) {
			return Endpoint{}, fmt.Errorf("HERALD_SMTP_URL helo=%q is not a host name: want this host's fully-qualified name, e.g. helo=mail.example.com", v)
		}
		ep.HELO = v
	}
	ep.CAFile = q.Get("ca")
	if ep.CAFile != "" && ep.TLS == "none" {
		return Endpoint{}, errors.New("HERALD_SMTP_URL has ca= with tls=none: there is no certificate to verify; use tls=starttls or tls=tls, or drop ca=")
	}
	switch p := u.Port(); {
	case p != "":
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return Endpoint{}, fmt.Errorf("HERALD_SMTP_URL port %q: want 1-65535", p)
		}
		ep.Port = n
	case ep.TLS == "tls":
		ep.Port = 465
	case ep.TLS == "none":
		ep.Port = 25
	default:
		ep.Port = 587
	}
	if u.User != nil {
		ep.Username = u.User.Username()
		ep.Password, _ = u.User.Password()
	}
	return ep, nil
}

// String is the endpoint without its password, for logs.
func (e Endpoint) String() string {
	user := ""
	if e.Username != "" {
		user = e.Username + ":xxxxx@"
	}
	return fmt.Sprintf("smtp://%s%s:%d?tls=%s", user, e.Host, e.Port, strings.ToLower(e.TLS))
}
