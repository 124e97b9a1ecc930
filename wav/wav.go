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

// Info is what a WAV file's header says about its recording.
type Info struct {
	Format     uint16 // the fmt chunk's format code: 1 PCM, 6 A-law, 7 mu-law, ...
	Channels   uint16
	SampleRate uint32
	ByteRate   uint32 // bytes of audio a second; never 0 in an Info ReadInfo returns
	// DataOffset is where the audio starts: the offset of the data chunk's
	// body from the start of the file.
	DataOffset int64
	// DataSize is the data chunk's size in bytes, or -1 when the recorder
	// left it unset (0 or 0xFFFFFFFF, as recorders that stream do): the
	// data then runs to the end of the file.
	DataSize int64
}

// Length returns how long n bytes of audio play.
func (i Info) Length(n int64) time.Duration {
	if n <= 0 || i.ByteRate == 0 {
		return 0
	}
	secs, rest := uint64(n)/uint64(i.ByteRate), uint64(n)%uint64(i.ByteRate)
	if secs >= uint64(math.MaxInt64/time.Second) {
		return time.Duration(math.MaxInt64) // a header no recording has; never wraps
	}
	return time.Duration(secs)*time.Second + time.Duration(rest*uint64(time.Second)/uint64(i.ByteRate))
}

// ReadInfo reads the header of a WAV file: the RIFF/WAVE signature, the fmt
// chunk and the start of the data chunk. b needs to hold the file up to
// the start of the data (the first bytes of a file suffice: a header is
// 44 bytes, a few hundred with metadata chunks). It fails with an error
// wrapping ErrNotWAV when b is not a WAV file or ends before the data.
func ReadInfo(b []byte) (Info, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return Info{}, fmt.Errorf("%w: no RIFF/WAVE header", ErrNotWAV)
	}
	var info Info
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		size := binary.LittleEndian.Uint32(b[p+4 : p+8])
		body := b[p+8:]
		switch id {
		case "fmt ":
			if size < 16 || len(body) < 16 {
				return Info{}, fmt.Errorf("%w: fmt chunk too short", ErrNotWAV)
			}
			info.Format = binary.LittleEndian.Uint16(body[0:2])
			info.Channels = binary.LittleEndian.Uint16(body[2:4])
			info.SampleRate = binary.LittleEndian.Uint32(body[4:8])
			info.ByteRate = binary.LittleEndian.Uint32(body[8:12])
		case "data":
			if info.ByteRate == 0 {
				return Info{}, fmt.Errorf("%w: data chunk before a valid fmt chunk", ErrNotWAV)
			}
			info.DataOffset = int64(p) + 8
			info.DataSize = int64(size)
			if size == 0 || size == 0xFFFFFFFF {
				info.DataSize = -1
			}
			return info, nil
		}
		next := uint64(p) + 8 + uint64(size) + uint64(size&1) // chunks are padded to even sizes
		if next > uint64(len(b)) {
			break
		}
		p = int(next)
	}
	return Info{}, fmt.Errorf("%w: no data chunk", ErrNotWAV)
}

// Duration returns the length of the recording in a WAV file, from its fmt
// chunk's byte rate and its data chunk's size; b needs to hold the chunks
// up to the start of the data. Recorders that stream leave the data size
// unset (0 or 0xFFFFFFFF): the data then runs to the end of b, as it does
// when b ends before the size the data chunk gives.
func Duration(b []byte) (time.Duration, error) {
	info, err := ReadInfo(b)
	if err != nil {
		return 0, err
	}
	n := int64(len(b)) - info.DataOffset
	if info.DataSize >= 0 && info.DataSize < n {
		n = info.DataSize
	}
	return info.Length(n), nil
}
