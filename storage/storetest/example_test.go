package storetest_test

import (
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/storage/storetest"
)

// newStore opens a fresh, empty store for one subtest, in a directory of
// the subtest's own, and closes it when the subtest ends. A host with a
// store of its own opens that instead.
func newStore(t testing.TB) um.Store {
	s, err := boltstore.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A store package, or a host that brings its own store, runs the suite from
// a test in one of its _test.go files:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, newStore)
//	}
//
// Run needs the *testing.T of a test, so this example only compiles
// newStore against the NewStore type.
func ExampleRun() {
	var _ storetest.NewStore = newStore
}

// A durable store passes Reopen too, so that the suite checks what must
// survive a restart; a store that several nodes share passes Peer, which
// opens a second Store value on the same data:
//
//	func TestConformance(t *testing.T) {
//		storetest.Suite{New: newStore, Reopen: reopen, Peer: peer}.Run(t)
//	}
func ExampleSuite() {
	_ = storetest.Suite{
		New: newStore,
		Reopen: func(t testing.TB, s um.Store) um.Store {
			dir := "..." // where newStore opened s; a real test keeps it
			s.Close()
			s, err := boltstore.Open(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
}
