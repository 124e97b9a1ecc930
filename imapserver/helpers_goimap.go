package imapserver

import (
	"io"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"
)

func extractEnvelope(h textproto.Header) *imap.Envelope { return goimapserver.ExtractEnvelope(h) }
func extractBodyStructure(r io.Reader) imap.BodyStructure {
	return goimapserver.ExtractBodyStructure(r)
}
func extractBodySection(r io.Reader, item *imap.FetchItemBodySection) []byte {
	return goimapserver.ExtractBodySection(r, item)
}
func extractBinarySection(r io.Reader, item *imap.FetchItemBinarySection) []byte {
	return goimapserver.ExtractBinarySection(r, item)
}
func extractBinarySectionSize(r io.Reader, item *imap.FetchItemBinarySectionSize) uint32 {
	return goimapserver.ExtractBinarySectionSize(r, item)
}
