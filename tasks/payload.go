package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/canon"
)

// Stable task type names, independent of Go type names.
const (
	TypeDispatch = "herald:dispatch"
	TypeDeliver  = "herald:deliver"
)

// MaxPayloadBytes bounds a dispatch task: payloads carry references and small variables, never
// rows or bodies (asynq keeps payloads in Redis, and archived ones for months).
const MaxPayloadBytes = 64 << 10

// DispatchPayload is the herald:dispatch task. On first sight it carries everything needed to
// create the dispatch row; tasks enqueued later (retries, the promoter) carry the id alone.
// Secrets are sealed; nothing in it is a secret in clear.
type DispatchPayload struct {
	V              int               `json:"v"`
	DispatchID     string            `json:"dispatch_id"`
	EventID        string            `json:"event_id,omitempty"`
	Refs           []events.Ref      `json:"refs,omitempty"`
	Vars           json.RawMessage   `json:"vars,omitempty"`
	Secrets        map[string]string `json:"secrets,omitempty"` // sealed
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	Actor          string            `json:"actor,omitempty"`
	AcceptedAt     time.Time         `json:"accepted_at,omitzero"`
}

// DeliverPayload is the herald:deliver task.
type DeliverPayload struct {
	V         int    `json:"v"`
	ReceiptID string `json:"receipt_id"`
	Attempt   int    `json:"attempt"`
}

// PayloadVersion is the major version of the payloads this worker writes and understands. A
// payload of this version may carry fields this release does not know (a newer release of the
// same major version added them): they are ignored. A payload of a newer major version is
// refused with *NewerPayloadError, never as malformed: a newer worker on the same queue can take
// it (DESIGN.md, "Payloads are compatible across a rolling deploy"). Every release has written
// v:1, so a payload without a version is malformed.
const PayloadVersion = 1

// ErrMalformedPayload is wrapped by payload decoding errors.
var ErrMalformedPayload = errors.New("malformed payload")

// NewerPayloadError is returned by DecodeDispatch and DecodeDeliver for a well-formed payload
// whose major version is newer than this worker understands. It is not malformed: the task
// belongs to a newer release of Herald.
type NewerPayloadError struct {
	Type       string // the task type: TypeDispatch or TypeDeliver
	Version    int    // the payload's major version
	Understood int    // the newest major version this worker understands (PayloadVersion)
}

func (e *NewerPayloadError) Error() string {
	return fmt.Sprintf("%s payload version %d is newer than this worker understands (version %d): "+
		"a worker of a newer Herald release must take it; upgrade this worker", e.Type, e.Version, e.Understood)
}

// DecodeDispatch decodes and checks a herald:dispatch payload.
func DecodeDispatch(b []byte) (DispatchPayload, error) {
	var p DispatchPayload
	if err := decodeVersioned(TypeDispatch, b, &p, &p.V); err != nil {
		return p, err
	}
	if err := uuid.Validate(p.DispatchID); err != nil {
		return p, fmt.Errorf("%w: dispatch_id %q is not a UUID", ErrMalformedPayload, clip(p.DispatchID))
	}
	if len(p.Vars) > 0 {
		if _, err := canon.Vars(p.Vars); err != nil {
			return p, fmt.Errorf("%w: vars: %w", ErrMalformedPayload, err)
		}
	}
	return p, nil
}

// DecodeDeliver decodes and checks a herald:deliver payload.
func DecodeDeliver(b []byte) (DeliverPayload, error) {
	var p DeliverPayload
	if err := decodeVersioned(TypeDeliver, b, &p, &p.V); err != nil {
		return p, err
	}
	if err := uuid.Validate(p.ReceiptID); err != nil {
		return p, fmt.Errorf("%w: receipt_id %q is not a UUID", ErrMalformedPayload, clip(p.ReceiptID))
	}
	return p, nil
}

// decodeVersioned decodes one JSON object into v, whose version field is *version, ignoring
// fields it does not know. The version is checked before the shape: a newer major version may
// have changed the type of a known field, and must still be told apart from a broken payload.
func decodeVersioned(typ string, b []byte, v any, version *int) error {
	if err := decodeObject(b, v); err != nil {
		// Only the version is read now: {"v":2,"refs":{…}} is a newer payload, not a broken one.
		var env struct {
			V int `json:"v"`
		}
		if decodeObject(b, &env) == nil && env.V > PayloadVersion {
			return &NewerPayloadError{Type: typ, Version: env.V, Understood: PayloadVersion}
		}
		return err
	}
	switch {
	case *version < 1:
		return fmt.Errorf("%w: no payload version (\"v\" is missing or below 1; every Herald release writes it)", ErrMalformedPayload)
	case *version > PayloadVersion:
		return &NewerPayloadError{Type: typ, Version: *version, Understood: PayloadVersion}
	}
	return nil
}

// decodeObject decodes exactly one JSON value into v: unknown fields are ignored, trailing data
// is not.
func decodeObject(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformedPayload, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrMalformedPayload)
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// DispatchTaskID is the deterministic id of a dispatch task for the given attempt count.
func DispatchTaskID(id string, attempt int) string { return fmt.Sprintf("dispatch:%s:%d", id, attempt) }

// DeliverTaskID is the deterministic id of a deliver task for the given attempt count.
func DeliverTaskID(id string, attempt int) string { return fmt.Sprintf("deliver:%s:%d", id, attempt) }
