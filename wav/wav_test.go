package wav_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/embeddedum/um/wav"
)

// wavFile builds a WAV of d at rate Hz, 16-bit mono, with a LIST chunk of
// odd size before the data, as some recorders write.
func wavFile(rate int, d time.Duration) []byte {
	n := int(d.Seconds()*float64(rate)) * 2
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(4+24+8+6+8+n))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(rate), uint32(2 * rate), uint16(2), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("LIST")
	binary.Write(&b, binary.LittleEndian, uint32(5))
	b.WriteString("INFOx\x00") // 5 bytes and the pad byte
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(n))
	b.Write(make([]byte, n))
	return b.Bytes()
}

func TestWAVDuration(t *testing.T) {
	tests := []struct {
		name string
		file []byte
		want time.Duration
	}{
		{"tone", wav.Tone(3 * time.Second), 3 * time.Second},
		{"16kHz with LIST chunk", wavFile(16000, 2*time.Second), 2 * time.Second},
		{"streamed size", func() []byte {
			b := wav.Tone(time.Second)
			binary.LittleEndian.PutUint32(b[40:], 0xFFFFFFFF)
			return b
		}(), time.Second},
	}
	for _, tt := range tests {
		got, err := wav.Duration(tt.file)
		if err != nil || got != tt.want {
			t.Errorf("%s: Duration() = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	for _, b := range [][]byte{nil, []byte("RIFF0000WAVX"), wav.Tone(time.Second)[:36]} {
		if d, err := wav.Duration(b); err == nil {
			t.Errorf("wav.Duration(%q...) = %v, nil; want an error", b[:min(len(b), 12)], d)
		}
	}
}

func TestSilenceAndTone(t *testing.T) {
	for _, b := range [][]byte{wav.Silence(1500 * time.Millisecond), wav.Tone(1500 * time.Millisecond)} {
		if len(b) != 44+2*12000 {
			t.Errorf("1.5 s at 8 kHz, 16 bit = %d bytes, want %d", len(b), 44+2*12000)
		}
		if d, err := wav.Duration(b); err != nil || d != 1500*time.Millisecond {
			t.Errorf("Duration() = %v, %v; want 1.5s", d, err)
		}
	}
	if bytes.Equal(wav.Tone(time.Second), wav.Silence(time.Second)) {
		t.Errorf("Tone() is silent")
	}
	if _, err := wav.Duration([]byte("RIFF0000WAVX")); !errors.Is(err, wav.ErrNotWAV) {
		t.Errorf("Duration(not a WAV) = %v, want ErrNotWAV", err)
	}
}

func TestReadInfo(t *testing.T) {
	info, err := wav.ReadInfo(wavFile(16000, 2*time.Second)[:100])
	want := wav.Info{Format: 1, Channels: 1, SampleRate: 16000, ByteRate: 32000, DataOffset: 58, DataSize: 64000}
	if err != nil || info != want {
		t.Errorf("ReadInfo(16 kHz with LIST chunk) = %+v, %v; want %+v", info, err, want)
	}
	if got := info.Length(info.DataSize); got != 2*time.Second {
		t.Errorf("Length(%d) = %v, want 2s", info.DataSize, got)
	}
	b := wav.Tone(time.Second)
	binary.LittleEndian.PutUint32(b[40:], 0)
	if info, err := wav.ReadInfo(b); err != nil || info.DataSize != -1 {
		t.Errorf("ReadInfo(data size unset) = %+v, %v; want DataSize -1", info, err)
	}
	if _, err := wav.ReadInfo(wav.Tone(time.Second)[:40]); !errors.Is(err, wav.ErrNotWAV) {
		t.Errorf("ReadInfo(cut before the data chunk) = %v, want ErrNotWAV", err)
	}
}

func TestLengthDoesNotWrap(t *testing.T) {
	info := wav.Info{ByteRate: 1}
	if got := info.Length(1 << 62); got <= 0 {
		t.Errorf("Length(2^62 bytes at 1 byte/s) = %v, want a large positive duration", got)
	}
	if got := (wav.Info{ByteRate: 16000}).Length(24000); got != 1500*time.Millisecond {
		t.Errorf("Length(24000 bytes at 16000 bytes/s) = %v, want 1.5s", got)
	}
}
