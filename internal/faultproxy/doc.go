// Package faultproxy is a small in-process TCP proxy for fault tests. Placed between Herald and
// its real PostgreSQL, Redis or SMTP server, it breaks the path on demand, so the fault suite
// runs against shared servers too and never stops or restarts a server it did not start.
//
// A Proxy listens on 127.0.0.1 (a free port) and forwards every connection to its target. Its
// Mode is switched at run time, from any goroutine:
//
//   - Pass forwards both ways (the start mode);
//   - Refuse closes new connections as soon as they are accepted and cuts the live ones: the
//     server looks unreachable;
//   - Drop cuts every live connection once, then passes new ones: a network blip;
//   - Stall accepts and holds: nothing is forwarded either way until the mode changes (the held
//     bytes then flow): a server or network that hangs;
//   - CutAfter(dir, n) and CutOn(dir, pattern) cut each connection once n more bytes, or the
//     pattern, have gone through in that direction, for example an SMTP session cut right after
//     the client sent the final "\r\n.\r\n" and before it reads the reply.
//
// To cut is to close both sides of a connection. Stats counts accepted, refused and cut
// connections. Close ends everything. Use Start in tests:
//
//	direct := testenv.DatabaseURL(t)
//	p := faultproxy.Start(t, testenv.Target(t, direct))
//	cfg.DatabaseURL = testenv.Via(t, direct, p.Addr()) // Herald goes through the proxy
//	…
//	p.SetMode(faultproxy.Refuse) // PostgreSQL is away
//	…
//	p.SetMode(faultproxy.Pass) // and back
//
// It is test tooling: production code never imports it. It imports the standard library only.
package faultproxy
