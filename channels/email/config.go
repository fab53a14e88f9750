package email

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config configures a Sender.
type Config struct {
	// URL is the SMTP endpoint, smtp://user:pass@host:587?tls=starttls. Required. Its helo= and
	// ca= parameters win over HELO and CAFile.
	URL string
	// PoolSize is how many connections are kept, one per concurrent send. Defaults to 10.
	PoolSize int
	// SendTimeout bounds one attempt — dial, TLS, authentication, the message, and the one redial
	// of a stale pooled connection — together, not each. The waiting for a free connection is not
	// counted; a ctx deadline passed to Send that comes earlier wins. Defaults to 30s.
	SendTimeout time.Duration
	// TLSConfig overrides the TLS settings. Optional; ServerName defaults to the URL's host.
	TLSConfig *tls.Config
	// HELO is the name given in EHLO/HELO when the URL has no helo= parameter. It must be fully
	// qualified: relays with Postfix's reject_non_fqdn_helo_hostname refuse a short name. Herald's
	// worker passes the Message-ID domain (HERALD_MESSAGE_ID_DOMAIN, by default the domain of
	// HERALD_MAIL_FROM). Defaults to the machine's host name if it contains a dot, else
	// "localhost.localdomain".
	HELO string
	// CAFile is a PEM file of CA certificates to trust for the server's certificate, in addition
	// to the system's roots: for a relay whose certificate comes from a private CA
	// (HERALD_SMTP_CA_FILE). The URL's ca= parameter wins. Optional; Go also honours
	// SSL_CERT_FILE and SSL_CERT_DIR for the system roots.
	CAFile string
}

func (c Config) withDefaults() Config {
	if c.PoolSize <= 0 {
		c.PoolSize = 10
	}
	if c.SendTimeout <= 0 {
		c.SendTimeout = 30 * time.Second
	}
	return c
}

// heloLabel is one DNS label; underscores are tolerated, as many host names carry them.
const heloLabel = `[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?`

// heloName is a domain or an address literal (RFC 5321 4.1.3).
var heloName = regexp.MustCompile(`^(?:` + heloLabel + `(?:\.` + heloLabel + `)*\.?|\[(?:IPv6:)?[0-9A-Fa-f:.]+\])$`)

func validHELO(s string) bool { return len(s) <= 255 && heloName.MatchString(s) }

// helo chooses the EHLO name: the URL's helo=, then the configured one, then a fully-qualified
// host name, then "localhost.localdomain".
func helo(ep Endpoint, configured string) (string, error) {
	switch {
	case ep.HELO != "":
		return ep.HELO, nil // checked by ParseURL
	case configured != "":
		if !validHELO(configured) {
			return "", fmt.Errorf("EHLO name %q is not a host name: set helo=<this host's fully-qualified name> in HERALD_SMTP_URL", configured)
		}
		return configured, nil
	}
	return defaultHELO(os.Hostname()), nil
}

func defaultHELO(hostname string, err error) string {
	if err == nil && strings.Contains(strings.Trim(hostname, "."), ".") && validHELO(hostname) {
		return hostname
	}
	return "localhost.localdomain"
}

// tlsConfig is the TLS configuration for STARTTLS and implicit TLS: cfg.TLSConfig or a default,
// the server name set, and the CA file (ca= or Config.CAFile) added to the roots.
func tlsConfig(cfg Config, ep Endpoint) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tc = cfg.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = ep.Host
	}
	file, setting := ep.CAFile, "ca= in HERALD_SMTP_URL"
	if file == "" {
		file, setting = cfg.CAFile, "HERALD_SMTP_CA_FILE"
	}
	if file == "" {
		return tc, nil
	}
	if ep.TLS == "none" {
		return nil, fmt.Errorf("%s (%s) is set but HERALD_SMTP_URL has tls=none: there is no certificate to verify; use tls=starttls or tls=tls, or drop the ca setting", setting, file)
	}
	pemData, err := os.ReadFile(file) //nolint:gosec // the operator names this file (ca= / HERALD_SMTP_CA_FILE)
	if err != nil {
		return nil, fmt.Errorf("read the SMTP server's CA file (%s): %w", setting, err)
	}
	roots := tc.RootCAs
	if roots == nil {
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
	} else {
		roots = roots.Clone()
	}
	if !roots.AppendCertsFromPEM(pemData) {
		return nil, errors.New("the SMTP server's CA file " + file + " (" + setting + ") holds no PEM certificate")
	}
	tc.RootCAs = roots
	return tc, nil
}
