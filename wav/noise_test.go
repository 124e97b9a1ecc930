package wav_test

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/embeddedum/um/wav"
)

func TestNoise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	n := 44 + 2*wav.Rate // one second of 16-bit samples
	b := wav.Noise(n, rng)
	if len(b) != n {
		t.Fatalf("len(Noise(%d)) = %d, want %d", n, len(b), n)
	}
	if d, err := wav.Duration(b); err != nil || d != time.Second {
		t.Fatalf("Duration(Noise) = %v, %v, want 1s", d, err)
	}
	if bytes.Equal(b[44:1044], make([]byte, 1000)) {
		t.Fatal("Noise gave silence, want noise")
	}
}
