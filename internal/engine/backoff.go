package engine

import (
	"math/rand/v2"
	"time"
)

// Backoff is exponential with jitter between Min and Max: attempt n waits about Min·2^(n-1),
// uniformly jittered in its upper half, never more than Max.
type Backoff struct {
	Min time.Duration
	Max time.Duration
}

// Delay returns the wait before attempt+1, after attempt failed (attempt ≥ 1).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Min
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half+1) //nolint:gosec // jitter, not a secret
}
