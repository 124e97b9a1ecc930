package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/bench/internal/childproc"
	umimap "github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
)

// serverEnv, when set in this program's environment, makes it serve one
// IMAP server instead of running the comparison: "um:DIR" serves um over a
// boltstore in DIR, "um-memstore" um over its in-memory store (what the
// durable store costs: the rest of the server is the same), "memserver"
// go-imap's in-memory server. Each server runs
// in a process of its own so that its CPU time and memory are its own.
const serverEnv = "IMAPSTRESS_SERVER"

// usersEnv carries the number of users (user1 ... userN) to the child.
const usersEnv = "IMAPSTRESS_USERS"

// target is one server under test, listening on plain IMAP on loopback
// with LOGIN allowed.
type target struct {
	name string
	addr string
	pid  int
	stop func() error
}

func userName(i int) string { return "user" + strconv.Itoa(i) }

// password is the same for every user: imaptest takes one.
const password = "stress-pw"

// startTarget starts the named server; prof, when not empty, is the
// folder a Go child writes its profiles into (Dovecot is not profiled).
func startTarget(name, dir string, users int, prof string) (*target, error) {
	switch name {
	case "dovecot":
		accounts := make(map[string]string, users)
		for i := 1; i <= users; i++ {
			accounts[userName(i)] = password
		}
		dc, err := dovecot.Start(dovecot.Options{Dir: filepath.Join(dir, "dovecot"), Users: accounts, AllowPlaintext: true})
		if err != nil {
			return nil, err
		}
		return &target{name: name, addr: dc.Addr, pid: dc.PID(), stop: func() error { dc.Stop(); return nil }}, nil
	case "um":
		return startChild(name, "um:"+filepath.Join(dir, "um"), users, prof)
	case "um-memstore", "memserver":
		return startChild(name, name, users, prof)
	}
	return nil, fmt.Errorf("unknown server %q: want um, um-memstore, dovecot or memserver", name)
}

// startChild runs this program again as a server and returns once it
// listens; the child prints its address, and exits when its standard input
// closes.
func startChild(name, spec string, users int, prof string) (*target, error) {
	proc, err := childproc.Start(name, serverEnv+"="+spec, usersEnv+"="+strconv.Itoa(users), pprofEnv+"="+prof)
	if err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(proc.Stdout).ReadString('\n')
	if err != nil {
		proc.Stop(20 * time.Second)
		return nil, fmt.Errorf("%s did not start: %w", name, err)
	}
	stop := func() error { return proc.Stop(20 * time.Second) }
	return &target{name: name, addr: strings.TrimSpace(line), pid: proc.PID(), stop: stop}, nil
}

// serveChild is the child's whole life: serve until standard input closes.
func serveChild(spec string) int {
	if os.Getenv(pprofEnv) != "" {
		// Sample every 64 KiB allocated, not 512 KiB, from the start: the
		// heap profiles then tell apart what holds a few hundred KiB.
		runtime.MemProfileRate = 64 << 10
	}
	users, err := strconv.Atoi(os.Getenv(usersEnv))
	if err != nil || users < 1 {
		fmt.Fprintln(os.Stderr, "imapstress: bad", usersEnv)
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapstress:", err)
		return 1
	}
	var shutdown func() error
	if dir, ok := strings.CutPrefix(spec, "um:"); ok {
		shutdown, err = serveUM(ln, dir, users)
	} else if spec == "um-memstore" {
		shutdown, err = serveUM(ln, "", users)
	} else {
		shutdown, err = serveMem(ln, users)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapstress:", spec+":", err)
		return 1
	}
	stopProfiles, err := startProfiles(os.Getenv(pprofEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapstress: profile:", err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	io.Copy(io.Discard, os.Stdin)
	// The profiles cover serving, not the shutdown.
	perr := stopProfiles()
	if err := shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "imapstress:", spec+":", err)
		return 1
	}
	if perr != nil {
		fmt.Fprintln(os.Stderr, "imapstress: profile:", perr)
		return 1
	}
	return 0
}

// serveUM serves um as the demo does: boltstore in dir, durable; with dir
// empty, memstore.
func serveUM(ln net.Listener, dir string, users int) (func() error, error) {
	var store um.Store = memstore.New()
	if dir != "" {
		bs, err := boltstore.Open(dir, nil)
		if err != nil {
			return nil, err
		}
		store = bs
	}
	svc, err := um.New(store, nil)
	if err != nil {
		store.Close()
		return nil, err
	}
	ctx := context.Background()
	for i := 1; i <= users; i++ {
		if _, err := svc.EnsureMailbox(ctx, userName(i)); err != nil {
			return nil, err
		}
	}
	srv, err := umimap.New(svc, &umimap.Options{
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			if pass != password {
				return "", errors.New("wrong password")
			}
			return user, nil
		},
		InsecureAuth:    true,
		MaxConns:        -1,
		MaxConnsPerIP:   -1,
		MaxConnsPerUser: -1,
	})
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		<-served
		st := srv.Stats()
		fmt.Fprintf(os.Stderr, "um: render cache %d hits, %d misses\n", st.RenderCacheHits, st.RenderCacheMisses)
		svc.Close()
		if cerr := store.Close(); err == nil {
			err = cerr
		}
		return err
	}, nil
}

// serveMem serves go-imap's in-memory example server, the reference the
// throughput goal is set against.
func serveMem(ln net.Listener, users int) (func() error, error) {
	mem := imapmemserver.New()
	for i := 1; i <= users; i++ {
		u := imapmemserver.NewUser(userName(i), password)
		if err := u.Create("INBOX", nil); err != nil {
			return nil, err
		}
		mem.AddUser(u)
	}
	srv := goimapserver.New(&goimapserver.Options{
		NewSession: func(*goimapserver.Conn) (goimapserver.Session, *goimapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps: imap.CapSet{
			imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {},
		},
		InsecureAuth: true,
		Logger:       log.New(io.Discard, "", 0),
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return func() error {
		srv.Close()
		<-served
		return nil
	}, nil
}
