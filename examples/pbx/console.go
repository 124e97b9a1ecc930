package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/metrics"
	"github.com/embeddedum/um/upstream"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// consolePage is the console: plain HTML and JavaScript, no build step.
//
//go:embed console.html
var consolePage []byte

// The console's bounds: it has no login, so whoever reaches -http may use
// it, but never without limit.
const (
	maxEventStreams = 32               // open /events streams at once
	statusEvery     = 2 * time.Second  // sync status pushed to each page
	writeTimeout    = 10 * time.Second // one write to a page that stopped reading
)

// console serves the web console and /metrics on -http.
type console struct {
	svc       *um.Service
	upstream  *upstream.Engine   // nil without -upstream
	forwarder *forward.Forwarder // nil without forwarding
	reg       *prometheus.Registry
	streams   chan struct{} // a slot per open event stream
}

// httpService is the running -http server.
type httpService struct {
	addr   net.Addr
	srv    *http.Server
	cancel context.CancelFunc // ends the event streams
	done   chan struct{}
}

// startHTTP listens on addr and serves the console and /metrics there.
func startHTTP(addr string, c *console) (*httpService, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-http: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	h := &httpService{addr: ln.Addr(), cancel: cancel, done: make(chan struct{})}
	h.srv = &http.Server{
		Handler:           c.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	go func() {
		defer close(h.done)
		h.srv.Serve(ln)
	}()
	return h, nil
}

// shutdown ends the event streams, then waits for the other requests.
func (h *httpService) shutdown(ctx context.Context) error {
	h.cancel()
	err := h.srv.Shutdown(ctx)
	<-h.done
	return err
}

func (c *console) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self'")
		w.Write(consolePage)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/mailboxes", c.mailboxes)
	mux.HandleFunc("GET /api/mailboxes/{box}", c.mailbox)
	mux.HandleFunc("GET /api/mailboxes/{box}/audio/{id}", c.audio)
	mux.HandleFunc("POST /api/mailboxes/{box}/messages/{id}/{action}", c.action)
	mux.HandleFunc("GET /events", c.events)
	return mux
}

// lampJSON is a mailbox's lamp as the page shows it.
type lampJSON struct {
	Waiting   bool   `json:"waiting"`
	New       int    `json:"new"`
	Old       int    `json:"old"`
	UrgentNew int    `json:"urgentNew"`
	UrgentOld int    `json:"urgentOld"`
	Text      string `json:"text"`
}

// statusJSON is a mailbox's sync to its mail account or its forwarding by
// e-mail; nil when it has neither.
type statusJSON struct {
	Mode       string  `json:"mode"` // "upstream" or "forward"
	Connected  bool    `json:"connected"`
	LagSeconds float64 `json:"lagSeconds"`
	LastSync   string  `json:"lastSync,omitempty"`
	Error      string  `json:"error,omitempty"`
	Pending    bool    `json:"pending"` // forward: a voicemail waits to be sent
	Sent       int     `json:"sent"`
	Failed     int     `json:"failed"`
	// Owner is the node that holds the mailbox's forwarding, as this
	// node last saw it; Owned whether that is this node.
	Owner string `json:"owner,omitempty"`
	Owned bool   `json:"owned"`
}

type messageJSON struct {
	ID         string  `json:"id"`
	UID        uint32  `json:"uid"`
	Caller     string  `json:"caller"`
	CallerName string  `json:"callerName"`
	Time       string  `json:"time"`
	Seconds    float64 `json:"seconds"`
	Urgent     bool    `json:"urgent"`
	Heard      bool    `json:"heard"`
	Deleted    bool    `json:"deleted"` // \Deleted set by a mail client
	Email      bool    `json:"email"`   // appended by a mail client: no audio
	AudioType  string  `json:"audioType,omitempty"`
}

type folderJSON struct {
	Name     string        `json:"name"`
	Messages []messageJSON `json:"messages"`
}

type mailboxJSON struct {
	Name    string       `json:"name"`
	Lamp    lampJSON     `json:"lamp"`
	Status  *statusJSON  `json:"status"`
	Folders []folderJSON `json:"folders,omitempty"`
}

func lampOf(st um.MWIState) lampJSON {
	return lampJSON{Waiting: st.Waiting(), New: st.New, Old: st.Old, UrgentNew: st.UrgentNew, UrgentOld: st.UrgentOld, Text: st.String()}
}

