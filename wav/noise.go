package wav

import (
	"encoding/binary"
	"math/rand/v2"
)

// Noise returns a telephone-rate recording of about n bytes (at least a
// header) whose samples are quiet random noise from rng. Unlike Silence
// and Tone it does not compress, so load tests that move it measure the
// bytes they claim to.
func Noise(n int, rng *rand.Rand) []byte {
	n = max(n, 44) &^ 1
	b := append(Header(Rate, n-44), make([]byte, n-44)...)
	for i := 44; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64()&0x0fff0fff0fff0fff)
	}
	return b
}
