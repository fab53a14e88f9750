// Package events defines what an application tells Herald about: events, their channels and
// recipients, the dispatch that carries one occurrence, data references and the loaders that
// hydrate them, secret variables, sample data for previews, and the registry of event types.
//
// An event type implements the three methods of [Event]. Everything else is an optional
// interface checked by type assertion (the way net/http checks for http.Flusher), its default
// documented beside it, so adding a capability never breaks existing event types.
//
// This package imports the standard library only.
package events