func (c *console) status(box string) *statusJSON {
	if c.forwarder != nil {
		if st := c.forwarder.Status(box); st.Configured {
			s := &statusJSON{Mode: "forward", Connected: st.LastError == nil, Pending: st.Pending, Sent: st.Sent, Failed: st.Failed, Owner: st.Owner, Owned: st.Owned}
			if st.LastError != nil {
				s.Error = st.LastError.Error()
			}
			return s
		}
	}
	if c.upstream == nil {
		return nil
	}
	st := c.upstream.Status(box)
	if !st.Configured {
		return nil
	}
	s := &statusJSON{Mode: "upstream", Connected: st.Connected, LagSeconds: st.Lag.Seconds()}
	if !st.LastSync.IsZero() {
		s.LastSync = st.LastSync.UTC().Format(time.RFC3339)
	}
	if st.LastError != nil {
		s.Error = st.LastError.Error()
	}
	return s
}

func (c *console) summary(ctx context.Context, box string) (mailboxJSON, error) {
	st, err := c.svc.MWI(ctx, box)
	if err != nil {
		return mailboxJSON{}, err
	}
	return mailboxJSON{Name: box, Lamp: lampOf(st), Status: c.status(box)}, nil
}

func (c *console) mailboxes(w http.ResponseWriter, r *http.Request) {
	names, err := c.svc.Mailboxes(r.Context())
	if err != nil {
		httpError(w, err)
		return
	}
	out := make([]mailboxJSON, 0, len(names))
	for _, name := range names {
		m, err := c.summary(r.Context(), name)
		if err != nil {
			httpError(w, err)
			return
		}
		out = append(out, m)
	}
	writeJSON(w, out)
}

func (c *console) mailbox(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	mb, err := c.svc.Mailbox(ctx, r.PathValue("box"))
	if err != nil {
		httpError(w, err)
		return
	}
	out, err := c.summary(ctx, mb.Name())
	if err != nil {
		httpError(w, err)
		return
	}
	folders, err := mb.Folders(ctx)
	if err != nil {
		httpError(w, err)
		return
	}
	// INBOX first, Trash last, user folders between: the order of a phone menu.
	sort.SliceStable(folders, func(i, j int) bool { return folderRank(folders[i].Name) < folderRank(folders[j].Name) })
	for _, f := range folders {
		msgs, err := mb.List(ctx, f.Name)
		if err != nil {
			httpError(w, err)
			return
		}
		fj := folderJSON{Name: f.Name, Messages: make([]messageJSON, 0, len(msgs))}
		for _, m := range msgs {
			fj.Messages = append(fj.Messages, messageJSON{
				ID: m.ID.String(), UID: uint32(m.UID), Caller: m.CallerNumber, CallerName: m.CallerName,
				Time: m.Time.UTC().Format(time.RFC3339), Seconds: m.Duration.Seconds(),
				Urgent: m.IsUrgent(), Heard: m.Heard(), Deleted: m.Flags.Has(um.FlagDeleted),
				Email: m.Raw, AudioType: m.AudioType,
			})
		}
		out.Folders = append(out.Folders, fj)
	}
	writeJSON(w, out)
}

func folderRank(name string) int {
	switch name {
	case um.Inbox:
		return 0
	case um.Trash:
		return 2
	}
	return 1
}

// message finds the voicemail the request names.
func (c *console) message(r *http.Request) (*um.Mailbox, um.Message, error) {
	ctx := r.Context()
	mb, err := c.svc.Mailbox(ctx, r.PathValue("box"))
	if err != nil {
		return nil, um.Message{}, err
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return nil, um.Message{}, fmt.Errorf("%w: message id %q", um.ErrInvalid, r.PathValue("id"))
	}
	m, err := mb.Message(ctx, id)
	if err != nil {
		return nil, um.Message{}, err
	}
	return mb, m, nil
}

