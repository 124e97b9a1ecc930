package pgstore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
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

// muteProxy starts a proxy to the database of dsn and returns it with the
// connection string through it. The proxy can silence the connections it
// carries without closing them, as a dead peer or a dropped NAT entry does.
func muteProxy(t *testing.T, dsn string) (*muteproxy.Proxy, string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
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
	return f, u.String()
}

// TestWatchDetectsSilentLoss: the notification connection goes silent
// without an error. Watch's ping notices it, Watch reconnects, and it
// delivers a resync, so a change committed meanwhile is not missed.
func TestWatchDetectsSilentLoss(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	f, viaProxy := muteProxy(t, dsn)
	a := openStore(t, dsn, &pgstore.Options{Node: "A"})
	b := openStore(t, viaProxy, &pgstore.Options{Node: "B", PingInterval: 200 * time.Millisecond})
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

// TestSilentStateWriterHoldsUpNoTakeover: node B's link to the database
// goes silent (nothing closed, nothing passes) while B writes its outward
// state, over and over, at a random moment of a write. Wherever the write
// was cut, it left the lease row unlocked: once B's lease expires, node A
// takes it over, within seconds rather than when the server's TCP keepalive
// would end B's transaction, hours later.
func TestSilentStateWriterHoldsUpNoTakeover(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a := openStore(t, dsn, &pgstore.Options{Node: "A"})
	const ttl = 300 * time.Millisecond
	// Larger than one read of the proxy, so a write can be cut inside a
	// statement as well as between two.
	state := bytes.Repeat([]byte("s"), 100<<10)
	for trial := range 10 {
		mailbox := fmt.Sprintf("10%02d", trial)
		if err := a.CreateMailbox(ctx, mailbox); err != nil {
			t.Fatal(err)
		}
		// A link of its own each time: the last one stays silent.
		f, viaProxy := muteProxy(t, dsn)
		b := openStore(t, viaProxy, &pgstore.Options{Node: "B"})
		l, err := b.AcquireLease(ctx, mailbox, "upstream", "B", ttl)
		if err != nil {
			t.Fatalf("trial %d: AcquireLease(B) = %v", trial, err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				_ = b.PutState(wctx, l, state) // fails once cut, or the lease expired
				cancel()
			}
		}()
		time.Sleep(rand.N(30 * time.Millisecond))
		f.Silence()
		close(stop)

		deadline := time.Now().Add(ttl + 5*time.Second)
		for {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			got, err := a.AcquireLease(actx, mailbox, "upstream", "A", ttl)
			cancel()
			if err == nil {
				if got.Epoch <= l.Epoch {
					t.Errorf("trial %d: A took over with epoch %d, want more than B's %d", trial, got.Epoch, l.Epoch)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("trial %d: A could not take over B's expired lease: %v", trial, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		<-done
	}

}
