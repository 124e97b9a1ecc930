package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// toneWAV returns a WAV file (8 kHz, 16-bit mono PCM) of d: two soft beeps
// a second, so a mail client's player has something to play.
func toneWAV(d time.Duration) []byte {
	const rate = 8000
	n := int(d.Seconds() * rate)
	pcm := make([]byte, 2*n)
	for i := range n {
		t := float64(i) / rate
		// 440 Hz for the first 0.3 s of each half second, with 10 ms ramps
		// so the beeps do not click.
		phase := math.Mod(t, 0.5)
		var amp float64
		if phase < 0.3 {
			amp = min(1, phase/0.01, (0.3-phase)/0.01)
		}
		v := int16(8000 * amp * math.Sin(2*math.Pi*440*t))
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(v))
	}
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+len(pcm)))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{
		uint32(16),       // fmt chunk size
		uint16(1),        // PCM
		uint16(1),        // mono
		uint32(rate),     // sample rate
		uint32(2 * rate), // byte rate
		uint16(2),        // block align
		uint16(16),       // bits per sample
	} {
		binary.Write(&b, binary.LittleEndian, v)
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(len(pcm)))
	b.Write(pcm)
	return b.Bytes()
}

// wavDuration returns the length of the recording in a WAV file, from its
// fmt chunk's byte rate and its data chunk's size.
func wavDuration(b []byte) (time.Duration, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return 0, errors.New("not a WAV file (no RIFF/WAVE header)")
	}
	var byteRate uint32
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		size := binary.LittleEndian.Uint32(b[p+4 : p+8])
		body := b[p+8:]
		switch id {
		case "fmt ":
			if size < 16 || len(body) < 16 {
				return 0, errors.New("WAV fmt chunk too short")
			}
			byteRate = binary.LittleEndian.Uint32(body[8:12])
		case "data":
			if byteRate == 0 {
				return 0, errors.New("WAV data chunk before a valid fmt chunk")
			}
			// Recorders that stream leave the size unset (0 or
			// 0xFFFFFFFF): the data then runs to the end of the file.
			n := uint64(size)
			if n == 0 || n > uint64(len(body)) {
				n = uint64(len(body))
			}
			return time.Duration(n * uint64(time.Second) / uint64(byteRate)), nil
		}
		next := uint64(p) + 8 + uint64(size) + uint64(size&1) // chunks are padded to even sizes
		if next > uint64(len(b)) {
			break
		}
		p = int(next)
	}
	return 0, fmt.Errorf("WAV file without a data chunk")
}
