package herald_test

import (
	"context"
	"io"
	"io/fs"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/hibiken/asynq"

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

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func cfgRedis(t *testing.T, url string) asynq.RedisConnOpt {
	t.Helper()
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}
