package welcome

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"time"

	"github.com/heraldhq/herald/events"
)

//go:embed templates/*.tmpl
var templates embed.FS

// Welcome is "accounts.welcome": an email when the user signs up, and a second one with tips
// three days later.
type Welcome struct{}

var (
	_ events.Event     = Welcome{}
	_ events.Subjecter = Welcome{}
	_ events.Templater = Welcome{}
)

// ID implements events.Event.
func (Welcome) ID() string { return "accounts.welcome" }

// Channels implements events.Event: two email channels, the second with the "tips" templates.
func (Welcome) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return []events.Channel{
		{Key: "email", Transport: events.TransportEmail, Audience: "user"},
		{Key: "tips", Transport: events.TransportEmail, Audience: "user", Time: events.In(72 * time.Hour), Variant: "tips"},
	}, nil
}

// Recipients implements events.Event: the user of the "user" reference, hydrated by UsersLoader.
func (Welcome) Recipients(_ context.Context, d *events.Dispatch, _ events.Channel) ([]events.Recipient, error) {
	u, ok := d.Data["user"].(User)
	if !ok {
		return nil, errors.New(`accounts.welcome needs a "user" reference to users (user=users/<id>)`)
	}
	return []events.Recipient{{ID: u.ID, Address: u.Email, Name: u.Name}}, nil
}

// Subject implements events.Subjecter.
func (Welcome) Subject(_ context.Context, _ *events.Dispatch, ch events.Channel, _ events.Recipient) (string, error) {
	if ch.Key == "tips" {
		return "Three tips for your first week", nil
	}
	return "Welcome aboard", nil
}

// Templates implements events.Templater: email.html.tmpl, email.text.tmpl and their "tips"
// variants, email.tips.html.tmpl and email.tips.text.tmpl.
func (Welcome) Templates() fs.FS {
	sub, _ := fs.Sub(templates, "templates")
	return sub
}
