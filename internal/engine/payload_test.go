package engine

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: 5 * time.Second, Max: 10 * time.Minute}
	for _, tc := range []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{1, 2500 * time.Millisecond, 5 * time.Second},
		{2, 5 * time.Second, 10 * time.Second},
		{3, 10 * time.Second, 20 * time.Second},
		{8, 5 * time.Minute, 10 * time.Minute},
		{30, 5 * time.Minute, 10 * time.Minute},
	} {
		for range 50 {
			if d := b.Delay(tc.attempt); d < tc.lo || d > tc.hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", tc.attempt, d, tc.lo, tc.hi)
			}
		}
	}
}

func TestRoundUp(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	for in, want := range map[time.Time]time.Time{
		base:                             base,
		base.Add(time.Nanosecond):        base.Add(time.Second),
		base.Add(999 * time.Millisecond): base.Add(time.Second),
	} {
		if got := roundUp(in); !got.Equal(want) {
			t.Errorf("roundUp(%v) = %v, want %v", in, got, want)
		}
	}
}
