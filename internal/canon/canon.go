// Package canon holds the rules a dispatch's arguments follow wherever they enter Herald (the
// client, the HTTP API, a worker's first sight of a payload): the canonical JSON form of the
// variables, the fingerprint idempotency compares, and what text PostgreSQL can store.
//
// It imports the standard library and events only.
package canon

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/heraldhq/herald/events"
)

// Vars re-encodes vars as canonical JSON: sorted keys, numbers kept exactly as given.
func Vars(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return json.RawMessage("{}"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("variables must be a JSON object: %w", err)
	}
	if v == nil {
		v = map[string]any{}
	}
	return json.Marshal(v)
}

// Fingerprint identifies a dispatch's arguments for idempotency: the event, the references and
// the non-secret variables, as canonical JSON.
func Fingerprint(eventID string, refs []events.Ref, vars json.RawMessage) (string, error) {
	cv, err := Vars(vars)
	if err != nil {
		return "", err
	}
	if refs == nil {
		refs = []events.Ref{}
	}
	b, err := json.Marshal(struct {
		E string          `json:"e"`
		R []events.Ref    `json:"r"`
		V json.RawMessage `json:"v"`
	}{eventID, refs, cv})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Text refuses text PostgreSQL cannot store: NUL characters (text and jsonb refuse them)
// and invalid UTF-8 (which JSON encoding would silently replace).
func Text(what, s string) error {
	if strings.ContainsRune(s, 0) {
		return fmt.Errorf("%s contains a NUL character, which PostgreSQL cannot store", what)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8", what)
	}
	return nil
}

// JSON refuses a JSON document holding a string (key or value) with a NUL character:
// jsonb refuses \u0000 with SQLSTATE 22P05.
func JSON(raw json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	return walkStrings(v, "")
}

func walkStrings(v any, path string) error {
	switch v := v.(type) {
	case string:
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("the value at %q contains a NUL character, which PostgreSQL cannot store", orDot(path))
		}
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) {
				return fmt.Errorf("a key under %q contains a NUL character, which PostgreSQL cannot store", orDot(path))
			}
			if err := walkStrings(e, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := walkStrings(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// GoValue refuses invalid UTF-8 in the strings of a variable's Go value before JSON encoding
// would silently replace it (and so change the value). Other types are checked after encoding.
func GoValue(v any, path string) error {
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return fmt.Errorf("the value at %q is not valid UTF-8", path)
		}
	case []string:
		for i, e := range v {
			if err := GoValue(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := GoValue(e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range v {
			if err := Text("a key under "+path, k); err != nil {
				return err
			}
			if err := GoValue(e, path+"."+k); err != nil {
				return err
			}
		}
	case map[string]string:
		for k, e := range v {
			if err := GoValue(e, path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

func orDot(path string) string {
	if path == "" {
		return "."
	}
	return path
}
