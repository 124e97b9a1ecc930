package um

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/embeddedum/um/wav"
)

// A recording is checked as it arrives: the type must be an audio media
// type, the first bytes must not say another format than the type, and a
// WAV's length is read from its header. Only the first headPeek bytes are
// read ahead, before the mailbox lock is taken; the rest streams into the
// store.

// headPeek is how much of a recording is read ahead to tell its format
// and, for a WAV, find the data chunk behind any metadata chunks.
const headPeek = 64 << 10

// maxUnsizedWAV bounds the WAV whose header leaves the data size unset
// (a recorder that streams) and whose reader cannot seek: its length is
// known only by reading it to the end, which Deposit does in memory.
const maxUnsizedWAV = 64 << 20

// DurationTolerance is how far a Deposit's Duration may be from the length
// um measures in a WAV recording before the measured length replaces it.
const DurationTolerance = time.Second

// audioFormat is a container format told by its first bytes.
type audioFormat string

const (
	formatUnknown audioFormat = ""
	formatWAV     audioFormat = "WAV"
	formatOgg     audioFormat = "Ogg"
	formatMPEG    audioFormat = "MPEG audio"
	formatFLAC    audioFormat = "FLAC"
	formatMP4     audioFormat = "MP4"
	formatWebM    audioFormat = "WebM"
	formatAU      audioFormat = "Sun audio"
	formatAMR     audioFormat = "AMR"
	formatAIFF    audioFormat = "AIFF"
)

// typeFormats maps audio media types to the format their bytes must have.
// Types of raw codecs that may come without a header (audio/basic is
// mu-law, with or without a Sun header) accept unknown bytes as well.
var typeFormats = map[string]struct {
	format   audioFormat
	headless bool
}{
	"audio/wav": {format: formatWAV}, "audio/x-wav": {format: formatWAV},
	"audio/wave": {format: formatWAV}, "audio/vnd.wave": {format: formatWAV},
	"audio/ogg": {format: formatOgg}, "audio/opus": {format: formatOgg}, "audio/vorbis": {format: formatOgg},
	"audio/mpeg": {format: formatMPEG}, "audio/mp3": {format: formatMPEG}, "audio/aac": {format: formatMPEG},
	"audio/flac": {format: formatFLAC}, "audio/x-flac": {format: formatFLAC},
	"audio/mp4": {format: formatMP4}, "audio/x-m4a": {format: formatMP4},
	"audio/webm":  {format: formatWebM},
	"audio/basic": {format: formatAU, headless: true},
	"audio/amr":   {format: formatAMR},
	"audio/aiff":  {format: formatAIFF}, "audio/x-aiff": {format: formatAIFF},
}

// sniff tells the container format of a recording from its first bytes.
func sniff(b []byte) audioFormat {
	has := func(off int, sig string) bool { return len(b) >= off+len(sig) && string(b[off:off+len(sig)]) == sig }
	switch {
	case has(0, "RIFF") && has(8, "WAVE"):
		return formatWAV
	case has(0, "OggS"):
		return formatOgg
	case has(0, "fLaC"):
		return formatFLAC
	case has(4, "ftyp"):
		return formatMP4
	case has(0, "\x1a\x45\xdf\xa3"):
		return formatWebM
	case has(0, ".snd"):
		return formatAU
	case has(0, "#!AMR"):
		return formatAMR
	case has(0, "FORM") && (has(8, "AIFF") || has(8, "AIFC")):
		return formatAIFF
	case has(0, "ID3"), mpegFrame(b):
		return formatMPEG
	}
	return formatUnknown
}

// mpegFrame reports whether b starts with the header of an MPEG audio
// frame (MP3) or an ADTS frame (AAC): a frame sync whose fields hold no
// reserved values. Raw mu-law silence, which is all 0xFF, does not pass.
func mpegFrame(b []byte) bool {
	if len(b) < 4 || b[0] != 0xFF {
		return false
	}
	if b[1]&0xF6 == 0xF0 { // ADTS: 12-bit sync, layer 00
		return (b[2]>>2)&0xF < 13 // a sampling frequency index in use
	}
	version, layer := (b[1]>>3)&3, (b[1]>>1)&3
	bitrate, rate := b[2]>>4, (b[2]>>2)&3
	return b[1]&0xE0 == 0xE0 && version != 1 && layer != 0 && bitrate != 15 && rate != 3
}

// recording is a deposit's audio after its check.
type recording struct {
	r         io.Reader     // every byte of the audio, the peeked ones included
	audioType string        // the media type as stored
	measured  time.Duration // the length read from a WAV; -1 for other formats
}

