package um_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/wav"
)

// streamed is a WAV of d whose header leaves the data size unset, as a
// recorder that streams writes it.
func streamed(d time.Duration) []byte {
	b := wav.Tone(d)
	binary.LittleEndian.PutUint32(b[4:], 0xFFFFFFFF)
	binary.LittleEndian.PutUint32(b[40:], 0xFFFFFFFF)
	return b
}

// TestDepositMeasuresWAV: the length a message records is the WAV's own
// when the caller gives none or one more than a second off, and the
// caller's when it is within a second (a recorder knows it to the
// millisecond). Subject and Content-Duration follow.
func TestDepositMeasuresWAV(t *testing.T) {
	five := wav.Tone(5 * time.Second)
	tests := []struct {
		name  string
		audio []byte
		plain bool // hide the reader's Seek
		given time.Duration
		want  time.Duration
	}{
		{"zero is measured", five, false, 0, 5 * time.Second},
		{"99 s for a 5 s file is replaced", five, false, 99 * time.Second, 5 * time.Second},
		{"1 s for a 5 s file is replaced", five, false, time.Second, 5 * time.Second},
		{"within a second is kept", five, false, 5*time.Second + 800*time.Millisecond, 5*time.Second + 800*time.Millisecond},
		{"measured from a reader that does not seek", five, true, 0, 5 * time.Second},
		{"streamed WAV, seekable reader", streamed(3 * time.Second), false, 0, 3 * time.Second},
		{"streamed WAV, plain reader", streamed(3 * time.Second), true, 40 * time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, um.Options{})
			var r io.Reader = bytes.NewReader(tt.audio)
			if tt.plain {
				r = onlyReader{r}
			}
			m, err := f.mb.Deposit(ctx, um.Deposit{Audio: r, CallerNumber: "+4930123", Duration: tt.given})
			if err != nil {
				t.Fatalf("Deposit() = %v", err)
			}
			if m.Duration != tt.want {
				t.Errorf("Deposit().Duration = %v, want %v", m.Duration, tt.want)
			}
			e := um.RenderEmail(m, um.RenderOptions{})
			secs := int((tt.want + time.Second/2) / time.Second)
			header := string(e.Header())
			if want := "Content-Duration: " + strconv.Itoa(secs) + "\r\n"; !strings.Contains(header, want) {
				t.Errorf("header lacks %q:\n%s", want, header)
			}
			rc, err := f.mb.OpenAudio(ctx, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, _ := io.ReadAll(rc)
			if !bytes.Equal(got, tt.audio) {
				t.Errorf("stored audio is %d bytes, not the %d deposited", len(got), len(tt.audio))
			}
		})
	}
}

// TestZeroDurationCountsAgainstLimit: a deposit that gives no duration
// still counts its real length against MaxRecordedTime.
func TestZeroDurationCountsAgainstLimit(t *testing.T) {
	f := newFixture(t, um.Options{MaxRecordedTime: 8 * time.Second})
	if _, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(5 * time.Second))}); err != nil {
		t.Fatalf("first Deposit() = %v", err)
	}
	_, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(5 * time.Second))})
	if !errors.Is(err, um.ErrMailboxFull) {
		t.Fatalf("second 5 s Deposit() with no duration under an 8 s limit = %v, want ErrMailboxFull", err)
	}
	if list, _ := f.mb.List(ctx, um.Inbox); len(list) != 1 {
		t.Errorf("INBOX holds %d messages, want 1", len(list))
	}
}

