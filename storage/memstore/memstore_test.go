package memstore_test

import (
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/storage/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t testing.TB) um.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestVanishedForgets(t *testing.T) {
	defer memstore.SetVanishedKept(20)()
	storetest.VanishedForgets(t, memstore.New(), 20)
}
