// Package email delivers messages over SMTP with go-mail, on reused connections (one per
// concurrency slot, never a dial per message), as multipart/alternative HTML + text, with the
// receipt's stable Message-ID. A message counts as sent only when go-mail reports it delivered.
//
// Bounded attempts: one Send — dial, TLS, authentication, the message, and the one redial of a
// pooled connection the server closed — ends at SendTimeout or ctx's deadline, whichever comes
// first. go-mail alone applies a context to the TCP dial only; here every connection is wrapped
// so that its deadlines never pass the attempt's, and closed when the attempt's ctx is done.
//
// Classification (every failure is a *channels.Error):
//   - 4xx, network errors and dropped connections: temporary;
//   - other 5xx to a message (RCPT, DATA, the end of data): permanent;
//   - a reply lost after the final "." (a timeout, a dropped connection or a cancellation while
//     waiting for the answer to DATA): temporary and InDoubt — the server may have queued it;
//   - our configuration refused, the same for every message — authentication (530, 534, 535,
//     538, 5.7.8), a session refused at the greeting, EHLO/HELO or MAIL FROM (5xx), an untrusted
//     or invalid server certificate, STARTTLS required but not offered, the same 5.5.x refusal
//     of RCPT for recipients in three different domains in a row (see sessionBreaker):
//     temporary, with ConfigAlert and an error that names the fix.
//
// Settings beyond the URL's user, password, host, port, tls= and auth=: helo= (the EHLO name;
// default Config.HELO, which Herald sets to the Message-ID domain) and ca= (a PEM file of CAs to
// trust besides the system's, or Config.CAFile / HERALD_SMTP_CA_FILE).
//
// Message building cleans text (display names, subject, header values: control characters and
// line separators become spaces) and is strict with identifiers (addresses, Message-ID, header
// names), so no input adds a header or a recipient.
//
// It must not import asynq or Herald's engine; tests use emailtest, never production code.
package email
