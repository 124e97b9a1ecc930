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
