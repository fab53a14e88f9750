package examples_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
)

func TestTokens(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tk := &examples.Tokens{Key: []byte(strings.Repeat("k", 32)), TTL: time.Hour, Now: func() time.Time { return now }}
	tok, err := tk.Mint("42")
	if err != nil {
		t.Fatal(err)
	}
	if uid, err := tk.Verify(tok); err != nil || uid != "42" {
		t.Fatalf("verify: %q %v", uid, err)
	}
	other := &examples.Tokens{Key: []byte(strings.Repeat("x", 32)), Now: tk.Now}
	later := &examples.Tokens{Key: tk.Key, Now: func() time.Time { return now.Add(2 * time.Hour) }}
	for name, tc := range map[string]struct {
		tokens *examples.Tokens
		token  string
	}{
		"other key": {other, tok},
		"expired":   {later, tok},
		"tampered":  {tk, "NDN8OTk5OTk5OTk5OQ" + tok[strings.Index(tok, "."):]},
		"garbage":   {tk, "not-a-token"},
		"empty":     {tk, ""},
	} {
		if _, err := tc.tokens.Verify(tc.token); !errors.Is(err, examples.ErrInvalidToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := (&examples.Tokens{}).Mint("42"); err == nil {
		t.Error("minted without a key")
	}
}

func TestPasswordResetTwoPaths(t *testing.T) {
	t.Parallel()
	ev := examples.PasswordReset{Tokens: &examples.Tokens{Key: []byte(strings.Repeat("k", 32))}, BaseURL: "https://app.test/"}
	ctx := context.Background()
	u := examples.User{ID: "42", Email: "ada@example.net", Name: "Ada"}

	// The producer passed a token: it is kept, nothing is minted.
	d := &events.Dispatch{Data: map[string]any{"user": u}, Vars: map[string]any{"reset_token": events.NewSecret("given")}}
	if vars, err := ev.SendVariables(ctx, d); err != nil || len(vars) != 0 {
		t.Fatalf("with a producer token: %v %v", vars, err)
	}
	// None passed: a real token is minted.
	d = &events.Dispatch{Data: map[string]any{"user": u}, Vars: map[string]any{}}
	vars, err := ev.SendVariables(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := vars["reset_token"].(events.Secret)
	if !ok || events.ContainsSample(tok.Reveal()) {
		t.Fatalf("minted %#v", vars)
	}
	if uid, err := ev.Tokens.Verify(tok.Reveal()); err != nil || uid != "42" {
		t.Fatalf("minted token does not verify: %v", err)
	}
	// The sample path carries the marker everywhere, so the send path would refuse it.
	s, err := ev.SampleData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sd := &events.Dispatch{Data: s.Data, Vars: s.Vars, Mode: events.ModePreview}
	rcs, _ := ev.Recipients(ctx, sd, events.Channel{})
	a, _ := ev.TemplateAssigns(ctx, sd, events.Channel{}, rcs[0])
	if !events.ContainsSample(a["reset_url"].(string)) || !events.ContainsSample(rcs[0].Address) {
		t.Fatalf("sample data without the marker: %v %v", a, rcs)
	}
	// Minting failure is an error, never a sample fallback.
	broken := examples.PasswordReset{}
	if _, err := broken.SendVariables(ctx, &events.Dispatch{Data: map[string]any{"user": u}}); err == nil ||
		!strings.Contains(err.Error(), "token generation failed") {
		t.Fatalf("broken minting: %v", err)
	}
}
