package pgstore_test

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/muteproxy"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TestWatchDetectsSilentLoss: the notification connection goes silent
// without an error. Watch's ping notices it, Watch reconnects, and it
// delivers a resync, so a change committed meanwhile is not missed.
func TestWatchDetectsSilentLoss(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy silences B's connections without closing them, as a dead
	// peer or a dropped NAT entry does.
	f, err := muteproxy.Start(net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	u, err := url.Parse(withDatabase(t, "postgres://x/", cfg.Database))
	if err != nil {
		t.Fatal(err)
	}
	u.User, u.Host = url.User(cfg.User), f.Addr
	u.RawQuery = "sslmode=disable"

	a := openStore(t, dsn, &pgstore.Options{Node: "A"})
	b := openStore(t, u.String(), &pgstore.Options{Node: "B", PingInterval: 200 * time.Millisecond})
	if err := a.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	got := make(chan um.Change, 100)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go b.Watch(wctx, "B", func(c um.Change) { got <- c })
	waitListening(t, dsn, "B")

	f.Silence()
	if _, err := a.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	for {
		c := next(t, got)
		if c.Mailbox == "1001" && len(c.Events) == 1 && c.Events[0].Kind == um.EventResync {
			return
		}
		if c.Events[0].Kind == um.EventAdded {
			t.Fatalf("a frozen connection delivered %+v", c)
		}
	}
}