// TestDepositAudioTypes: the type is parsed as a media type; non-audio
// types and bytes that say another format than the type are refused with
// ErrBadAudio and store nothing; the WAV types are stored as audio/wav.
func TestDepositAudioTypes(t *testing.T) {
	wavBytes := wav.Tone(2 * time.Second)
	ogg := append([]byte("OggS\x00\x02"), make([]byte, 200)...)
	mp3 := append([]byte("ID3\x04\x00"), make([]byte, 200)...)
	tests := []struct {
		name     string
		typ      string
		audio    []byte
		duration time.Duration
		want     error
		stored   string // the AudioType kept
	}{
		{"empty is WAV", "", wavBytes, 0, nil, "audio/wav"},
		{"audio/x-wav", "audio/x-wav", wavBytes, 0, nil, "audio/wav"},
		{"audio/vnd.wave with codecs", "audio/vnd.wave; codecs=1", wavBytes, 0, nil, "audio/wav; codecs=1"},
		{"upper case", "Audio/WAV", wavBytes, 0, nil, "audio/wav"},
		{"Ogg as Ogg", "audio/ogg; codecs=opus", ogg, 3 * time.Second, nil, "audio/ogg; codecs=opus"},
		{"MP3 as MPEG", "audio/mpeg", mp3, 3 * time.Second, nil, "audio/mpeg"},
		{"Ogg labelled WAV", "audio/wav", ogg, 3 * time.Second, um.ErrBadAudio, ""},
		{"Ogg labelled audio/vnd.wave", "audio/vnd.wave", ogg, 3 * time.Second, um.ErrBadAudio, ""},
		{"Ogg labelled WAV with parameters", "audio/wav; codecs=1", ogg, 3 * time.Second, um.ErrBadAudio, ""},
		{"WAV labelled MPEG", "audio/mpeg", wavBytes, 3 * time.Second, um.ErrBadAudio, ""},
		{"WAV labelled an unknown audio type", "audio/x-unknown", wavBytes, 3 * time.Second, um.ErrBadAudio, ""},
		{"text/html", "text/html", []byte("<html><script>alert(1)</script></html>"), 3 * time.Second, um.ErrBadAudio, ""},
		{"application/octet-stream", "application/octet-stream", wavBytes, 0, um.ErrBadAudio, ""},
		{"unparsable type", "audio/", wavBytes, 0, um.ErrBadAudio, ""},
		{"WAV header without data", "audio/wav", wavBytes[:36], 0, um.ErrBadAudio, ""},
		{"WAV cut short of its header's size", "audio/wav", wavBytes[:10000], 0, um.ErrBadAudio, ""},
		{"Ogg without a duration", "audio/ogg", ogg, 0, um.ErrInvalid, ""},
		{"raw mu-law silence as audio/basic", "audio/basic", bytes.Repeat([]byte{0xFF}, 8000), 3 * time.Second, nil, "audio/basic"},
		{"MP3 frame as audio/mpeg", "audio/mpeg", append([]byte{0xFF, 0xFB, 0x90, 0x64}, make([]byte, 400)...), 3 * time.Second, nil, "audio/mpeg"},
		{"MP3 frame labelled WAV", "audio/wav", append([]byte{0xFF, 0xFB, 0x90, 0x64}, make([]byte, 400)...), 3 * time.Second, um.ErrBadAudio, ""},
		{"ADTS frame as audio/aac", "audio/aac", append([]byte{0xFF, 0xF1, 0x50, 0x80}, make([]byte, 400)...), 3 * time.Second, nil, "audio/aac"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, um.Options{})
			m, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(tt.audio), AudioType: tt.typ, Duration: tt.duration})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Deposit(%q) = %v, want %v", tt.typ, err, tt.want)
			}
			list, lerr := f.mb.List(ctx, um.Inbox)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if tt.want != nil {
				if len(list) != 0 {
					t.Errorf("INBOX holds %d messages after a refused deposit", len(list))
				}
				return
			}
			if m.AudioType != tt.stored || len(list) != 1 || list[0].AudioType != tt.stored {
				t.Errorf("AudioType = %q, listed %v; want %q", m.AudioType, list, tt.stored)
			}
		})
	}
}

// TestDepositCutShortStoresNothing: a WAV that ends before the size its
// header gives is refused also when the reader cannot seek, where it shows
// only at the end of the read, in the store: the store keeps nothing.
func TestDepositCutShortStoresNothing(t *testing.T) {
	f := newFixture(t, um.Options{})
	_, err := f.mb.Deposit(ctx, um.Deposit{Audio: onlyReader{bytes.NewReader(wav.Tone(10 * time.Second)[:100000])}})
	if !errors.Is(err, um.ErrBadAudio) || !strings.Contains(err.Error(), "ends after 100000") {
		t.Fatalf("Deposit(cut short) = %v, want ErrBadAudio saying where it ends", err)
	}
	if list, _ := f.mb.List(ctx, um.Inbox); len(list) != 0 {
		t.Errorf("INBOX holds %d messages after a refused deposit", len(list))
	}
}
