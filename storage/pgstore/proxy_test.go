package pgstore_test

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// freezer is a TCP proxy to PostgreSQL that can silence the connections it
// carries without closing them, as a dead peer or a dropped NAT entry does.
type freezer struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen chan struct{} // closed to freeze the current connections
	conns  []net.Conn
}

func newFreezer(t testing.TB, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, frozen: make(chan struct{})}
	go f.serve()
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
	})
	return f
}

func (f *freezer) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, s)
		frozen := f.frozen
		f.mu.Unlock()
		go pipe(c, s, frozen)
		go pipe(s, c, frozen)
	}
}

// pipe copies until an error; once frozen is closed it stops passing bytes
// but keeps both ends open.
func pipe(dst, src net.Conn, frozen <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-frozen:
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// freeze silences every connection open now; later ones pass.
func (f *freezer) freeze() {
	f.mu.Lock()
	close(f.frozen)
	f.frozen = make(chan struct{})
	f.mu.Unlock()
}

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
	f := newFreezer(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	u, err := url.Parse(withDatabase(t, "postgres://x/", cfg.Database))
	if err != nil {
		t.Fatal(err)
	}
	u.User, u.Host = url.User(cfg.User), f.ln.Addr().String()
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

	f.freeze()
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
