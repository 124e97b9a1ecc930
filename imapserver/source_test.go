package imapserver

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
)

// TestSessionSourceHoldsNothing: the Source of a session's changes, which
// um keeps for a while after the change (the delete-time \Seen marks), is
// a value of the session's own that refers to nothing, so it keeps no
// ended connection alive; and the session is still not sent its own
// changes back.
func TestSessionSourceHoldsNothing(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+4930123456", 2000)
	sub := e.svc.Subscribe("1001", um.SubscribeOptions{})
	defer sub.Close()

	r := e.loggedIn("alice")
	if got := r.cmd("b", "SELECT INBOX"); !strings.HasPrefix(got, "b OK") {
		t.Fatalf("SELECT = %q", got)
	}
	if got := r.cmd("c", `STORE 1 +FLAGS.SILENT (\Seen)`); !strings.HasPrefix(got, "c OK") {
		t.Fatalf("STORE = %q", got)
	}

	var src any
	deadline := time.After(10 * time.Second)
	for src == nil {
		changes, err := sub.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			if c.Source != nil {
				src = c.Source
			}
		}
		if src != nil {
			break
		}
		select {
		case <-sub.C():
		case <-deadline:
			t.Fatal("no change with a Source came for the session's STORE")
		}
	}
	if got, want := reflect.TypeOf(src), reflect.TypeOf(&source{}); got != want {
		t.Fatalf("the Source of a session's change is a %v, want %v", got, want)
	}
	if st := reflect.TypeOf(source{}); st.NumField() != 1 || st.Field(0).Type.Kind() != reflect.Uint8 {
		t.Fatalf("source is %v, want a struct of one byte that refers to nothing", st)
	}

	for _, l := range r.until0("d NOOP", "d") {
		if strings.Contains(l, "FETCH") {
			t.Fatalf("the session was sent its own flag change back: %q", l)
		}
	}
}
