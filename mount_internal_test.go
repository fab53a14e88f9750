package herald

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// TestConfigureDecidesEachErrorByItsOwnersRule: an application whose IsFailure counts only its
// own errors must not turn Herald's failures into endless uncounted retries, nor Herald's rule
// its own errors. asynq still sees RevokeTask through the mark.
func TestConfigureDecidesEachErrorByItsOwnersRule(t *testing.T) {
	t.Parallel()
	heraldWait := errors.New("herald waits (not a failure)")
	heraldFail := errors.New("herald failure")
	appErr, appWait := errors.New("the application's failure"), errors.New("the application waits")
	var next error
	m := &Mounted{Handler: mark(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return next })),
		IsFailure:      func(err error) bool { return !errors.Is(err, heraldWait) },
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Second },
		ErrorHandler:   asynq.ErrorHandlerFunc(func(context.Context, *asynq.Task, error) {}),
		queue:          "herald", shutdown: time.Minute}
	c := asynq.Config{IsFailure: func(err error) bool { return errors.Is(err, appErr) }}
	m.Configure(&c)
	run := func(err error) error {
		next = err
		return m.Handler.ProcessTask(t.Context(), asynq.NewTask(TaskPrefix+"dispatch", nil))
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"Herald's failure", run(heraldFail), true},
		{"Herald's wait", run(heraldWait), false},
		{"the application's failure", appErr, true},
		{"an error the application does not count", appWait, false},
	} {
		if got := c.IsFailure(tc.err); got != tc.want {
			t.Errorf("%s: IsFailure = %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := run(asynq.RevokeTask); !errors.Is(err, asynq.RevokeTask) || err.Error() != asynq.RevokeTask.Error() {
		t.Errorf("a revoke through the mark: %v", err)
	}
	if run(nil) != nil {
		t.Error("a success became an error")
	}
}
