package tasks

import (
	"context"

	"github.com/hibiken/asynq"
)

// Handlers runs Herald's tasks once their payloads are decoded. The engine implements it;
// NewServeMux adapts it to asynq. Each method follows asynq's contract: return nil when the
// task is done, an error to have asynq retry it, asynq.RevokeTask when its outcome is recorded
// elsewhere, and stop when ctx is done.
type Handlers interface {
	// FanOut runs a herald:dispatch task: record the dispatch on first sight, then turn it into
	// deliveries.
	FanOut(ctx context.Context, t *asynq.Task, p DispatchPayload) error
	// Deliver runs a herald:deliver task: one attempt at one delivery.
	Deliver(ctx context.Context, t *asynq.Task, p DeliverPayload) error
	// Undecodable answers a task whose payload did not decode: err is a *NewerPayloadError
	// (a newer release wrote it) or wraps ErrMalformedPayload.
	Undecodable(ctx context.Context, t *asynq.Task, err error) error
}

// NewServeMux returns the asynq handler of both task types: it decodes each payload with
// DecodeDispatch or DecodeDeliver and hands it to h.
func NewServeMux(h Handlers) *asynq.ServeMux {
	mux := asynq.NewServeMux()
	mux.HandleFunc(TypeDispatch, func(ctx context.Context, t *asynq.Task) error {
		p, err := DecodeDispatch(t.Payload())
		if err != nil {
			return h.Undecodable(ctx, t, err)
		}
		return h.FanOut(ctx, t, p)
	})
	mux.HandleFunc(TypeDeliver, func(ctx context.Context, t *asynq.Task) error {
		p, err := DecodeDeliver(t.Payload())
		if err != nil {
			return h.Undecodable(ctx, t, err)
		}
		return h.Deliver(ctx, t, p)
	})
	return mux
}
