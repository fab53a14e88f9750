// Package welcome is the README's "Writing an event and running your own worker", complete: the
// Welcome event (accounts.welcome) with its templates, and the loader of the users it greets.
// cmd/welcome-worker runs it on herald.Run; cmd/welcome-producer dispatches it. The README
// quotes these files verbatim, and readme_test.go keeps it so.
//
// It imports events and pgx only: no asynq, no engine (programs built on herald live in cmd/).
package welcome
