package tasks

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/canon"
)

func TestDecodePayloads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		ok   bool
		want string
	}{
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}`, true, ""},
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5","event_id":"a.b","vars":{"n":1}}`, true, ""},
		{`{"v":1,"dispatch_id":"nope"}`, false, "not a UUID"},
		{`{"v":1,"dispatch_id":`, false, "malformed"},
		// Fields a newer release of the same major version added are ignored (rolling deploys).
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5","extra":1}`, true, ""},
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5","refs":[{"name":"u","resource":"users","id":"1","x":{}}]}`, true, ""},
		// Every release has written v:1: no version is malformed, not "old".
		{`{"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}`, false, "no payload version"},
		{`{"v":0,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}`, false, "no payload version"},
		{`{"v":-1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}`, false, "no payload version"},
		{`{"v":"1","dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}`, false, "malformed"},
		{`null`, false, "no payload version"},
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"} {}`, false, "trailing"},
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}]`, false, "trailing"},
		{`{"v":2,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"} {}`, false, "trailing"},
		{`[]`, false, "malformed"},
		{`{"v":1,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5","vars":[1]}`, false, "JSON object"},
	} {
		_, err := DecodeDispatch([]byte(tc.in))
		if tc.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("DecodeDispatch(%s) = %v", tc.in, err)
		}
		if err != nil && !errors.Is(err, ErrMalformedPayload) {
			t.Errorf("DecodeDispatch(%s) error is not ErrMalformedPayload: %v", tc.in, err)
		}
	}
	if _, err := DecodeDeliver([]byte(`{"v":1,"receipt_id":"x"}`)); !errors.Is(err, ErrMalformedPayload) {
		t.Errorf("DecodeDeliver: %v", err)
	}
}

// TestDecodeNewerPayload: a payload of a newer major version is told apart from a malformed
// one, even when its fields no longer fit this version's types.
func TestDecodeNewerPayload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		typ string
		in  string
	}{
		{TypeDispatch, `{"v":2,"dispatch_id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}`},
		{TypeDispatch, `{"v":3,"dispatch_id":{"id":1},"refs":"users/42"}`}, // shapes changed, version still read
		{TypeDeliver, `{"v":2,"receipt":{"id":"01a2203a-c569-7ae3-b0c8-f27792223ad5"}}`},
	} {
		var err error
		if tc.typ == TypeDispatch {
			_, err = DecodeDispatch([]byte(tc.in))
		} else {
			_, err = DecodeDeliver([]byte(tc.in))
		}
		var newer *NewerPayloadError
		if !errors.As(err, &newer) || newer.Type != tc.typ || newer.Understood != PayloadVersion || newer.Version < 2 {
			t.Errorf("decode %s %s = %v, want a *NewerPayloadError", tc.typ, tc.in, err)
		}
		if errors.Is(err, ErrMalformedPayload) {
			t.Errorf("decode %s %s: a newer payload is reported malformed: %v", tc.typ, tc.in, err)
		}
	}
}

func FuzzDecodeDispatch(f *testing.F) {
	good, _ := json.Marshal(DispatchPayload{V: 1, DispatchID: "01a2203a-c569-7ae3-b0c8-f27792223ad5", EventID: "a.b",
		Refs: []events.Ref{{Name: "user", Resource: "users", ID: "1"}}, Vars: json.RawMessage(`{"a":1.50}`)})
	f.Add(good)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"refs":{}}`))
	f.Add([]byte(`{"dispatch_id":"\u0000"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeDispatch(b)
		if err != nil {
			var newer *NewerPayloadError
			if errors.As(err, &newer) {
				if newer.Version <= PayloadVersion {
					t.Fatalf("version %d reported newer than %d", newer.Version, PayloadVersion)
				}
				return
			}
			if !errors.Is(err, ErrMalformedPayload) {
				t.Fatalf("error neither ErrMalformedPayload nor *NewerPayloadError: %v", err)
			}
			return
		}
		if p.V != PayloadVersion {
			t.Fatalf("accepted version %d", p.V)
		}
		if len(p.Vars) > 0 && !json.Valid(p.Vars) {
			t.Fatalf("accepted invalid vars %q", p.Vars)
		}
		if _, err := canon.Fingerprint(p.EventID, p.Refs, p.Vars); err != nil && len(p.Vars) > 0 && p.Vars[0] == '{' {
			t.Logf("fingerprint refuses %q: %v", p.Vars, err)
		}
	})
}
