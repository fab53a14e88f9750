package welcome_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples/welcome"
	"github.com/heraldhq/herald/templates"
)

// What a worker does with one dispatch of accounts.welcome, without the services: hydrate the
// "user" reference through the loader, ask the event for its channels, recipients and subjects,
// and render the templates. A LoaderFunc stands in for UsersLoader, which reads PostgreSQL.
func Example() {
	ctx := context.Background()
	reg := events.NewRegistry()
	reg.MustRegister(welcome.Welcome{})
	err := reg.RegisterLoader("users", events.LoaderFunc(func(_ context.Context, ref events.Ref) (any, error) {
		return welcome.User{ID: ref.ID, Email: "ada@example.net", Name: "Ada Lovelace"}, nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	r, err := templates.New(reg) // parses every template, as the worker does when it starts
	if err != nil {
		log.Fatal(err)
	}

	ev, _ := reg.Lookup("accounts.welcome")
	ref, _ := events.ParseRef("user=users/42")
	users, _ := reg.Loader(ref.Resource)
	u, err := users.Load(ctx, ref)
	if err != nil {
		log.Fatal(err)
	}
	accepted := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	d := &events.Dispatch{EventID: ev.ID(), Refs: []events.Ref{ref}, Data: map[string]any{ref.Name: u}, AcceptedAt: accepted}
	chs, _ := ev.Channels(ctx, d)
	for _, ch := range chs {
		rs, _ := ev.Recipients(ctx, d, ch)
		subject, _ := events.SubjectOf(ctx, ev, d, ch, rs[0])
		assigns, _ := templates.Assigns(ctx, ev, d, ch, rs[0], subject)
		out, err := r.Render(ev.ID(), ch.Transport, events.VariantOf(ctx, ev, d, ch), subject, assigns)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("[%s] %s to %s: %q\n%s\n", ch.Key, ch.Time.DueAt(accepted).Format(time.RFC3339), rs[0].Address, out.Subject, out.Text)
	}
	// Output:
	// [email] 2026-11-28T09:00:00Z to ada@example.net: "Welcome aboard"
	// Welcome, Ada Lovelace!
	//
	// Your account is ready. Sign in with ada@example.net.
	//
	// [tips] 2026-12-01T09:00:00Z to ada@example.net: "Three tips for your first week"
	// Three tips, Ada Lovelace
	//
	// 1. Complete your profile.
	// 2. Invite your team.
	// 3. Turn on two-factor sign-in.
}
