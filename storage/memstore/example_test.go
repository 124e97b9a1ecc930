package memstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
)

// A host's tests run um on a memstore: nothing touches the disk, and each
// test starts empty.
func ExampleNew() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	svc, err := um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	_, err = mb.Deposit(ctx, um.Deposit{
		Audio:        bytes.NewReader(silentWAV(time.Second)),
		CallerNumber: "+4930123456",
		Duration:     time.Second,
		Urgent:       true,
	})
	if err != nil {
		log.Fatal(err)
	}
	state, err := mb.MWI(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(state.Waiting(), state)
	// Output: true 1/0 (1/0)
}

// silentWAV returns d of silence as 8 kHz 16-bit mono WAV: the recording
// call control would hand over.
func silentWAV(d time.Duration) []byte {
	n := int(d.Seconds()) * 8000 * 2
	b := make([]byte, 44, 44+n)
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1)
	binary.LittleEndian.PutUint16(b[22:], 1)
	binary.LittleEndian.PutUint32(b[24:], 8000)
	binary.LittleEndian.PutUint32(b[28:], 16000)
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(n))
	return append(b, make([]byte, n)...)
}
