package tasks_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/tasks"
)

// TestPayloadFixtures decodes the payloads of testdata/payloads: exactly what the previous
// release wrote (Client.Dispatch on first sight, the id-only dispatch of retries and the
// promoter, the deliver task), what a newer release of the same major version may write (fields
// this one does not know, at the top and inside a reference), and a newer major version.
func TestPayloadFixtures(t *testing.T) {
	t.Parallel()
	decode := func(name string) (any, error) {
		if strings.HasPrefix(name, "deliver") {
			return tasks.DecodeDeliver(fixture(t, name))
		}
		return tasks.DecodeDispatch(fixture(t, name))
	}
	accepted := time.Date(2026, 11, 28, 15, 27, 37, 170004900, time.UTC)
	firstSight := tasks.DispatchPayload{V: 1, DispatchID: fixtureDispatchID, EventID: "accounts.password_reset",
		Refs:           []events.Ref{{Name: "user", Resource: "users", ID: "42"}},
		Vars:           json.RawMessage(`{"amount":12.5,"locale":"en-GB","tags":["a","b"]}`),
		Secrets:        map[string]string{"reset_token": "v1.test1.zr9eKmOi4j4KzJlzNBwj0_yFlM0W2s4OinZGfT0LeHvvvWfEjB5S_v1QRlaWQQ"},
		IdempotencyKey: "reset-42-2026-01-01", Actor: "admin:7", AcceptedAt: accepted}
	deliver := tasks.DeliverPayload{V: 1, ReceiptID: "01a222c5-0b8e-7c41-9a43-5d0e8f1b2c3d", Attempt: 3}
	for _, tc := range []struct {
		name  string
		want  any    // the decoded payload, when it decodes
		newer string // the task type of a *tasks.NewerPayloadError
	}{
		{name: "dispatch_v1_first_sight.json", want: firstSight},
		{name: "dispatch_v1_id_only.json", want: tasks.DispatchPayload{V: 1, DispatchID: fixtureDispatchID}},
		{name: "deliver_v1.json", want: deliver},
		{name: "dispatch_v1_future_minor.json", want: firstSight},
		{name: "deliver_v1_future_minor.json", want: deliver},
		{name: "dispatch_v2.json", newer: tasks.TypeDispatch},
		{name: "deliver_v2.json", newer: tasks.TypeDeliver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decode(tc.name)
			if tc.newer != "" {
				var newer *tasks.NewerPayloadError
				if !errors.As(err, &newer) || *newer != (tasks.NewerPayloadError{Type: tc.newer, Version: 2, Understood: tasks.PayloadVersion}) {
					t.Fatalf("got %v, want a *tasks.NewerPayloadError for %s version 2", err, tc.newer)
				}
				if errors.Is(err, tasks.ErrMalformedPayload) {
					t.Fatalf("a newer payload is reported malformed: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g, w := mustJSON(t, got), mustJSON(t, tc.want); g != w {
				t.Fatalf("decoded\n%s\nwant\n%s", g, w)
			}
		})
	}
	// What this release writes still reads back exactly as the previous release wrote it.
	for name, p := range map[string]any{"dispatch_v1_first_sight.json": firstSight, "deliver_v1.json": deliver,
		"dispatch_v1_id_only.json": tasks.DispatchPayload{V: tasks.PayloadVersion, DispatchID: fixtureDispatchID}} {
		if got := mustJSON(t, p); got != string(fixture(t, name)) {
			t.Errorf("this release writes\n%s\nthe previous one wrote (%s)\n%s", got, name, fixture(t, name))
		}
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fixture reads a payload from testdata/payloads.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "payloads", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureDispatchID is the dispatch id of the first-sight fixtures (their sealed secret is bound to it).
const fixtureDispatchID = "01a222c4-ded2-7010-bd50-2279530f342e"
