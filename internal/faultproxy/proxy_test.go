package faultproxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/faultproxy"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const greeting = "220 ready\r\n"

// echoServer greets each connection, then echoes what it reads and records it.
type echoServer struct {
	addr  string
	conns chan *echoConn
}

type echoConn struct {
	mu   sync.Mutex
	got  []byte
	done chan struct{} // closed when the server side saw the connection end
}

func (c *echoConn) received() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got)
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{addr: ln.Addr().String(), conns: make(chan *echoConn, 16)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			ec := &echoConn{done: make(chan struct{})}
			select {
			case s.conns <- ec:
			default: // nobody is looking at this many connections
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(ec.done)
				defer nc.Close()
				if _, err := nc.Write([]byte(greeting)); err != nil {
					return
				}
				buf := make([]byte, 4096)
				for {
					n, err := nc.Read(buf)
					if n > 0 {
						ec.mu.Lock()
						ec.got = append(ec.got, buf[:n]...)
						ec.mu.Unlock()
						if _, err := nc.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// next returns the server side of the next connection.
func (s *echoServer) next(t *testing.T) *echoConn {
	t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the echo server got no connection")
		return nil
	}
}

func dial(t *testing.T, p *faultproxy.Proxy) net.Conn {
	t.Helper()
	c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readN reads exactly len(want) bytes and compares them.
func readN(t *testing.T, c net.Conn, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// readsEnd reads until the connection ends and returns what came before; the end must come.
func readsEnd(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection did not end (read %q)", got)
	}
	return string(got)
}

// silent checks that nothing arrives on c for a while (a stalled path), then clears the deadline.
func silent(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	b := make([]byte, 64)
	n, err := c.Read(b)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a stalled path delivered %q (%v)", b[:n], err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func ended(t *testing.T, ec *echoConn) {
	t.Helper()
	select {
	case <-ec.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server side of the connection did not end")
	}
}

func TestModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(t *testing.T, p *faultproxy.Proxy, srv *echoServer)
		want faultproxy.Stats // Live is not compared
	}{
		{
			name: "pass forwards both ways",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				c := dial(t, p)
				readN(t, c, greeting)
				write(t, c, "ping")
				readN(t, c, "ping")
			},
			want: faultproxy.Stats{Accepted: 1},
		},
		{
			name: "refuse closes new connections at once and never reaches the server",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				p.SetMode(faultproxy.Refuse)
				if got := readsEnd(t, dial(t, p)); got != "" {
					t.Fatalf("a refused connection read %q", got)
				}
				select {
				case <-srv.conns:
					t.Fatal("a refused connection reached the server")
				default:
				}
			},
			want: faultproxy.Stats{Accepted: 1, Refused: 1},
		},
		{
			name: "refuse cuts live connections, pass lets new ones through again",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				c := dial(t, p)
				readN(t, c, greeting)
				ec := srv.next(t)
				p.SetMode(faultproxy.Refuse)
				readsEnd(t, c)
				ended(t, ec)
				readsEnd(t, dial(t, p))
				p.SetMode(faultproxy.Pass)
				c = dial(t, p)
				readN(t, c, greeting)
				write(t, c, "back")
				readN(t, c, "back")
			},
			want: faultproxy.Stats{Accepted: 3, Refused: 1, Cut: 1},
		},
		{
			name: "drop cuts live connections once and passes new ones",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				a, b := dial(t, p), dial(t, p)
				readN(t, a, greeting)
				readN(t, b, greeting)
				p.SetMode(faultproxy.Drop)
				readsEnd(t, a)
				readsEnd(t, b)
				c := dial(t, p)
				readN(t, c, greeting)
				write(t, c, "again")
				readN(t, c, "again")
			},
			want: faultproxy.Stats{Accepted: 3, Cut: 2},
		},
		{
			name: "stall holds both directions until the mode changes",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				live := dial(t, p)
				readN(t, live, greeting)
				ec := srv.next(t)
				p.SetMode(faultproxy.Stall)
				fresh := dial(t, p) // the server's greeting is held
				silent(t, fresh)
				write(t, live, "held") // the client's bytes are held
				silent(t, live)
				if got := ec.received(); len(got) != 0 {
					t.Fatalf("the server received %q during a stall", got)
				}
				p.SetMode(faultproxy.Pass)
				readN(t, fresh, greeting)
				readN(t, live, "held")
			},
			want: faultproxy.Stats{Accepted: 2},
		},
		{
			name: "cut after n bytes from the client: the server gets exactly n",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				c := dial(t, p)
				readN(t, c, greeting)
				ec := srv.next(t)
				p.SetMode(faultproxy.CutAfter(faultproxy.ClientToServer, 5))
				write(t, c, "abc")
				readN(t, c, "abc")
				p.SetMode(faultproxy.CutAfter(faultproxy.ClientToServer, 5)) // counts afresh
				write(t, c, "hello world")
				readsEnd(t, c)
				ended(t, ec)
				if got := string(ec.received()); got != "abchello" {
					t.Fatalf("the server received %q, want %q", got, "abchello")
				}
			},
			want: faultproxy.Stats{Accepted: 1, Cut: 1},
		},
		{
			name: "cut after n bytes from the server: the client gets exactly n",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				p.SetMode(faultproxy.CutAfter(faultproxy.ServerToClient, 3))
				c := dial(t, p)
				if got := readsEnd(t, c); got != greeting[:3] {
					t.Fatalf("the client read %q, want %q", got, greeting[:3])
				}
			},
			want: faultproxy.Stats{Accepted: 1, Cut: 1},
		},
		{
			name: "cut on a pattern split across writes: the server gets it, nothing after",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				c := dial(t, p)
				readN(t, c, greeting)
				ec := srv.next(t)
				p.SetMode(faultproxy.CutOn(faultproxy.ClientToServer, []byte("\r\n.\r\n")))
				write(t, c, "DATA\r\nbody\r\n.")
				readN(t, c, "DATA\r\nbody\r\n.") // through, and echoed: the pattern is incomplete
				write(t, c, "\r\nQUIT\r\n")
				readsEnd(t, c)
				ended(t, ec)
				if got, want := string(ec.received()), "DATA\r\nbody\r\n.\r\n"; got != want {
					t.Fatalf("the server received %q, want %q", got, want)
				}
			},
			want: faultproxy.Stats{Accepted: 1, Cut: 1},
		},
		{
			name: "a cut mode cuts each new connection, pass ends it",
			run: func(t *testing.T, p *faultproxy.Proxy, srv *echoServer) {
				p.SetMode(faultproxy.CutOn(faultproxy.ServerToClient, []byte("ready")))
				for range 2 {
					if got := readsEnd(t, dial(t, p)); got != "220 ready" {
						t.Fatalf("read %q", got)
					}
				}
				p.SetMode(faultproxy.Pass)
				c := dial(t, p)
				readN(t, c, greeting)
			},
			want: faultproxy.Stats{Accepted: 3, Cut: 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startEcho(t)
			p := faultproxy.Start(t, srv.addr)
			tt.run(t, p, srv)
			got := p.Stats()
			got.Live = 0
			if got != tt.want {
				t.Errorf("stats %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestCloseEndsEverything is not parallel: it also checks that no goroutine of the proxy
// outlives Close (the paused parallel tests' goroutines are ignored).
func TestCloseEndsEverything(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last
	srv := startEcho(t)
	p, err := faultproxy.New(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	live := dial(t, p)
	readN(t, live, greeting)
	p.SetMode(faultproxy.Stall)
	stalled := dial(t, p)
	silent(t, stalled)
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: it must end live and stalled connections")
	}
	readsEnd(t, live)
	readsEnd(t, stalled)
	if s := p.Stats(); s.Live != 0 {
		t.Fatalf("%d connections live after Close", s.Live)
	}
	if c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.Addr()); err == nil {
		_ = c.Close()
		t.Fatal("the proxy still accepts connections after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

func TestUnreachableTarget(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p := faultproxy.Start(t, dead)
	readsEnd(t, dial(t, p))
	if s := p.Stats(); s.Accepted != 1 || s.Refused != 1 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := faultproxy.New("no-port"); err == nil {
		t.Fatal("New accepted a target without a port")
	}
}

func TestConcurrentModeChanges(t *testing.T) {
	t.Parallel()
	srv := startEcho(t)
	p := faultproxy.Start(t, srv.addr)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.Addr())
				if err != nil {
					continue
				}
				_ = c.SetDeadline(time.Now().Add(time.Second))
				_, _ = c.Write([]byte("x"))
				_, _ = io.ReadAll(c)
				_ = c.Close()
			}
		}()
	}
	modes := []faultproxy.Mode{faultproxy.Stall, faultproxy.Refuse, faultproxy.Drop, faultproxy.Pass,
		faultproxy.CutAfter(faultproxy.ServerToClient, 4), faultproxy.CutOn(faultproxy.ClientToServer, []byte("x"))}
	for i := range 300 {
		p.SetMode(modes[i%len(modes)])
		_ = p.Stats()
	}
	p.SetMode(faultproxy.Pass)
	cancel()
	wg.Wait()
	c := dial(t, p)
	readN(t, c, greeting)
	write(t, c, "ok")
	readN(t, c, "ok")
}
