package email

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestBoundConnClampsDeadlines: a deadline go-mail sets past the attempt's limit (or none) is
// clamped to the limit; unbound, it is left alone; a failed write is remembered until the next
// bind.
func TestBoundConnClampsDeadlines(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer func() { _ = server.Close() }()
	c := &boundConn{Conn: client}
	c.bind(time.Now().Add(50 * time.Millisecond))
	if err := c.SetDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want the clamped deadline to pass", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a one-hour deadline was not clamped to the attempt's limit")
	}
	if c.writeFailed() {
		t.Fatal("no write failed yet")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write past the deadline succeeded")
	}
	if !c.writeFailed() {
		t.Fatal("the failed write was not remembered")
	}
	c.bind(time.Time{})
	if c.writeFailed() || !c.clamp(time.Time{}).IsZero() {
		t.Fatal("an unbound connection keeps the old attempt's state")
	}
	_ = c.Close()
}

// TestDialAfterTheAttemptEndedFails: a dial that finds the attempt ended (its context done)
// returns an error, whatever context go-mail dialed with. It returned no connection and no error
// when that context was still live, and go-mail dereferenced the nil connection: a panic in
// TestLostReplyAfterDataIsInDoubt.
func TestDialAfterTheAttemptEndedFails(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	sl := &slot{ended: true}
	conn, err := sl.dialer(nil)(context.Background(), "tcp", ln.Addr().String())
	if err == nil || conn != nil {
		t.Fatalf("dial after the attempt ended = %v, %v; want an error and no connection", conn, err)
	}
}
