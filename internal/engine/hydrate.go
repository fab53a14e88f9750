package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/seal"
)

// errNoLoader is returned when no loader is registered for a reference's resource.
var errNoLoader = errors.New("no loader registered")

// errBadRef is returned for a malformed reference in a stored dispatch.
var errBadRef = errors.New("malformed reference")

// errBadSecret is returned for a sealed value no key will ever open (malformed or forged);
// a value sealed under a key id this worker lacks is not one (see seal.ErrUnknownKey).
var errBadSecret = errors.New("sealed value cannot be opened")

func secretErr(what, name string, err error) error {
	if errors.Is(err, seal.ErrUnknownKey) {
		return fmt.Errorf("%s %q: %w", what, name, err)
	}
	return fmt.Errorf("%s %q: %w: %w", what, name, errBadSecret, err)
}

// buildDispatch turns a dispatch row into the events.Dispatch handlers see: variables decoded
// (numbers exact), producer and minted secrets unsealed as events.Secret, references hydrated.
// It returns the secret values too, for redaction.
func (w *Worker) buildDispatch(ctx context.Context, row *ledger.DispatchRow) (*events.Dispatch, redactor, error) {
	d := &events.Dispatch{ID: row.ID, EventID: row.EventID, Refs: row.Refs, Actor: row.Actor,
		AcceptedAt: row.AcceptedAt, Mode: events.ModeSend, Vars: map[string]any{}, Data: map[string]any{}}
	if len(row.Vars) > 0 {
		dec := json.NewDecoder(bytes.NewReader(row.Vars))
		dec.UseNumber()
		if err := dec.Decode(&d.Vars); err != nil {
			return nil, nil, fmt.Errorf("variables: %w", err)
		}
	}
	var red redactor
	for name, sealed := range row.Sealed {
		v, err := w.keys.Open(sealed, seal.AAD(row.ID, name))
		if err != nil {
			return nil, nil, secretErr("secret", name, err)
		}
		d.Vars[name] = events.NewSecret(v)
		red = append(red, v)
	}
	for name, m := range row.Minted {
		if m.Sealed != "" {
			v, err := w.keys.Open(m.Sealed, seal.AAD(row.ID, name))
			if err != nil {
				return nil, nil, secretErr("minted secret", name, err)
			}
			d.Vars[name] = events.NewSecret(v)
			red = append(red, v)
			continue
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(m.Value))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("minted value %q: %w", name, err)
		}
		d.Vars[name] = v
	}
	for _, ref := range row.Refs {
		if err := ref.Validate(); err != nil {
			return nil, red, fmt.Errorf("%w: %w", errBadRef, err)
		}
		l, ok := w.reg.Loader(ref.Resource)
		if !ok {
			return nil, red, fmt.Errorf("ref %s: resource %q: %w", ref, ref.Resource, errNoLoader)
		}
		v, err := l.Load(ctx, ref)
		if err != nil {
			return nil, red, fmt.Errorf("load %s: %w", ref, err)
		}
		d.Data[ref.Name] = v
	}
	return d, red, nil
}

// sealMinted seals SendVariables' output for storage: secrets sealed, the rest as JSON.
func (w *Worker) sealMinted(dispatchID string, vars map[string]any) (map[string]ledger.Minted, redactor, error) {
	out := make(map[string]ledger.Minted, len(vars))
	var red redactor
	for name, v := range vars {
		if s, ok := v.(events.Secret); ok {
			sealed, err := w.keys.Seal(s.Reveal(), seal.AAD(dispatchID, name))
			if err != nil {
				return nil, nil, err
			}
			out[name] = ledger.Minted{Sealed: sealed}
			red = append(red, s.Reveal())
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, nil, fmt.Errorf("send variable %q: %w", name, err)
		}
		out[name] = ledger.Minted{Value: b}
	}
	return out, red, nil
}

// redactorOf unseals a dispatch's secrets only to hide them: for a panic that struck before the
// fan-out or delivery had its own redactor (in a loader, say). Errors leave values out.
func (w *Worker) redactorOf(row *ledger.DispatchRow) redactor {
	var red redactor
	if row == nil {
		return nil
	}
	for name, sealed := range row.Sealed {
		if v, err := w.keys.Open(sealed, seal.AAD(row.ID, name)); err == nil {
			red = append(red, v)
		}
	}
	for name, m := range row.Minted {
		if m.Sealed == "" {
			continue
		}
		if v, err := w.keys.Open(m.Sealed, seal.AAD(row.ID, name)); err == nil {
			red = append(red, v)
		}
	}
	return red
}

// hydrate loads what a delivery needs when the fan-out did not hand it over.
func (w *Worker) hydrate(ctx context.Context, r *ledger.ReceiptRow) (*hydrated, *ledger.Outcome) {
	row, err := w.store.GetDispatch(ctx, r.DispatchID)
	if err != nil {
		o := w.retryDelivery(r, err.Error())
		return nil, &o
	}
	if row.ScrubbedAt != nil {
		return nil, &ledger.Outcome{Status: ledger.ReceiptFailed, LastError: "the dispatch's secrets were scrubbed (older than the secret retention)"}
	}
	ev, err := w.reg.Lookup(row.EventID)
	if err != nil {
		o := w.retryDelivery(r, fmt.Sprintf("unknown event %q on this worker", row.EventID))
		return nil, &o
	}
	d, red, err := w.buildDispatch(ctx, row)
	switch {
	case errors.Is(err, events.ErrNotFound), errors.Is(err, errBadRef), errors.Is(err, errBadSecret):
		return nil, &ledger.Outcome{Status: ledger.ReceiptFailed, LastError: red.apply(err.Error())}
	case err != nil:
		o := w.retryDelivery(r, red.apply(err.Error()))
		return nil, &o
	}
	chs, _ := ev.Channels(ctx, d) // the receipt's own fields stand in if this fails
	return &hydrated{ev: ev, d: d, red: red, channels: chs}, nil
}
