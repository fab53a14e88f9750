package herald_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const keys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func baseEnv() map[string]string {
	return map[string]string{
		"HERALD_REDIS_URL":    "redis://127.0.0.1:6379/0",
		"HERALD_DATABASE_URL": "postgres://herald:db-Pa55@127.0.0.1:5432/herald",
		"HERALD_SMTP_URL":     "smtp://mailer:smtp-Pa55@mail.example.com:587",
		"HERALD_MAIL_FROM":    "Acme <noreply@acme.example>",
		"HERALD_SECRET_KEYS":  keys,
	}
}

func TestRunEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dbURL := testenv.DatabaseURL(t)
	queue := testenv.Queue(t)
	smtp := emailtest.Start(t)

	pool, err := herald.OpenDB(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := exampleRegistry(t, pool)
	cfg, err := herald.ConfigFromEnv(envOf(map[string]string{
		"HERALD_REDIS_URL": testenv.RedisURL(t), "HERALD_DATABASE_URL": dbURL, "HERALD_SMTP_URL": smtp.URL(),
		"HERALD_MAIL_FROM": "Herald <noreply@herald.test>", "HERALD_SECRET_KEYS": keys, "HERALD_HTTP_ADDR": "127.0.0.1:0",
		"HERALD_QUEUE": queue, "HERALD_SHUTDOWN_TIMEOUT": "35s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	cfg.LogOutput = &logs
	ready := make(chan string, 1)
	cfg.Ready = func(addr string) { ready <- addr }
	done := make(chan error, 1)
	go func() { done <- herald.Run(ctx, cfg, reg) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not start")
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d %q", path, resp.StatusCode, body)
		}
	}
	client, err := herald.NewClient(herald.Config{RedisURL: cfg.RedisURL, SecretKeys: keys, Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	res, err := client.Dispatch(ctx, "accounts.password_reset", []events.Ref{{Name: "user", Resource: "users", ID: "42"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := res.ID
	m := smtp.WaitFor(t, 1, 10*time.Second)[0]
	if !strings.Contains(m.Text, "https://app.test/reset-password?token=") {
		t.Fatalf("text %q", m.Text)
	}
	testenv.WaitFor(t, 5*time.Second, "the receipt is sent", func() bool {
		rs, err := receipts.NewReader(pool).ReceiptsOf(ctx, id)
		return err == nil && len(rs) == 1 && rs[0].Status == receipts.ReceiptSent
	})
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`herald_deliveries_total{outcome="sent",transport="email"} 1`, `herald_dispatches_total{outcome="fanned_out"} 1`,
		"herald_send_duration_seconds_count{transport=\"email\"} 1", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("Run did not stop")
	}
	if !strings.Contains(logs.String(), "herald worker stopped") {
		t.Fatalf("logs: %s", logs.String())
	}
}

func TestRunRefusesBadSetup(t *testing.T) {
	t.Parallel()
	env := baseEnv()
	env["HERALD_REDIS_URL"] = testenv.RedisURL(t)
	env["HERALD_DATABASE_URL"] = "postgres://nobody:db-Pa55@127.0.0.1:1/none?connect_timeout=2"
	cfg, err := herald.ConfigFromEnv(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LogOutput = io.Discard
	err = herald.Run(t.Context(), cfg, events.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "does not answer") || strings.Contains(err.Error(), "db-Pa55") {
		t.Fatalf("unreachable database: %v", err)
	}

	env["HERALD_DATABASE_URL"] = testenv.DatabaseURL(t)
	env["HERALD_REDIS_URL"] = "redis://:redis-Pa55@127.0.0.1:1/0"
	if cfg, err = herald.ConfigFromEnv(envOf(env)); err != nil {
		t.Fatal(err)
	}
	cfg.LogOutput = io.Discard
	err = herald.Run(t.Context(), cfg, events.NewRegistry())
	if err == nil || !strings.Contains(err.Error(), "Redis (HERALD_REDIS_URL) does not answer") || strings.Contains(err.Error(), "redis-Pa55") {
		t.Fatalf("unreachable Redis: %v", err)
	}

	// A template error stops the start.
	reg := events.NewRegistry()
	reg.MustRegister(brokenTemplates{})
	env["HERALD_REDIS_URL"] = testenv.RedisURL(t)
	if cfg, err = herald.ConfigFromEnv(envOf(env)); err != nil {
		t.Fatal(err)
	}
	cfg.LogOutput = io.Discard
	if err := herald.Run(t.Context(), cfg, reg); err == nil || !strings.Contains(err.Error(), `"broken.templates"`) {
		t.Fatalf("template error: %v", err)
	}
}
