package testenv

import (
	"testing"
	"time"
)

// WaitFor polls cond every 25ms until it holds, and fails the test when timeout passes first:
// the way Herald's tests wait for something to happen, never a bare sleep.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
