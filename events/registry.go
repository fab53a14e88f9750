package events

import (
	"fmt"
	"sort"
	"sync"
)

// Registry holds the event types and loaders a worker knows. It is safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	events  map[string]Event
	loaders map[string]Loader
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{events: map[string]Event{}, loaders: map[string]Loader{}}
}

// Register adds events. A malformed or duplicate id is an error and nothing is added.
func (r *Registry) Register(evs ...Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev == nil {
			return fmt.Errorf("register: nil event")
		}
		id := ev.ID()
		if err := ValidateID(id); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		if _, dup := r.events[id]; dup || seen[id] {
			return fmt.Errorf("register: event %q is already registered", id)
		}
		seen[id] = true
	}
	for _, ev := range evs {
		r.events[ev.ID()] = ev
	}
	return nil
}

// MustRegister is Register that panics, for package-level wiring.
func (r *Registry) MustRegister(evs ...Event) {
	if err := r.Register(evs...); err != nil {
		panic(err)
	}
}

// RegisterLoader sets the loader for references to resource.
func (r *Registry) RegisterLoader(resource string, l Loader) error {
	if !refName.MatchString(resource) || l == nil {
		return fmt.Errorf("register loader %q: want a resource name and a non-nil loader", resource)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.loaders[resource]; dup {
		return fmt.Errorf("register loader: resource %q already has a loader", resource)
	}
	r.loaders[resource] = l
	return nil
}

// Lookup returns the event with id.
func (r *Registry) Lookup(id string) (Event, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ev, ok := r.events[id]
	if !ok {
		return nil, fmt.Errorf("event %q: %w", id, ErrUnknownEvent)
	}
	return ev, nil
}

// Loader returns the loader for resource.
func (r *Registry) Loader(resource string) (Loader, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	l, ok := r.loaders[resource]
	return l, ok
}

// Events returns the registered events sorted by id.
func (r *Registry) Events() []Event {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Event, 0, len(r.events))
	for _, ev := range r.events {
		out = append(out, ev)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}
