package seal

import (
	"errors"
	"strings"
	"testing"
)

func TestSealOpenRotate(t *testing.T) {
	t.Parallel()
	k1, _ := GenerateKey("k1")
	k2, _ := GenerateKey("k2")
	old, err := ParseKeys(k1)
	if err != nil {
		t.Fatal(err)
	}
	s, err := old.Seal("tok-123", AAD("d1", "reset_token"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "tok-123") || !strings.HasPrefix(s, "v1.k1.") {
		t.Fatalf("sealed = %q", s)
	}
	rotated, err := ParseKeys(k2 + "," + k1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(s, AAD("d1", "reset_token")); err != nil || got != "tok-123" {
		t.Fatalf("open after rotation = %q, %v", got, err)
	}
	if s2, _ := rotated.Seal("x", "a"); !strings.HasPrefix(s2, "v1.k2.") {
		t.Fatalf("new values must use the first key: %q", s2)
	}
	if _, err := rotated.Open(s, AAD("d2", "reset_token")); !errors.Is(err, ErrOpen) {
		t.Fatalf("swapped aad opened: %v", err)
	}
	only2, _ := ParseKeys(k2)
	if _, err := only2.Open(s, AAD("d1", "reset_token")); !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), `"k1"`) {
		t.Fatalf("unknown kid: %v", err)
	}
}

func TestParseKeysErrorsNeverEchoKey(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"", "nokid", "k1:!!!notbase64!!!", "k1:c2hvcnQ=", "bad kid:AAAA", "k1:" + strings.Repeat("A", 44) + ",k1:" + strings.Repeat("A", 44)} {
		_, err := ParseKeys(spec)
		if err == nil {
			t.Errorf("ParseKeys(%q) accepted", spec)
			continue
		}
		if strings.Contains(err.Error(), "c2hvcnQ") || strings.Contains(err.Error(), "notbase64") || strings.Contains(err.Error(), "AAAAAAAA") {
			t.Errorf("error echoes the key: %v", err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := GenerateKey("k1")
	ring, _ := ParseKeys(k)
	s, _ := ring.Seal("v", "a")
	f.Add(s)
	f.Add("v1.k1.")
	f.Add("v1..AAAA")
	f.Fuzz(func(t *testing.T, in string) {
		if _, err := ring.Open(in, "a"); err != nil && !errors.Is(err, ErrOpen) {
			t.Fatalf("Open(%q) error not ErrOpen: %v", in, err)
		}
	})
}
