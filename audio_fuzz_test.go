package um

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/embeddedum/um/wav"
)

// FuzzCheckRecording: whatever the type and bytes, checkRecording does not
// panic; what it accepts it hands on byte for byte (or fails the read with
// ErrBadAudio, for a WAV shorter than its header), with an audio type and
// a length that is never negative.
func FuzzCheckRecording(f *testing.F) {
	f.Add("audio/wav", wav.Tone(time.Second))
	f.Add("audio/vnd.wave; codecs=1", wav.Silence(100*time.Millisecond))
	f.Add("audio/ogg", []byte("OggS\x00\x02rest"))
	f.Add("audio/basic", []byte{0xFF, 0xFF, 0xFF, 0xFF})
	f.Add("audio/mpeg", []byte{0xFF, 0xFB, 0x90, 0x64, 0, 0})
	f.Add("text/html", []byte("<html>"))
	f.Fuzz(func(t *testing.T, typ string, b []byte) {
		rec, err := checkRecording(typ, bytes.NewReader(b))
		if err != nil {
			return
		}
		if rec.audioType == "" || rec.measured < -1 {
			t.Fatalf("accepted with type %q, length %v", rec.audioType, rec.measured)
		}
		got, err := io.ReadAll(rec.r)
		if err != nil {
			if !errors.Is(err, ErrBadAudio) {
				t.Fatalf("read: %v", err)
			}
			return
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("handed on %d bytes, given %d", len(got), len(b))
		}
	})
}
