// Package channeltest is the conformance suite every Herald transport passes: what a Sender
// must do whatever it talks to.
package channeltest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/channels"
)

// Delivered is what the transport's far end received, as the suite checks it.
type Delivered struct {
	MessageID string
	To        string
	Subject   string
	HTML      string
	Text      string
}

// Harness gives the suite a sender and a way to read what arrived.
type Harness struct {
	Sender channels.Sender
	// Received returns the messages delivered so far.
	Received func(t *testing.T) []Delivered
}

// Run runs the suite. newHarness is called once per subtest.
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	t.Run("DeliversContentAndMessageID", func(t *testing.T) {
		h := newHarness(t)
		m := message(1)
		if _, err := h.Sender.Send(context.Background(), m); err != nil {
			t.Fatalf("Send: %v", err)
		}
		got := waitFor(t, h, 1)
		d := got[0]
		if !strings.Contains(d.MessageID, strings.Trim(m.MessageID, "<>")) {
			t.Errorf("Message-ID = %q, want %q", d.MessageID, m.MessageID)
		}
		if !strings.EqualFold(d.To, m.To) && !strings.Contains(d.To, m.To) {
			t.Errorf("To = %q, want %q", d.To, m.To)
		}
		if d.Subject != m.Subject {
			t.Errorf("Subject = %q, want %q", d.Subject, m.Subject)
		}
		if !strings.Contains(d.HTML, "<p>hello 1 &amp; welcome</p>") {
			t.Errorf("HTML = %q", d.HTML)
		}
		if !strings.Contains(d.Text, "hello 1 & welcome") {
			t.Errorf("Text = %q", d.Text)
		}
	})
	t.Run("ConcurrentSends", func(t *testing.T) {
		h := newHarness(t)
		const n = 12
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				if _, err := h.Sender.Send(context.Background(), message(i)); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Send: %v", err)
		}
		got := waitFor(t, h, n)
		seen := map[string]bool{}
		for _, d := range got {
			seen[d.Subject] = true
		}
		if len(seen) != n {
			t.Errorf("%d distinct messages arrived, want %d", len(seen), n)
		}
	})
	t.Run("CanceledContext", func(t *testing.T) {
		h := newHarness(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		// A transport may have delivered before noticing; it must not claim success it cannot
		// know about, and it must return promptly.
		done := make(chan error, 1)
		go func() { _, err := h.Sender.Send(ctx, message(99)); done <- err }()
		select {
		case err := <-done:
			if err == nil && len(h.Received(t)) == 0 {
				t.Fatal("Send with a canceled context reported success but nothing arrived")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Send ignored its canceled context")
		}
	})
}

func message(i int) channels.Message {
	id := fmt.Sprintf("00000000-0000-7000-8000-%012d", i) // receipt ids are UUIDs
	return channels.Message{
		ReceiptID: id,
		MessageID: "<" + id + "@herald.test>",
		From:      "sender@herald.test",
		FromName:  "Herald",
		To:        fmt.Sprintf("user%d@example.net", i),
		ToName:    "User",
		Subject:   fmt.Sprintf("Conformance %d", i),
		HTML:      fmt.Sprintf("<p>hello %d &amp; welcome</p>", i),
		Text:      fmt.Sprintf("hello %d & welcome", i),
	}
}

func waitFor(t *testing.T, h Harness, n int) []Delivered {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := h.Received(t)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d message(s) arrived, want %d", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
