package testenv

import (
	"net"
	"net/url"
	"strconv"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgconn"
)

// Target returns the host:port a postgres://, redis:// (rediss://) or smtp:// URL connects to,
// defaults included: the address to give a fault proxy (internal/faultproxy) as its target. A
// PostgreSQL URL is read the way pgx reads it (PGHOST, PGPORT, port 5432); a Unix socket or
// several hosts fail the test, as they cannot be proxied.
func Target(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("testenv: %s is not a URL", Redact(rawURL))
	}
	switch u.Scheme {
	case "postgres", "postgresql":
		cfg, err := pgconn.ParseConfig(rawURL)
		if err != nil {
			t.Fatalf("testenv: %s: %v", Redact(rawURL), err)
		}
		if cfg.Host == "" || cfg.Host[0] == '/' {
			t.Fatalf("testenv: %s: a fault proxy needs a TCP host, not a Unix socket", Redact(rawURL))
		}
		for _, f := range cfg.Fallbacks { // sslmode=prefer adds the same host without TLS
			if f.Host != cfg.Host || f.Port != cfg.Port {
				t.Fatalf("testenv: %s: a fault proxy needs one host", Redact(rawURL))
			}
		}
		return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	case "redis", "rediss":
		opt, err := asynq.ParseRedisURI(rawURL)
		if err != nil {
			t.Fatalf("testenv: %s: %v", Redact(rawURL), err)
		}
		return opt.(asynq.RedisClientOpt).Addr
	default:
		if u.Port() == "" {
			t.Fatalf("testenv: %s: no port", Redact(rawURL))
		}
		return u.Host
	}
}

// Via returns rawURL (postgres://, redis://, smtp://…) with its host and port replaced by addr,
// such as a fault proxy's, keeping user, password, path and parameters. PostgreSQL's host and
// port parameters are removed, so pgx dials addr.
func Via(t testing.TB, rawURL, addr string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" && u.Scheme != "postgres" && u.Scheme != "postgresql" {
		t.Fatalf("testenv: %s is not a URL with a host", Redact(rawURL))
	}
	u.Host = addr
	if q := u.Query(); q.Has("host") || q.Has("port") {
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// RedisOptVia returns RedisOpt(t) connecting to addr (a fault proxy) instead.
func RedisOptVia(t testing.TB, addr string) asynq.RedisClientOpt {
	t.Helper()
	opt := RedisOpt(t)
	opt.Addr = addr
	return opt
}
