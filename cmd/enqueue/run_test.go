package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const keys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

type bundle struct {
	env map[string]string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dbURL := testenv.DatabaseURL(t)
	return &bundle{env: map[string]string{
		"HERALD_REDIS_URL": testenv.RedisURL(t), "HERALD_DATABASE_URL": dbURL, "HERALD_SECRET_KEYS": keys,
		"HERALD_QUEUE": testenv.Queue(t),
	}}
}

func (b *bundle) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"--env-file", ""}, args...)
	err := run(context.Background(), args, func(k string) string { return b.env[k] }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	b := &bundle{env: map[string]string{}}
	for _, args := range [][]string{{"--help"}, {"dispatch", "--help"}, {"status", "--help"}, {"receipts", "show", "--help"},
		{"mailbox", "list", "--help"}, {"mailbox", "show", "--help"}, {"cancel", "--help"}, {"receipts", "cancel", "--help"},
		{"rejected", "--help"}} {
		out, err := b.run(t, args...)
		if err != nil || !strings.Contains(out, "Usage: enqueue") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"dispatch", "accounts.password_reset", "--bogus"}, want: "unknown flag --bogus"},
		{args: []string{"dispatch", "accounts.password_reset", "--ref", "user:42"}, want: "--ref"},
		{args: []string{"dispatch", "accounts.password_reset", "--var", "novalue"}, want: "want key=value"},
		{args: []string{"dispatch", "accounts.password_reset", "--var", "n:={bad"}, want: "not JSON"},
		{args: []string{"dispatch", "Not An Event"}, want: "invalid dispatch"},
		{args: []string{"dispatch", "accounts.password_reset"}, env: map[string]string{"HERALD_REDIS_URL": "redis://127.0.0.1:1/0"}, want: "does not answer"},
		{args: []string{"dispatch", "accounts.password_reset"}, env: map[string]string{"HERALD_SECRET_KEYS": ""}, want: "HERALD_SECRET_KEYS is not set"},
		{args: []string{"status", "01a2203a-c569-7ae3-b0c8-f27792223ad5"}, want: "not found"},
		{args: []string{"receipts", "show", "01a2203a-c569-7ae3-b0c8-f27792223ad5"}, want: "not found"},
		{args: []string{"mailbox", "show", "99"}, want: "not found"},
	} {
		saved := map[string]string{}
		for k, v := range tc.env {
			saved[k] = b.env[k]
			b.env[k] = v
		}
		out, err := b.run(t, tc.args...)
		for k, v := range saved {
			b.env[k] = v
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v (out %q), want %q", tc.args, err, out, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error is not one line: %q", tc.args, err)
		}
	}
}

func TestDispatchQueuedAndOutbox(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out, err := b.run(t, "dispatch", "accounts.password_reset", "--ref", "user=users/42", "--var", "n:=1.50", "--secret", "reset_token=abc=def")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	// No worker runs: the dispatch is in Redis only.
	out, err = b.run(t, "status", id)
	if err != nil || !strings.Contains(out, "queued, not yet picked up") {
		t.Fatalf("status: %v %q", err, out)
	}
	// The outbox path: recorded in Postgres at once, idempotent.
	first, err := b.run(t, "--json", "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "k1")
	if err != nil {
		t.Fatal(err)
	}
	var r1, r2 struct {
		ID        string
		Duplicate bool
	}
	_ = json.Unmarshal([]byte(first), &r1)
	second, err := b.run(t, "--json", "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "k1")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(second), &r2)
	if r1.ID == "" || r2.ID != r1.ID || !r2.Duplicate {
		t.Fatalf("idempotent --tx: %+v %+v", r1, r2)
	}
	if _, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/43", "--idempotency-key", "k1"); err == nil ||
		!strings.Contains(err.Error(), "idempotency key already used") {
		t.Fatalf("conflict: %v", err)
	}
	out, err = b.run(t, "status", r1.ID)
	if err != nil || !strings.Contains(out, "accepted") || !strings.Contains(out, "receipts  none") {
		t.Fatalf("status of an outbox dispatch: %v %q", err, out)
	}
	out, err = b.run(t, "mailbox", "list")
	if err != nil || !strings.Contains(out, "empty") {
		t.Fatalf("mailbox: %v %q", err, out)
	}
	_ = examples.User{}
}

func TestCancelAndRejected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, b.env["HERALD_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := receipts.New(pool)
	out, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	now := time.Now()
	for _, key := range []string{"later", "sooner"} {
		if err := store.InsertReceipts(ctx, []receipts.NewReceipt{{ID: uuid.Must(uuid.NewV7()).String(), DispatchID: id, EventID: "accounts.password_reset",
			ChannelKey: key, Transport: "email", RecipientID: "42", MaxAttempts: 3, DueAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	rs, _ := store.ListReceipts(ctx, id)
	out, err = b.run(t, "receipts", "cancel", rs[0].ID, "--reason", "changed my mind")
	if err != nil || !strings.Contains(out, "canceled") {
		t.Fatalf("receipts cancel: %v %q", err, out)
	}
	if _, err := b.run(t, "receipts", "cancel", rs[0].ID); err == nil || !strings.Contains(err.Error(), "is canceled") {
		t.Fatalf("cancel twice: %v", err)
	}
	out, err = b.run(t, "cancel", id)
	if err != nil || !strings.Contains(out, "1 delivery canceled") {
		t.Fatalf("cancel dispatch: %v %q", err, out)
	}
	out, _ = b.run(t, "status", id)
	if strings.Count(out, "canceled  attempt") != 2 || !strings.Contains(out, "changed my mind") {
		t.Fatalf("status after cancel: %q", out)
	}
	if err := store.RecordRejectedTask(ctx, "herald:dispatch", "dispatch:x:0", "q", "malformed payload: unexpected EOF", []byte("{")); err != nil {
		t.Fatal(err)
	}
	out, err = b.run(t, "rejected")
	if err != nil || !strings.Contains(out, "malformed payload: unexpected EOF") {
		t.Fatalf("rejected: %v %q", err, out)
	}
}
