package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Direction is one way through the proxy.
type Direction int

const (
	// ClientToServer is what the client (Herald) sends.
	ClientToServer Direction = iota
	// ServerToClient is what the server answers.
	ServerToClient
)

func (d Direction) String() string {
	if d == ServerToClient {
		return "server→client"
	}
	return "client→server"
}

type kind int

const (
	pass kind = iota
	refuse
	drop
	stall
	cut
)

// Mode is what the proxy does with connections: Pass, Refuse, Drop, Stall, or a cut made by
// CutAfter or CutOn. The zero Mode is Pass.
type Mode struct {
	kind    kind
	dir     Direction
	after   int64  // CutAfter: bytes allowed through in dir
	pattern []byte // CutOn: cut once this has gone through in dir
}

var (
	// Pass forwards both ways.
	Pass = Mode{kind: pass}
	// Refuse closes each new connection at once and cuts the live ones.
	Refuse = Mode{kind: refuse}
	// Drop cuts every live connection when it is set, then passes new ones (SetMode leaves the
	// proxy in Pass).
	Drop = Mode{kind: drop}
	// Stall accepts connections and forwards nothing, either way, until the mode changes.
	Stall = Mode{kind: stall}
)

// CutAfter lets n more bytes through in dir on each connection, counted from when the mode is
// set (or the connection opened, if later), then cuts it. The cut happens when the bytes that
// cross the limit arrive; an idle connection is not cut. The other direction passes.
func CutAfter(dir Direction, n int64) Mode { return Mode{kind: cut, dir: dir, after: max(n, 0)} }

// CutOn cuts each connection right after pattern went through in dir (counted from when the
// mode is set, or the connection opened), even when it arrives split across reads. The other
// direction passes. CutOn(ClientToServer, []byte("\r\n.\r\n")) loses an SMTP reply to DATA.
func CutOn(dir Direction, pattern []byte) Mode {
	if len(pattern) == 0 {
		return CutAfter(dir, 0)
	}
	return Mode{kind: cut, dir: dir, pattern: bytes.Clone(pattern)}
}

func (m Mode) String() string {
	switch m.kind {
	case refuse:
		return "refuse"
	case drop:
		return "drop"
	case stall:
		return "stall"
	case cut:
		if m.pattern != nil {
			return fmt.Sprintf("cut %s on %q", m.dir, m.pattern)
		}
		return fmt.Sprintf("cut %s after %d bytes", m.dir, m.after)
	}
	return "pass"
}

// Stats counts connections.
type Stats struct {
	Accepted int64 // accepted by the listener, refused ones included
	Refused  int64 // closed at once because the mode was Refuse (or the target did not answer)
	Cut      int64 // cut by Refuse, Drop or a cut mode
	Live     int   // open now
}

// Proxy is a TCP proxy to one target. It is safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // canceled by Close: aborts dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	mode    Mode
	gen     uint64        // bumped by each SetMode: cut modes count from it
	changed chan struct{} // closed by each SetMode: wakes stalled forwarders
	conns   map[*conn]struct{}
	stats   Stats
	closed  bool
}

// New starts a proxy on 127.0.0.1 (a free port) forwarding to target (host:port), in Pass.
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: want host:port: %w", target, err)
	}
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, cancel: cancel, changed: make(chan struct{}), conns: map[*conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Start is New for tests: it fails the test on error and closes the proxy at the end of it.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr is the proxy's address, host:port, to give the client instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// SetMode switches the mode; it takes effect at once on live and new connections.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.kind == refuse || m.kind == drop {
		for c := range p.conns {
			p.endLocked(c, true)
		}
	}
	if m.kind == drop {
		m = Pass
	}
	p.mode = m
	p.gen++
	close(p.changed)
	p.changed = make(chan struct{})
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Live = len(p.conns)
	return s
}

// Close stops listening, ends every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for c := range p.conns {
		p.endLocked(c, false)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.cancel()
	p.wg.Wait()
	return err
}

// conn is one proxied connection.
type conn struct {
	client, server net.Conn
	done           chan struct{} // closed when the connection ends
	ended          bool          // guarded by Proxy.mu
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed
		}
		p.wg.Add(1) // serve itself is counted, so Close's Wait cannot have returned yet
		go p.handle(c)
	}
}

