// Package email delivers messages over SMTP with go-mail, on reused connections (one per
// concurrency slot, never a dial per message), as multipart/alternative HTML + text, with the
// receipt's stable Message-ID. It classifies failures: 4xx, network errors, dropped connections
// and authentication/configuration errors (530, 534, 535, 538, 5.7.8) are temporary — the last
// group flagged as a configuration alert — other 5xx are permanent. A message counts as sent
// only when go-mail reports it delivered.
package email
