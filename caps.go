package um

import (
	"fmt"
	"strings"
)

// storeCaps are the optional interfaces of a Service's store, found once by
// New along the store's Unwrap chain (see Unwrapper). A nil field is an
// interface the store does not implement.
type storeCaps struct {
	watcher   Watcher
	publisher Publisher
	counter   Counter
	expunger  Expunger
	limiter   Limiter
	modes     DeliveryModes
	condFlags ConditionalFlagger
}

func findCaps(s Store) storeCaps {
	var c storeCaps
	c.watcher, _ = StoreAs[Watcher](s)
	c.publisher, _ = StoreAs[Publisher](s)
	c.counter, _ = StoreAs[Counter](s)
	c.expunger, _ = StoreAs[Expunger](s)
	c.limiter, _ = StoreAs[Limiter](s)
	c.modes, _ = StoreAs[DeliveryModes](s)
	c.condFlags, _ = StoreAs[ConditionalFlagger](s)
	return c
}

// describeCaps says which optional interfaces the store chain of s has, for
// the one line New logs: a host that wrapped its store sees at start what
// um found through the wrapper.
func describeCaps(s Store) string {
	var found, missing []string
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"Watcher", has[Watcher](s)},
		{"Publisher", has[Publisher](s)},
		{"Counter", has[Counter](s)},
		{"Expunger", has[Expunger](s)},
		{"ModSeqer", has[ModSeqer](s)},
		{"FolderSubscriber", has[FolderSubscriber](s)},
		{"ConditionalFlagger", has[ConditionalFlagger](s)},
		{"Limiter", has[Limiter](s)},
		{"DeliveryModes", has[DeliveryModes](s)},
		{"Leaser", has[Leaser](s)},
		{"OutwardState", has[OutwardState](s)},
	} {
		if c.ok {
			found = append(found, c.name)
		} else {
			missing = append(missing, c.name)
		}
	}
	chain := fmt.Sprintf("%T", s)
	for u, ok := s.(Unwrapper); ok; u, ok = s.(Unwrapper) {
		if s = u.Unwrap(); s == nil || strings.Count(chain, " -> ") >= 100 {
			break
		}
		chain += fmt.Sprintf(" -> %T", s)
	}
	return fmt.Sprintf("store %s: optional interfaces found: %s; not implemented: %s",
		chain, strings.Join(orNone(found), " "), strings.Join(orNone(missing), " "))
}

func has[T any](s Store) bool {
	_, ok := StoreAs[T](s)
	return ok
}

func orNone(names []string) []string {
	if len(names) == 0 {
		return []string{"none"}
	}
	return names
}
