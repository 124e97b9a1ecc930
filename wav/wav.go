// Package wav writes and reads the WAV files a PBX hands to um: Duration
// reads a recording's length from its header, for um.Deposit; Silence and
// Tone make 8 kHz 16-bit mono PCM recordings for tests and demos.
package wav

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Rate is the sample rate of the recordings this package makes: 8 kHz, the
// rate of telephone audio.
const Rate = 8000

// ErrNotWAV is returned by Duration for data that is not a RIFF/WAVE file
// with a format and a data chunk.
var ErrNotWAV = errors.New("wav: not a WAV file")

// Header returns the 44-byte header of a mono 16-bit PCM WAV file at rate
// samples a second whose data chunk holds dataLen bytes.
func Header(rate, dataLen int) []byte {
	b := make([]byte, 44)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+dataLen))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)           // fmt chunk size
	binary.LittleEndian.PutUint16(b[20:], 1)            // PCM
	binary.LittleEndian.PutUint16(b[22:], 1)            // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(rate)) // sample rate
	binary.LittleEndian.PutUint32(b[28:], uint32(2*rate))
	binary.LittleEndian.PutUint16(b[32:], 2)  // block align
	binary.LittleEndian.PutUint16(b[34:], 16) // bits per sample
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(dataLen))
	return b
}

// Silence returns a WAV file of d of silence.
func Silence(d time.Duration) []byte {
	n := samples(d)
	return append(Header(Rate, 2*n), make([]byte, 2*n)...)
}

// Tone returns a WAV file of d holding two soft 440 Hz beeps a second, so a
// mail client's player has something to play.
func Tone(d time.Duration) []byte {
	n := samples(d)
	b := append(Header(Rate, 2*n), make([]byte, 2*n)...)
	pcm := b[44:]
	for i := range n {
		t := float64(i) / Rate
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
	return b
}

func samples(d time.Duration) int { return max(int(d.Seconds()*Rate), 0) }

// Duration returns the length of the recording in a WAV file, from its fmt
// chunk's byte rate and its data chunk's size; b needs to hold the chunks
// up to the start of the data. Recorders that stream leave the data size
// unset (0 or 0xFFFFFFFF): the data then runs to the end of b.
func Duration(b []byte) (time.Duration, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return 0, fmt.Errorf("%w: no RIFF/WAVE header", ErrNotWAV)
	}
	var byteRate uint32
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		size := binary.LittleEndian.Uint32(b[p+4 : p+8])
		body := b[p+8:]
		switch id {
		case "fmt ":
			if size < 16 || len(body) < 16 {
				return 0, fmt.Errorf("%w: fmt chunk too short", ErrNotWAV)
			}
			byteRate = binary.LittleEndian.Uint32(body[8:12])
		case "data":
			if byteRate == 0 {
				return 0, fmt.Errorf("%w: data chunk before a valid fmt chunk", ErrNotWAV)
			}
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
	return 0, fmt.Errorf("%w: no data chunk", ErrNotWAV)
}
