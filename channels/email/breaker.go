package email

import (
	"strings"
	"sync"
)

// breakerDomains is how many different recipient domains must get the same 5.5.x refusal of
// RCPT in a row before the Sender takes it for a refusal of its session.
const breakerDomains = 3

// A sessionBreaker tells a relay that refuses our session at RCPT time from one that refuses a
// recipient.
//
// Postfix applies its HELO and client restrictions at RCPT by default (smtpd_delay_reject), so a
// HELO name it dislikes comes back as "504 5.5.2" to every RCPT, as if every recipient were bad.
// The rule, per Sender:
//   - the same 5.5.x reply to RCPT for recipients in 3 different domains in a row opens the
//     breaker: that refusal, and every 5.5.x refusal of RCPT while the breaker is open, is a
//     refusal of the session — temporary, and a configuration alert;
//   - a message that goes through closes it;
//   - until a first message went through (since the start, or since the breaker last opened), a
//     5.5.x refusal of RCPT is temporary: whose fault it is is not known yet;
//   - after that, it is the recipient's, like any other refusal of RCPT (a 5.7.1 to a single
//     recipient stays a permanent, per-recipient failure).
type sessionBreaker struct {
	mu       sync.Mutex
	proven   bool // a message went through since the start or since the breaker last opened
	open     bool
	code     int
	enhanced string
	domains  map[string]bool
}

type verdict int

const (
	recipientRefused verdict = iota // the recipient's failure, classified by its code
	undecided                       // temporary: not known yet whether the session is refused
	sessionRefused                  // temporary, and a configuration alert
)

// rcptRefused records a refusal of RCPT for recipient and says whose failure it is.
func (b *sessionBreaker) rcptRefused(code int, enhanced, recipient string) verdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	if code < 500 || !strings.HasPrefix(enhanced, "5.5.") {
		b.code, b.enhanced, b.domains = 0, "", nil // a different reply breaks the streak
		return recipientRefused
	}
	if code != b.code || enhanced != b.enhanced {
		b.code, b.enhanced, b.domains = code, enhanced, map[string]bool{}
	}
	b.domains[strings.ToLower(recipient[strings.LastIndex(recipient, "@")+1:])] = true
	switch {
	case b.open || len(b.domains) >= breakerDomains:
		b.open, b.proven = true, false
		return sessionRefused
	case !b.proven:
		return undecided
	}
	return recipientRefused
}

// delivered records a message that went through: the session works.
func (b *sessionBreaker) delivered() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open, b.proven = false, true
	b.code, b.enhanced, b.domains = 0, "", nil
}
