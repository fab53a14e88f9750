package herald_test

import (
	"context"
	"io/fs"
	"testing/fstest"

	"github.com/heraldhq/herald/events"
)

type brokenTemplates struct{}

func (brokenTemplates) ID() string { return "broken.templates" }
func (brokenTemplates) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return nil, nil
}
func (brokenTemplates) Recipients(context.Context, *events.Dispatch, events.Channel) ([]events.Recipient, error) {
	return nil, nil
}
func (brokenTemplates) Templates() fs.FS {
	return fstest.MapFS{"email.html.tmpl": {Data: []byte("{{ .unclosed ")}}
}
