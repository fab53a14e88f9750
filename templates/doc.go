// Package templates renders events' co-located templates: "email.html.tmpl" with html/template
// (everything from data is escaped) inside one HTML layout that receives the subject, and
// "email.text.tmpl" with text/template. Templates are parsed once, when the renderer is built
// from the registry, so a template error stops the worker at start-up, not at send time.
//
// It imports events and the standard library only.
package templates
