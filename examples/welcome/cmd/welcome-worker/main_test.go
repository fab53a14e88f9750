package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const keys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// TestWelcomeWorker runs this main's run on real services, dispatches accounts.welcome with
// herald.Client, and checks the welcome email arrives rendered and the tips email waits 72h;
// then the same through the outbox (DispatchTx), as the README shows.
func TestWelcomeWorker(t *testing.T) {
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
	if err := examples.Migrate(ctx, pool); err != nil { // the users table UsersLoader reads
		t.Fatal(err)
	}
	if err := examples.SeedUser(ctx, pool, examples.User{ID: "42", Email: "ada@example.net", Name: "Ada Lovelace"}); err != nil {
		t.Fatal(err)
	}

	env := map[string]string{
		"HERALD_REDIS_URL": testenv.RedisURL(t), "HERALD_DATABASE_URL": dbURL, "HERALD_SMTP_URL": smtp.URL(),
		"HERALD_MAIL_FROM": "Acme <noreply@acme.test>", "HERALD_SECRET_KEYS": keys, "HERALD_HTTP_ADDR": "off",
		"HERALD_QUEUE": queue,
	}
	var logs testenv.LogBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, &logs) }()

	c, err := herald.NewClient(herald.Config{RedisURL: env["HERALD_REDIS_URL"], SecretKeys: keys, Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Dispatch(ctx, "accounts.welcome", []events.Ref{{Name: "user", Resource: "users", ID: "42"}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(20 * time.Second)
	for len(smtp.Messages()) == 0 {
		select {
		case err := <-done:
			t.Fatalf("run returned before the email was sent: %v\nlogs:\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no welcome email after 20s; logs:\n%s", logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	m := smtp.Messages()[0]
	if m.Subject != "Welcome aboard" || len(m.To) != 1 || m.To[0] != "ada@example.net" {
		t.Errorf("subject %q to %v, want \"Welcome aboard\" to ada@example.net", m.Subject, m.To)
	}
	for _, want := range []string{"Welcome, Ada Lovelace!", "Sign in with ada@example.net."} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("text part lacks %q:\n%s", want, m.Text)
		}
	}
	if !strings.Contains(m.HTML, "<h1>Welcome, Ada Lovelace!</h1>") {
		t.Errorf("HTML part lacks the rendered heading:\n%s", m.HTML)
	}

	reader := receipts.NewReader(pool)
	var byKey map[string]*receipts.ReceiptRow
	testenv.WaitFor(t, 10*time.Second, "both receipts, the welcome one sent", func() bool {
		rs, err := reader.ReceiptsOf(ctx, res.ID)
		if err != nil {
			t.Fatal(err)
		}
		byKey = map[string]*receipts.ReceiptRow{}
		for _, r := range rs {
			byKey[r.ChannelKey] = r
		}
		return len(rs) == 2 && byKey["email"] != nil && byKey["email"].Status == receipts.ReceiptSent
	})
	tips := byKey["tips"]
	if tips.Status != receipts.ReceiptScheduled {
		t.Errorf("tips receipt is %s, want %s", tips.Status, receipts.ReceiptScheduled)
	}
	if d := time.Until(tips.DueAt); d < 71*time.Hour || d > 72*time.Hour {
		t.Errorf("tips receipt due in %v, want about 72h", d)
	}

	// The outbox, as ExampleClient_DispatchTx: the user and the dispatch in one transaction.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := examples.SeedUser(ctx, tx, examples.User{ID: "43", Email: "grace@example.net", Name: "Grace Hopper"}); err != nil {
		t.Fatal(err)
	}
	txRes, err := c.DispatchTx(ctx, tx, "accounts.welcome", []events.Ref{{Name: "user", Resource: "users", ID: "43"}}, nil,
		herald.IdempotencyKey("welcome:43"))
	if err != nil {
		t.Fatal(err)
	}
	if !txRes.Checked || txRes.Duplicate {
		t.Errorf("DispatchTx: %+v, want a checked first dispatch", txRes)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	m = smtp.WaitFor(t, 2, 20*time.Second)[1]
	if len(m.To) != 1 || m.To[0] != "grace@example.net" || !strings.Contains(m.Text, "Welcome, Grace Hopper!") {
		t.Errorf("outbox welcome to %v:\n%s", m.To, m.Text)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("run did not stop")
	}
}

// TestWelcomeWorkerConfig: a missing setting stops run before anything starts.
func TestWelcomeWorkerConfig(t *testing.T) {
	t.Parallel()
	err := run(t.Context(), func(string) string { return "" }, &testenv.LogBuffer{})
	if err == nil || !strings.Contains(err.Error(), "HERALD_") {
		t.Fatalf("run with no settings: %v, want an error naming a HERALD_ variable", err)
	}
}
