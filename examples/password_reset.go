package examples

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
	"time"

	"github.com/heraldhq/herald/events"
)

//go:embed templates/password_reset/*.tmpl
var passwordResetTemplates embed.FS

// PasswordReset is "accounts.password_reset": one email to the user with a reset link. The
// token is the producer's when it passed one (variable reset_token, a Secret); otherwise it is
// minted at send time by SendVariables. A minting failure fails the dispatch; a sample token is
// never a fallback.
type PasswordReset struct {
	Tokens  *Tokens
	BaseURL string // where the reset page lives, e.g. https://app.example.com
}

var (
	_ events.Event            = PasswordReset{}
	_ events.SendVariabler    = PasswordReset{}
	_ events.SampleDataer     = PasswordReset{}
	_ events.TemplateAssigner = PasswordReset{}
	_ events.Templater        = PasswordReset{}
)

// ID implements events.Event.
func (PasswordReset) ID() string { return "accounts.password_reset" }

// Channels implements events.Event.
func (PasswordReset) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return []events.Channel{{Key: "email", Transport: events.TransportEmail, Audience: "user"}}, nil
}

func userOf(d *events.Dispatch) (User, error) {
	u, ok := d.Data["user"].(User)
	if !ok {
		return User{}, errors.New(`accounts.password_reset needs a "user" reference to users (user=users/<id>)`)
	}
	return u, nil
}

// Recipients implements events.Event: the user.
func (PasswordReset) Recipients(_ context.Context, d *events.Dispatch, _ events.Channel) ([]events.Recipient, error) {
	u, err := userOf(d)
	if err != nil {
		return nil, err
	}
	return []events.Recipient{{ID: u.ID, Address: u.Email, Name: u.Name, Locale: u.Locale}}, nil
}

// Subject implements events.Subjecter.
func (PasswordReset) Subject(context.Context, *events.Dispatch, events.Channel, events.Recipient) (string, error) {
	return "Reset your password", nil
}

// MaxAge implements events.MaxAger: never send a link that has expired.
func (e PasswordReset) MaxAge() time.Duration { return e.Tokens.ttl() }

// Metadata implements events.Metadataer.
func (PasswordReset) Metadata() events.Metadata {
	return events.Metadata{Domain: "accounts", Category: "security", UserConfigurable: false,
		Description: "A password reset link, on the user's request or an admin's."}
}

// Templates implements events.Templater.
func (PasswordReset) Templates() fs.FS {
	sub, _ := fs.Sub(passwordResetTemplates, "templates/password_reset")
	return sub
}

// SampleData implements events.SampleDataer: a recognisable sample user and token.
func (PasswordReset) SampleData(context.Context) (events.Sample, error) {
	return events.Sample{
		Data: map[string]any{"user": User{ID: events.SampleID(), Email: events.SampleEmail("alice"), Name: "Alice Sample"}},
		Vars: map[string]any{"reset_token": events.NewSecret(events.SampleString("reset-token"))},
	}, nil
}

// SendVariables implements events.SendVariabler: mint a token unless the producer passed one.
func (e PasswordReset) SendVariables(_ context.Context, d *events.Dispatch) (map[string]any, error) {
	if d.String("reset_token") != "" {
		return nil, nil
	}
	u, err := userOf(d)
	if err != nil {
		return nil, err
	}
	tok, err := e.Tokens.Mint(u.ID)
	if err != nil {
		return nil, fmt.Errorf("token generation failed: %w", err)
	}
	return map[string]any{"reset_token": events.NewSecret(tok)}, nil
}

// TemplateAssigns implements events.TemplateAssigner.
func (e PasswordReset) TemplateAssigns(_ context.Context, d *events.Dispatch, _ events.Channel, r events.Recipient) (map[string]any, error) {
	name := r.Name
	if name == "" {
		name, _, _ = strings.Cut(r.Address, "@")
	}
	base := strings.TrimRight(e.BaseURL, "/")
	if base == "" {
		base = "http://localhost:3000"
	}
	return map[string]any{
		"display_name": name,
		"reset_url":    base + "/reset-password?token=" + url.QueryEscape(d.String("reset_token")),
		"expiry_hours": int(e.Tokens.ttl().Hours()),
	}, nil
}