func (c *console) audio(w http.ResponseWriter, r *http.Request) {
	mb, m, err := c.message(r)
	if err != nil {
		httpError(w, err)
		return
	}
	if m.Raw {
		httpError(w, fmt.Errorf("%w: an e-mail has no audio", um.ErrNotVoice))
		return
	}
	rc, err := mb.OpenAudio(r.Context(), m.ID)
	if err != nil {
		httpError(w, err)
		return
	}
	defer rc.Close()
	// Voicemail is small; held whole, it can be served in the ranges a
	// browser asks for when it seeks.
	audio, err := io.ReadAll(io.LimitReader(rc, maxWAV+1))
	if err != nil {
		httpError(w, err)
		return
	}
	// The type is the depositor's word: anything but audio is served as a
	// download, never as a page of the console's origin.
	typ, _, _ := strings.Cut(m.AudioType, ";")
	if strings.HasPrefix(strings.ToLower(strings.TrimSpace(typ)), "audio/") {
		w.Header().Set("Content-Type", m.AudioType)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", "attachment")
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", m.Added, bytes.NewReader(audio))
}

// action runs heard, unheard, delete or undelete on one message. The
// console has no login: a custom header (which a cross-site form cannot
// send, and a cross-site script only after a preflight the console never
// answers) and a same-origin Origin keep other web pages from using it
// through the person's browser.
func (c *console) action(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Console") != "1" || !sameOrigin(r) {
		http.Error(w, "forbidden: not from the console", http.StatusForbidden)
		return
	}
	mb, m, err := c.message(r)
	if err != nil {
		httpError(w, err)
		return
	}
	if _, err := act(r.Context(), mb, m.ID, r.PathValue("action")); err != nil {
		httpError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// act does what the phone's heard, unheard, delete and undelete do to one
// message, for the console and the stdin commands alike. It returns the
// message as it is after an undelete.
func act(ctx context.Context, mb *um.Mailbox, id uuid.UUID, action string) (um.Message, error) {
	switch action {
	case "heard":
		return um.Message{}, mb.MarkHeard(ctx, id)
	case "unheard":
		return um.Message{}, mb.MarkUnheard(ctx, id)
	case "delete":
		return um.Message{}, mb.Delete(ctx, id)
	case "undelete":
		return mb.Undelete(ctx, id)
	}
	return um.Message{}, fmt.Errorf("%w: unknown action %q", um.ErrInvalid, action)
}

func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

// events streams server-sent events to a page: "mailbox" with a mailbox's
// name and lamp whenever it changes (on this node or another), "status"
// with the sync status of every synced mailbox every statusEvery, and
// "resync" when changes were dropped and the page must reload its data.
func (c *console) events(w http.ResponseWriter, r *http.Request) {
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		http.Error(w, "too many open consoles", http.StatusServiceUnavailable)
		return
	}
	ctx := r.Context()
	sub := c.svc.Subscribe("", um.SubscribeOptions{MaxQueue: 1000})
	defer sub.Close()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	send := func(event string, data any) bool {
		b, err := json.Marshal(data)
		if err != nil {
			return false
		}
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("hello", c.svc.Node()) || !c.sendStatus(ctx, send) {
		return
	}
	tick := time.NewTicker(statusEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if !c.sendStatus(ctx, send) {
				return
			}
		case <-sub.C():
			changes, err := sub.Next()
			if errors.Is(err, um.ErrOverflow) {
				if !send("resync", nil) {
					return
				}
				continue
			}
			seen := map[string]bool{}
			for _, ch := range changes {
				if ch.Mailbox == "" { // every mailbox: the page reloads
					if !send("resync", nil) {
						return
					}
					seen = nil
					break
				}
				if seen[ch.Mailbox] {
					continue
				}
				seen[ch.Mailbox] = true
				m, err := c.summary(ctx, ch.Mailbox)
				if err != nil {
					continue // deleted meanwhile, or the store failed: the next change tells
				}
				if !send("mailbox", m) {
					return
				}
			}
		}
	}
}

func (c *console) sendStatus(ctx context.Context, send func(string, any) bool) bool {
	if c.upstream == nil && c.forwarder == nil {
		return true
	}
	names, err := c.svc.Mailboxes(ctx)
	if err != nil {
		return ctx.Err() == nil
	}
	status := map[string]*statusJSON{}
	for _, name := range names {
		if s := c.status(name); s != nil {
			status[name] = s
		}
	}
	return send("status", status)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// httpError answers err with the status a page can act on.
func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, um.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, um.ErrInvalid), errors.Is(err, um.ErrNotVoice):
		code = http.StatusBadRequest
	case errors.Is(err, um.ErrMailboxFull):
		code = http.StatusConflict
	}
	http.Error(w, strings.TrimSpace(oneLine(err.Error())), code)
}

// newMetrics returns the PBX's registry, with Go's and the process's own
// metrics, and um's metrics registered on it.
func newMetrics(cfg *config) (*prometheus.Registry, *metrics.Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg, &metrics.Options{Node: cfg.node})
	return reg, m, err
}

// startWeb registers the IMAP and sync metrics and serves the console and
// /metrics on -http; it returns nil when -http is empty.
// engine and fw are nil when nothing is synced or forwarded.
func startWeb(cfg *config, svc *um.Service, reg *prometheus.Registry, m *metrics.Metrics, imap *imapService, engine *upstream.Engine, fw *forward.Forwarder) (*httpService, error) {
	if err := m.RegisterIMAP(metrics.IMAPServer(imap.srv)); err != nil {
		return nil, err
	}
	if engine != nil {
		if err := m.RegisterUpstream(svc, engine); err != nil {
			return nil, err
		}
	}
	if fw != nil {
		if err := m.RegisterForward(svc, fw); err != nil {
			return nil, err
		}
	}
	if cfg.httpAddr == "" {
		return nil, nil
	}
	return startHTTP(cfg.httpAddr, &console{svc: svc, upstream: engine, forwarder: fw, reg: reg, streams: make(chan struct{}, maxEventStreams)})
}
