package boltstore

import (
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/storetest"
)

// openStore opens a store in a new temporary directory, closed at cleanup.
func openStore(t testing.TB) *Store {
	t.Helper()
	return openAt(t, t.TempDir())
}

func openAt(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Suite{
		New: func(t testing.TB) um.Store { return openStore(t) },
		Reopen: func(t testing.TB, s um.Store) um.Store {
			dir := s.(*Store).dir
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openAt(t, dir)
		},
	}.Run(t)
}