// refused reports, under the lock, whether a new connection must be closed at once.
func (p *Proxy) refusedLocked() bool {
	if p.closed || p.mode.kind == refuse {
		p.stats.Refused++
		return true
	}
	return false
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	p.stats.Accepted++
	refused := p.refusedLocked()
	p.mu.Unlock()
	if refused {
		_ = client.Close()
		return
	}
	dctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	server, err := (&net.Dialer{}).DialContext(dctx, "tcp", p.target)
	cancel()
	if err != nil {
		p.mu.Lock()
		p.stats.Refused++
		p.mu.Unlock()
		_ = client.Close()
		return
	}
	c := &conn{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.refusedLocked() { // the mode changed while dialing
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(c, ClientToServer) }()
	go func() { defer wg.Done(); p.pipe(c, ServerToClient) }()
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// end closes both sides of c once; fault says whether the proxy cut it (counted in Stats.Cut).
func (p *Proxy) end(c *conn, fault bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLocked(c, fault)
}

func (p *Proxy) endLocked(c *conn, fault bool) {
	if c.ended {
		return
	}
	c.ended = true
	if fault {
		p.stats.Cut++
	}
	close(c.done)
	_ = c.client.Close()
	_ = c.server.Close()
}

// sever ends c as a cut, closing every side but keep (which the caller writes to once more and
// then closes).
func (p *Proxy) sever(c *conn, keep net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.ended {
		return
	}
	c.ended = true
	p.stats.Cut++
	close(c.done)
	if keep != c.client {
		_ = c.client.Close()
	}
	if keep != c.server {
		_ = c.server.Close()
	}
}

// pipe copies one direction of c until it ends. When either side ends (or fails), the whole
// connection ends: the protocols proxied here do not use half-closed connections.
func (p *Proxy) pipe(c *conn, dir Direction) {
	src, dst := c.client, c.server
	if dir == ServerToClient {
		src, dst = dst, src
	}
	var st cutState
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if ok, fault := p.forward(c, dir, &st, dst, buf[:n]); !ok {
				p.end(c, fault)
				return
			}
		}
		if err != nil {
			p.end(c, false)
			return
		}
	}
}

// forward writes b to dst as the mode allows. It returns ok=false when the connection must end,
// with fault=true when the proxy cuts it.
func (p *Proxy) forward(c *conn, dir Direction, st *cutState, dst net.Conn, b []byte) (ok, fault bool) {
	for {
		p.mu.Lock()
		m, gen, changed := p.mode, p.gen, p.changed
		p.mu.Unlock()
		switch {
		case m.kind == stall:
			select {
			case <-changed:
				continue
			case <-c.done:
				return false, false
			}
		case m.kind == refuse:
			return false, true
		case m.kind == cut && m.dir == dir:
			if st.gen != gen {
				*st = cutState{gen: gen}
			}
			n, hit := st.allow(m, b)
			if hit {
				// Sever the way back first, so that no answer to these last bytes can get through
				// (an SMTP server answers the final "." within microseconds), then deliver them.
				p.sever(c, dst)
				if n > 0 {
					_, _ = dst.Write(b[:n])
				}
				_ = dst.Close()
				return false, true
			}
			if n > 0 {
				if _, err := dst.Write(b[:n]); err != nil {
					return false, false
				}
			}
			return true, false
		}
		_, err := dst.Write(b)
		return err == nil, false
	}
}

// cutState is one direction's progress towards a cut, for the mode of generation gen.
type cutState struct {
	gen  uint64
	n    int64  // bytes through so far
	tail []byte // the last len(pattern)-1 bytes through, to find a pattern split across reads
}

// allow returns how many bytes of b go through, and whether the connection is then cut.
func (st *cutState) allow(m Mode, b []byte) (int, bool) {
	if m.pattern == nil {
		left := m.after - st.n
		if int64(len(b)) < left {
			st.n += int64(len(b))
			return len(b), false
		}
		st.n = m.after
		return int(left), true
	}
	seen := append(st.tail, b...)
	if i := bytes.Index(seen, m.pattern); i >= 0 {
		return i + len(m.pattern) - len(st.tail), true
	}
	keep := min(len(seen), len(m.pattern)-1)
	st.tail = bytes.Clone(seen[len(seen)-keep:])
	return len(b), false
}

// String describes the proxy for test logs.
func (p *Proxy) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return "faultproxy " + p.Addr() + " → " + p.target + " (" + p.mode.String() + ", " + strconv.Itoa(len(p.conns)) + " live)"
}
