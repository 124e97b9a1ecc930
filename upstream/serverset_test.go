package upstream

import (
	"errors"
	"slices"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// TestServerUIDs: a set of UIDs from the server is expanded only when
// every UID in it can be real and there are no more than can match; any
// other set is a server fault, found without counting through it.
func TestServerUIDs(t *testing.T) {
	rng := func(start, stop imap.UID) imap.UIDSet { return imap.UIDSet{{Start: start, Stop: stop}} }
	tests := []struct {
		name string
		set  imap.NumSet
		most uint32
		want []imap.UID // nil with fault
	}{
		{"none", nil, 10, []imap.UID{}},
		{"empty", imap.UIDSet(nil), 10, []imap.UID{}},
		{"some", imap.UIDSetNum(3, 5, 6, 7), 10, []imap.UID{3, 5, 6, 7}},
		{"as many as the folder holds", rng(1, 10), 10, []imap.UID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"more than the folder holds", rng(1, 11), 10, nil},
		{"the last UID", imap.UIDSetNum(4294967295), 10, nil},
		{"a range to the last UID", rng(4294967290, 4294967295), 10, nil},
		{"a range of four billion", rng(1, 4000000000), 1 << 31, nil},
		{"a star", imap.UIDSet{{Start: 5, Stop: 0}}, 10, nil},
		{"zero", imap.UIDSet{{Start: 0, Stop: 0}}, 10, nil},
		{"sequence numbers", imap.SeqSetNum(1, 2), 10, nil},
		{"no sequence numbers", imap.SeqSet(nil), 10, []imap.UID{}},
	}
	for _, tc := range tests {
		got, err := serverUIDs(tc.set, tc.most, "test")
		switch {
		case tc.want == nil && !errors.Is(err, ErrServerFault):
			t.Errorf("%s: serverUIDs() = %v, %v; want a server fault", tc.name, got, err)
		case tc.want != nil && (err != nil || !slices.Equal(got, tc.want)):
			t.Errorf("%s: serverUIDs() = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
