package canon

import (
	"encoding/json"
	"testing"

	"github.com/heraldhq/herald/events"
)

func TestFingerprintCanonical(t *testing.T) {
	t.Parallel()
	refs := []events.Ref{{Name: "user", Resource: "users", ID: "1"}}
	a, _ := Fingerprint("a.b", refs, json.RawMessage(`{"x":1,"y":"z"}`))
	b, _ := Fingerprint("a.b", refs, json.RawMessage(`{ "y":"z", "x":1 }`))
	c, _ := Fingerprint("a.b", refs, json.RawMessage(`{"x":1.0,"y":"z"}`))
	d, _ := Fingerprint("a.c", refs, json.RawMessage(`{"x":1,"y":"z"}`))
	if a != b {
		t.Error("key order or spacing changed the fingerprint")
	}
	if a == c {
		t.Error("1 and 1.0 must differ: numbers are kept exactly as given")
	}
	if a == d {
		t.Error("the event id is not in the fingerprint")
	}
	if _, err := Fingerprint("a.b", refs, json.RawMessage(`[1]`)); err == nil {
		t.Error("non-object variables accepted")
	}
}
