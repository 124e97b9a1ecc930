package main

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/embeddedum/um"
)

// BenchmarkDepositCommand measures one "deposit" line as the PBX runs it on
// its default store (boltstore, fsync per commit): parse, render the tone,
// store durably, publish, run the MWI hook and write the answer.
func BenchmarkDepositCommand(b *testing.B) {
	ctx := context.Background()
	store, err := openStore(ctx, &config{}, filepath.Join(b.TempDir(), "store"), b.Logf)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	out := &output{w: io.Discard}
	svc, err := um.New(store, &um.Options{MWI: out.mwi})
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.EnsureMailbox(ctx, "1001"); err != nil {
		b.Fatal(err)
	}
	p := &phone{svc: svc, out: out}
	line := []string{"deposit", "1001", "5551234", "Alice"}
	b.ResetTimer()
	for range b.N {
		// Each deposit changes the counts, so the MWI hook runs every time.
		if _, err := p.exec(ctx, line); err != nil {
			b.Fatal(err)
		}
		svc.FlushMWI()
	}
}
