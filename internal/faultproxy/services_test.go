package faultproxy_test

import (
	"context"
	"net/smtp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/internal/faultproxy"
	"github.com/heraldhq/herald/internal/testenv"
)

// eventually polls f until it returns nil, failing the test with its last error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// try runs f with a short deadline: long enough for a healthy loopback server, short enough
// that a stalled one fails it.
func try(t *testing.T, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	return f(ctx)
}

// TestRedisThroughProxy: a go-redis client sees errors while Redis is refused, stalled or
// dropped, and recovers by itself once the proxy passes again.
func TestRedisThroughProxy(t *testing.T) {
	t.Parallel()
	p := faultproxy.Start(t, testenv.Target(t, testenv.RedisURL(t)))
	rc := testenv.RedisOptVia(t, p.Addr()).MakeRedisClient().(*redis.Client)
	t.Cleanup(func() { _ = rc.Close() })
	ping := func(ctx context.Context) error { return rc.Ping(ctx).Err() }

	if err := try(t, ping); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	for _, fault := range []faultproxy.Mode{faultproxy.Refuse, faultproxy.Stall} {
		p.SetMode(fault)
		if err := try(t, ping); err == nil {
			t.Fatalf("PING answered in mode %v", fault)
		}
		p.SetMode(faultproxy.Pass)
		eventually(t, 10*time.Second, "PING after "+fault.String(), func() error { return try(t, ping) })
	}
	p.SetMode(faultproxy.Drop) // the pool's connections die; the client redials
	eventually(t, 10*time.Second, "PING after drop", func() error { return try(t, ping) })
	if s := p.Stats(); s.Cut == 0 || s.Refused == 0 || s.Accepted < 3 {
		t.Fatalf("stats %+v: the faults never touched the client", s)
	}
}

// TestPostgresThroughProxy: a pgx pool on a test database, routed through the proxy with
// testenv.Via, fails while PostgreSQL is refused and works again after.
func TestPostgresThroughProxy(t *testing.T) {
	t.Parallel()
	direct := testenv.DatabaseURL(t)
	p := faultproxy.Start(t, testenv.Target(t, direct))
	pool, err := pgxpool.New(t.Context(), testenv.Via(t, direct, p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var db string
	query := func(ctx context.Context) error { return pool.QueryRow(ctx, "SELECT current_database()").Scan(&db) }

	if err := try(t, query); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	if want := dbName(t, direct); db != want {
		t.Fatalf("connected to %q, want the test database %q", db, want)
	}
	for _, fault := range []faultproxy.Mode{faultproxy.Refuse, faultproxy.Stall, faultproxy.CutAfter(faultproxy.ServerToClient, 0)} {
		p.SetMode(fault)
		if err := try(t, query); err == nil {
			t.Fatalf("the query answered in mode %v", fault)
		}
		p.SetMode(faultproxy.Pass)
		eventually(t, 10*time.Second, "query after "+fault.String(), func() error { return try(t, query) })
	}
}

func dbName(t *testing.T, u string) string {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.ConnConfig.Database
}

// TestSMTPReplyLostAfterFinalDot: cut on the client's final "\r\n.\r\n", the SMTP client never
// hears the answer to DATA, while the server has the whole message and keeps it.
func TestSMTPReplyLostAfterFinalDot(t *testing.T) {
	t.Parallel()
	srv := emailtest.Start(t)
	p := faultproxy.Start(t, srv.Addr)
	p.SetMode(faultproxy.CutOn(faultproxy.ClientToServer, []byte("\r\n.\r\n")))
	c, err := smtp.Dial(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("a@herald.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.net"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Message-ID: <1@herald.test>\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("the client heard a reply to DATA through the cut")
	}
	if m := srv.WaitFor(t, 1, 10*time.Second); m[0].MessageID != "<1@herald.test>" {
		t.Fatalf("the server kept %q", m[0].MessageID)
	}
	if s := p.Stats(); s.Cut != 1 {
		t.Fatalf("stats %+v", s)
	}
}
