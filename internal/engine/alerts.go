package engine

import "sync"

// alerts raises a transport's configuration alert once, not once per delivery: the first
// refusal of our session, credentials or TLS settings is logged at error level (it needs a
// person); the deliveries that follow are retried quietly until one is sent, which clears it.
type alerts struct {
	mu     sync.Mutex
	raised map[string]bool
}

// raise reports whether the alert for transport should be logged now (it was not raised yet).
func (a *alerts) raise(transport string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.raised[transport] {
		return false
	}
	if a.raised == nil {
		a.raised = map[string]bool{}
	}
	a.raised[transport] = true
	return true
}

// clear re-arms the alert of transport after a delivery on it succeeded.
func (a *alerts) clear(transport string) {
	a.mu.Lock()
	delete(a.raised, transport)
	a.mu.Unlock()
}
