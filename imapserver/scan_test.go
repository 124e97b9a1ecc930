package imapserver

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/embeddedum/um"
)

// scanSamples add to layoutSamples the shapes where a line-by-line scan
// could part from parsing the whole message: delimiters after a blank
// line, at the end without a line break, with white space after them, an
// outer boundary inside an inner part, a boundary used twice, long lines.
var scanSamples = map[string]string{
	"blank before delim": "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n--b\r\nX: y\r\n\r\n\r\n--b--\r\n",
	"delim at end":       "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b",
	"close at end":       "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--",
	"white space":        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \t\r\n\r\none\r\n--b-- \r\n after\r\n--b\r\n\r\nnot a part\r\n",
	"not a delim":        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--bx\r\n x--b\r\n--b-\r\n--b\r\n\r\ntwo",
	"outer in inner":     "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nin\r\n--o\r\n\r\nnext\r\n--i\r\n\r\nlost\r\n--o--\r\n",
	"same boundary":      "Content-Type: multipart/mixed; boundary=s\r\n\r\n--s\r\nContent-Type: multipart/mixed; boundary=s\r\n\r\n--s\r\n\r\nx\r\n--s--\r\n--s--\r\n",
	"inner delim last":   "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\na\r\n--i\r\n--o--\r\n",
	"rfc822 cut":         "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n\r\n--o\r\nContent-Type: message/rfc822\r\n--o--\r\n",
	"header cut":         "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nSubject: no blank\r\n--o\r\n\n--o\r\n\r\n--o--",
	"lf blank":           "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: message/rfc822\n\n\n--o\n\n\n--o--\n",
	"cr only":            "Subject: x\r\r\n\r\rbody\r\n",
	"text lines":         "Content-Type: multipart/mixed; boundary=t\r\n\r\n--t\r\nContent-Type: text/plain\r\n\r\n1\r\n2\n3\r\n\r\n--t\r\nContent-Type: message/rfc822\r\n\r\nSubject: e\r\n\r\na\r\nb\r\n--t--\r\n",
	"long lines":         "Content-Type: multipart/mixed; boundary=l\r\n\r\n--l" + strings.Repeat(" ", 3000) + "\r\nX-Long: " + strings.Repeat("v", 5000) + "\r\n\r\n" + strings.Repeat("w", 4000) + "\r\n--l" + strings.Repeat(" ", 2000) + "--" + strings.Repeat(" ", 2000) + "\r\n\r\nnot\r\n--l--" + strings.Repeat("\t", 1500) + "\r\n",
	"deep":               strings.Repeat("Content-Type: message/rfc822\r\n\r\n", 20) + "Subject: bottom\r\n\r\nx\r\n",
}

// checkScan asserts that scanEntity, reading msg through a buffer of
// bufSize bytes, gives the layout and BODYSTRUCTURE parsing the whole
// message gives.
func checkScan(t *testing.T, name string, msg []byte, bufSize int) {
	t.Helper()
	want := parseEntity(msg, 0, "text/plain")
	wantLayout, _ := newLayout(msg, want, nil)
	root, ok, err := scanFrom(bufio.NewReaderSize(bytes.NewReader(msg), bufSize))
	if err != nil {
		t.Fatalf("%s: scanEntity = %v", name, err)
	}
	if !ok {
		return // left to parseEntity
	}
	got, _ := newLayout(nil, root, nil)
	if g, w := dumpLayout(got), dumpLayout(wantLayout); g != w {
		t.Fatalf("%s (buffer %d): scanned layout\n%s\nwhole-message layout\n%s\nof %q", name, bufSize, g, w, clipped(msg))
	}
	gs := wireOf(func(e *encoder) { writeBodyStructure(e, root.structure(), true) })
	ws := wireOf(func(e *encoder) { writeBodyStructure(e, want.structure(), true) })
	if !bytes.Equal(gs, ws) {
		t.Fatalf("%s (buffer %d): scanned BODYSTRUCTURE\n%s\nwhole-message\n%s\nof %q", name, bufSize, gs, ws, clipped(msg))
	}
}

func clipped(b []byte) []byte {
	if len(b) > 2000 {
		return append(b[:1000:1000], "..."...)
	}
	return b
}

func dumpLayout(l *layout) string {
	var b strings.Builder
	fmt.Fprintf(&b, "header %q\n", l.header)
	var walk func(p *rawPart, indent string)
	walk = func(p *rawPart, indent string) {
		fmt.Fprintf(&b, "%s[%d %d %d]\n", indent, p.headerStart, p.bodyStart, p.end)
		for _, c := range p.children {
			walk(c, indent+"  ")
		}
		if p.msg != nil {
			walk(p.msg, indent+"  msg ")
		}
	}
	walk(l.root, "")
	return b.String()
}

// TestScanEntity: the line-by-line scan FETCH lays out appended e-mail
// with gives, for every sample and a voicemail appended as e-mail, through
// buffers from 16 bytes to the default, the layout and BODYSTRUCTURE of
// parsing the whole message; so do a few thousand random cuts, splices
// and line-break changes of them.
func TestScanEntity(t *testing.T) {
	var samples []string
	for _, set := range []map[string]string{layoutSamples, scanSamples} {
		for _, m := range set {
			samples = append(samples, m)
		}
	}
	var vm bytes.Buffer
	m := testMessage(1)
	um.RenderEmail(m, um.RenderOptions{Mailbox: "user1"}).WriteTo(&vm, bytes.NewReader(make([]byte, m.Size)))
	samples = append(samples, vm.String())
	for i, s := range samples {
		for _, size := range []int{16, 64, 1000, scanBufSize} {
			checkScan(t, fmt.Sprintf("sample %d", i), []byte(s), size)
		}
		if _, ok, _ := scanFrom(bufio.NewReaderSize(strings.NewReader(s), scanBufSize)); !ok {
			t.Errorf("sample %d: scanEntity left it to parseEntity, want it scanned", i)
		}
	}
	rng := rand.New(rand.NewPCG(14, 14))
	bits := []string{"\r\n", "\n", "\r", "--", "--b", "--b--", "--o\r\n", "--i\r\n", "\r\n\r\n", " ", "Content-Type: message/rfc822\r\n\r\n", "Content-Type: multipart/mixed; boundary=b\r\n\r\n"}
	for n := 0; n < 3000; n++ {
		b := []byte(samples[rng.IntN(len(samples)-1)]) // the voicemail is large
		for range 1 + rng.IntN(4) {
			at := rng.IntN(len(b) + 1)
			switch rng.IntN(3) {
			case 0:
				b = append(b[:at:at], append([]byte(bits[rng.IntN(len(bits))]), b[at:]...)...)
			case 1:
				b = append(b[:at:at], b[min(len(b), at+rng.IntN(8)):]...)
			default:
				b = b[:at]
			}
		}
		checkScan(t, fmt.Sprintf("mutation %d", n), b, 16+rng.IntN(64))
	}
}

// FuzzScanEntity: for any bytes stored as an e-mail, the scan gives the
// layout and BODYSTRUCTURE of parsing the whole message.
func FuzzScanEntity(f *testing.F) {
	for _, set := range []map[string]string{layoutSamples, scanSamples} {
		for _, m := range set {
			f.Add([]byte(m), uint8(16))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, size uint8) {
		checkScan(t, "fuzz", b, 16+int(size))
	})
}