// checkRecording parses audioType, refuses non-audio types and bytes that
// contradict the type (ErrBadAudio), and measures a WAV. It reads at most
// headPeek bytes, except for a WAV without a data size on a reader that
// cannot seek (see maxUnsizedWAV).
func checkRecording(audioType string, r io.Reader) (recording, error) {
	if strings.TrimSpace(audioType) == "" {
		audioType = "audio/wav"
	}
	mt, params, err := mime.ParseMediaType(audioType)
	if err != nil {
		return recording{}, fmt.Errorf("%w: type %q: %v", ErrBadAudio, audioType, err)
	}
	top, _, _ := strings.Cut(mt, "/")
	if top != "audio" {
		return recording{}, fmt.Errorf("%w: type %q is not audio", ErrBadAudio, audioType)
	}
	want, known := typeFormats[mt]
	if want.format == formatWAV {
		mt = "audio/wav" // the name every mail client knows
	}
	rec := recording{audioType: mime.FormatMediaType(mt, params), measured: -1}
	if rec.audioType == "" {
		return recording{}, fmt.Errorf("%w: type %q cannot be written back", ErrBadAudio, audioType)
	}
	size, seekable := remaining(r)
	br := bufio.NewReaderSize(r, headPeek)
	head, err := br.Peek(headPeek)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return recording{}, fmt.Errorf("um: read audio: %w", err)
	}
	rec.r = br
	got := sniff(head)
	switch {
	case known && got != want.format && !(want.headless && got == formatUnknown):
		return recording{}, fmt.Errorf("%w: type %s, but the bytes %s", ErrBadAudio, audioType, describe(got))
	case !known && got != formatUnknown:
		return recording{}, fmt.Errorf("%w: type %s, but the bytes are %s", ErrBadAudio, audioType, got)
	case got != formatWAV:
		return rec, nil
	}
	info, err := wav.ReadInfo(head)
	if err != nil {
		return recording{}, fmt.Errorf("%w: %v", ErrBadAudio, err)
	}
	switch {
	case info.DataSize >= 0 && seekable && size < info.DataOffset+info.DataSize:
		return recording{}, fmt.Errorf("%w: the WAV header gives %d bytes, the recording has %d", ErrBadAudio, info.DataOffset+info.DataSize, size)
	case info.DataSize >= 0:
		// The header gives the length; the audio must then hold it.
		rec.measured = info.Length(info.DataSize)
		rec.r = &atLeast{r: br, want: info.DataOffset + info.DataSize}
	case seekable:
		rec.measured = info.Length(size - info.DataOffset)
	default:
		all, err := io.ReadAll(io.LimitReader(br, maxUnsizedWAV+1))
		if err != nil {
			return recording{}, fmt.Errorf("um: read audio: %w", err)
		}
		if len(all) > maxUnsizedWAV {
			return recording{}, fmt.Errorf("%w: a WAV without a data size over %d bytes; give the size in its header or a reader that seeks", ErrBadAudio, maxUnsizedWAV)
		}
		rec.measured = info.Length(int64(len(all)) - info.DataOffset)
		rec.r = bytes.NewReader(all)
	}
	return rec, nil
}

func describe(f audioFormat) string {
	if f == formatUnknown {
		return "are in no format it allows"
	}
	return "are " + string(f)
}

// remaining returns how many bytes r has left when it can seek.
func remaining(r io.Reader) (int64, bool) {
	s, ok := r.(io.Seeker)
	if !ok {
		return 0, false
	}
	cur, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, false
	}
	end, err := s.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, false
	}
	if _, err := s.Seek(cur, io.SeekStart); err != nil {
		return 0, false
	}
	return end - cur, true
}

// atLeast fails a read that ends before want bytes with ErrBadAudio, so a
// WAV cut short of the data size its header gives is never stored with
// the length the header claims. Stores store nothing when the reader fails.
type atLeast struct {
	r    io.Reader
	want int64
	n    int64
}

func (a *atLeast) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	a.n += int64(n)
	if errors.Is(err, io.EOF) && a.n < a.want {
		return n, fmt.Errorf("%w: the WAV header gives %d bytes, the recording ends after %d", ErrBadAudio, a.want, a.n)
	}
	return n, err
}

// depositDuration is the length a deposit records: the caller's, unless
// it is zero or more than DurationTolerance from the measured one, which
// then replaces it.
func depositDuration(given, measured time.Duration) time.Duration {
	if measured < 0 {
		return given
	}
	if diff := given - measured; given == 0 || diff > DurationTolerance || diff < -DurationTolerance {
		return measured
	}
	return given
}
