package imapserver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestMatchList(t *testing.T) {
	for _, tt := range []struct {
		name, ref, pattern string
		want               bool
	}{
		{"INBOX", "", "*", true},
		{"a/b", "", "%", false},
		{"a/b", "", "a/%", true},
		{"a/b/c", "", "a/%", false},
		{"a/b/c", "", "a/*", true},
		{"a/b", "a/", "%", true},
		{"abc", "", "a%c", true},
		{"ab/c", "", "a%c", false},
		{"x", "", "", false},
		{strings.Repeat("a", 200), "", strings.Repeat("%", 500) + "b", false},
	} {
		if got := matchList(tt.name, delim, tt.ref, tt.pattern); got != tt.want {
			t.Errorf("matchList(%q, %q, %q) = %v, want %v", tt.name, tt.ref, tt.pattern, got, tt.want)
		}
	}
}

// TestListFolders specifies LIST and LSUB over folders and subscriptions.
func TestListFolders(t *testing.T) {
	existing := []string{"INBOX", "Trash", "a/b", "c", "c/d", "e/f"}
	subscribed := []string{"INBOX", "a/b", "gone", "e/f"}
	show := func(ds []imap.ListData) string {
		var out []string
		for _, d := range ds {
			s := fmt.Sprintf("%s%v", d.Mailbox, d.Attrs)
			if d.ChildInfo != nil {
				s += "+childinfo"
			}
			out = append(out, s)
		}
		return strings.Join(out, " ")
	}
	for _, tt := range []struct {
		name string
		q    listQuery
		want string
	}{
		{"top level", listQuery{patterns: []string{"%"}},
			`INBOX[\HasNoChildren] Trash[\HasNoChildren] a[\NonExistent \HasChildren] c[\HasChildren] e[\NonExistent \HasChildren]`},
		{"everything", listQuery{patterns: []string{"*"}},
			`INBOX[\HasNoChildren] Trash[\HasNoChildren] a[\NonExistent \HasChildren] a/b[\HasNoChildren] c[\HasChildren] c/d[\HasNoChildren] e[\NonExistent \HasChildren] e/f[\HasNoChildren]`},
		{"subscribed", listQuery{patterns: []string{"*"}, opts: imap.ListOptions{SelectSubscribed: true}},
			`INBOX[\HasNoChildren \Subscribed] a/b[\HasNoChildren \Subscribed] e/f[\HasNoChildren \Subscribed] gone[\NonExistent \Subscribed]`},
		{"recursive match", listQuery{patterns: []string{"%"}, opts: imap.ListOptions{SelectSubscribed: true, SelectRecursiveMatch: true}},
			`INBOX[\HasNoChildren \Subscribed] a[\NonExistent \HasChildren]+childinfo e[\NonExistent \HasChildren]+childinfo gone[\NonExistent \Subscribed]`},
		{"lsub stops at %", listQuery{patterns: []string{"%"}, lsub: true},
			`INBOX[] a[\Noselect] e[\Noselect] gone[]`},
		{"return subscribed", listQuery{patterns: []string{"c*", "a/b"}, opts: imap.ListOptions{ReturnSubscribed: true}},
			`a/b[\HasNoChildren \Subscribed] c[\HasChildren] c/d[\HasNoChildren]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := show(listFolders(existing, subscribed, tt.q)); got != tt.want {
				t.Errorf("listFolders = %s\nwant %s", got, tt.want)
			}
		})
	}
}
