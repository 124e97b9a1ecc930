package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/bench/internal/childproc"
	"github.com/embeddedum/um/wav"
)

// roleEnv makes the program a child of the tool: roleServer serves the
// store in the directory serverDirEnv names, roleClient holds a share of
// the connections.
const (
	roleEnv      = "IMAPIDLE_ROLE"
	roleServer   = "server"
	roleClient   = "client"
	serverDirEnv = "IMAPIDLE_DIR"
	certEnv      = "IMAPIDLE_CERT"
	keyEnv       = "IMAPIDLE_KEY"
	clientEnv    = "IMAPIDLE_CLIENT" // the clientConfig, JSON
)

func userName(i int) string { return strconv.Itoa(3000 + i) }

// voicemail is the audio of every deposit: two seconds of 8 kHz PCM.
var voicemail = wav.Tone(2 * time.Second)

func deposit(ctx context.Context, mb *um.Mailbox, n int) error {
	_, err := mb.Deposit(ctx, um.Deposit{
		Audio:        bytes.NewReader(voicemail),
		CallerNumber: fmt.Sprintf("+4930123%05d", n),
		CallerName:   "Caller " + strconv.Itoa(n),
	})
	return err
}

// memStats is the server's own accounting, after a collection.
type memStats struct {
	HeapInuse, HeapAlloc, StackInuse, Sys uint64
	Goroutines                            int
	Conns, Sessions                       int
}

// depositTimes are the wall-clock times (Unix nanoseconds) at which the
// deposit into each mailbox started and returned.
type depositTimes struct {
	Start, End []int64
	Err        string
}

// serverMain serves the store named by serverDirEnv on 127.0.0.1 with
// implicit TLS, prints its address, and then answers commands read from
// standard input, one JSON line each:
//
//	stats            memStats after runtime.GC
//	free             returns what the heap does not use to the system
//	heap <file>      writes a heap profile
//	deposit <n> <p>  one voicemail into each of mailboxes 0..n-1, p at a time: depositTimes
//
// It exits when standard input ends.
func serverMain() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "imapidle (um server):", err)
		return 1
	}
	raiseFileLimit()
	svc, closeAll, err := benchserver.Open(os.Getenv(serverDirEnv))
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	srv, err := benchserver.NewIMAP(svc, []byte(os.Getenv(certEnv)), []byte(os.Getenv(keyEnv)), false)
	if err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeTLS(ln) }()
	fmt.Println(ln.Addr().String())

	ctx := context.Background()
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "stats":
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			st := srv.Stats()
			out.Encode(memStats{HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse, Sys: ms.Sys,
				Goroutines: runtime.NumGoroutine(), Conns: st.Conns, Sessions: st.Sessions})
		case f[0] == "free":
			debug.FreeOSMemory()
			out.Encode(map[string]string{"err": ""})
		case f[0] == "heap" && len(f) == 2:
			err := writeHeap(f[1])
			out.Encode(map[string]string{"err": errString(err)})
		case f[0] == "deposit" && len(f) == 3:
			n, _ := strconv.Atoi(f[1])
			p, _ := strconv.Atoi(f[2])
			out.Encode(depositAll(ctx, svc, n, max(p, 1)))
		default:
			out.Encode(map[string]string{"err": "unknown command " + in.Text()})
		}
	}
	srv.Close()
	<-done
	return 0
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func writeHeap(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// depositAll deposits a voicemail into each of the first n mailboxes, p
// at a time, in mailbox order.
func depositAll(ctx context.Context, svc *um.Service, n, p int) depositTimes {
	dt := depositTimes{Start: make([]int64, n), End: make([]int64, n)}
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	for range p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				mb, err := svc.Mailbox(ctx, userName(i))
				dt.Start[i] = time.Now().UnixNano()
				if err == nil {
					err = deposit(ctx, mb, i)
				}
				dt.End[i] = time.Now().UnixNano()
				if err != nil {
					mu.Lock()
					if dt.Err == "" {
						dt.Err = fmt.Sprintf("deposit into %s: %v", userName(i), err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return dt
}

// server is um's server running in a child process.
type server struct {
	proc *childproc.Proc
	out  *bufio.Reader
	Addr string
}

func startServer(dir string, certPEM, keyPEM []byte) (*server, error) {
	proc, err := childproc.Start("um server", roleEnv+"="+roleServer, serverDirEnv+"="+dir, certEnv+"="+string(certPEM), keyEnv+"="+string(keyPEM))
	if err != nil {
		return nil, err
	}
	s := &server{proc: proc, out: bufio.NewReaderSize(proc.Stdout, 1<<20)}
	line, err := s.out.ReadString('\n')
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("um server did not start: %w", err)
	}
	s.Addr = strings.TrimSpace(line)
	return s, nil
}

func (s *server) PID() int { return s.proc.PID() }

// call sends a command and decodes its answer into v.
func (s *server) call(v any, format string, args ...any) error {
	if _, err := fmt.Fprintf(s.proc.Stdin, format+"\n", args...); err != nil {
		return fmt.Errorf("um server: %w", err)
	}
	line, err := s.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("um server: %w", err)
	}
	return json.Unmarshal(line, v)
}

// Stop closes the server's standard input and waits for it to exit.
func (s *server) Stop() error { return s.proc.Stop(30 * time.Second) }
