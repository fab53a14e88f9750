package events_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/heraldhq/herald/events"
)

func ExampleParseRef() {
	ref, err := events.ParseRef("user=users/42")
	fmt.Println(ref.Name, ref.Resource, ref.ID, err)
	// Output: user users 42 <nil>
}

func ExampleSecret() {
	tok := events.NewSecret("s3cr3t")
	b, _ := json.Marshal(map[string]any{"token": tok})
	fmt.Println(tok, string(b))
	fmt.Println(tok.Reveal())
	// Output:
	// [REDACTED] {"token":"[REDACTED]"}
	// s3cr3t
}

func ExampleTime_DueAt() {
	accepted := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	fmt.Println(events.In(72 * time.Hour).DueAt(accepted).Format(time.RFC3339))
	// Output: 2026-12-01T09:00:00Z
}

func ExampleSampleEmail() {
	fmt.Println(events.SampleEmail("alice"), events.ContainsSample(events.SampleEmail("alice")))
	// Output: alice+herald-sample-x9q@example.com true
}
