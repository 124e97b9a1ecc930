package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/uuid"
)

// IDHeader is the header field that names the um message an upstream copy
// belongs to. It makes deposits idempotent and lets the engine find its
// copies again after a crash or a UIDVALIDITY change.
const IDHeader = "X-Um-Message-Id"

// syncMask is the flags the engine keeps equal on both sides.
const syncMask = um.FlagHeard | um.FlagAnswered | um.FlagFlagged | um.FlagDeleted

type worker struct {
	e    *Engine
	h    *host
	cfg  Config
	mb   *um.Mailbox
	sub  *um.Subscription
	rend um.RenderOptions

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	upWake    chan struct{} // the server sent something while we idled
	upExpunge atomic.Bool   // ... and it included an EXPUNGE
	syncReq   chan chan error
	handoffC  chan struct{} // the prober left: probe in its place

	// Owned by the run goroutine.
	transport bool // the last attempt failed for want of the server
	st        *State
	trash     string
	caps      imap.CapSet

	mu         sync.Mutex
	stat       Status
	dirtySince time.Time // first um change not yet carried over
	conn       *imapclient.Client
}

func newWorker(e *Engine, cfg Config, mb *um.Mailbox) *worker {
	w := &worker{e: e, cfg: cfg, mb: mb, done: make(chan struct{}),
		upWake: make(chan struct{}, 1), syncReq: make(chan chan error), handoffC: make(chan struct{}, 1)}
	w.h = e.joinHost(w)
	w.rend = um.RenderOptions{Mailbox: cfg.Mailbox}
	w.stat = Status{Mailbox: cfg.Mailbox, Configured: true}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	// Our own changes to um are made with WithSource(ctx, w): no echo.
	w.sub = e.svc.Subscribe(cfg.Mailbox, um.SubscribeOptions{Source: w})
	return w
}

func (w *worker) start() { go w.run() }

func (w *worker) stop() {
	w.cancel()
	w.mu.Lock()
	if w.conn != nil {
		w.conn.Close()
	}
	w.mu.Unlock()
	<-w.done
	w.sub.Close()
}

func (w *worker) status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stat
	if !w.dirtySince.IsZero() {
		s.Lag = time.Since(w.dirtySince)
	}
	return s
}

func (w *worker) setErr(err error) {
	w.mu.Lock()
	w.stat.Connected = false
	w.stat.LastError = err
	w.stat.Failures++
	w.mu.Unlock()
	w.e.opts.Logf("upstream: %s: %v", w.cfg.Mailbox, err)
}

func (w *worker) markDirty() {
	w.mu.Lock()
	if w.dirtySince.IsZero() {
		w.dirtySince = time.Now()
	}
	w.mu.Unlock()
}

func (w *worker) poke() {
	select {
	case w.upWake <- struct{}{}:
	default:
	}
}

func (w *worker) handoff() {
	select {
	case w.handoffC <- struct{}{}:
	default:
	}
}

func (w *worker) syncNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case w.syncReq <- reply:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return fmt.Errorf("upstream: sync %q: %w", w.cfg.Mailbox, um.ErrClosed)
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *worker) run() {
	defer close(w.done)
	ctx := w.ctx
	w.markDirty() // until the first sync, nothing is known to be carried over
	backoff := w.e.opts.MinBackoff
	for ctx.Err() == nil {
		if w.st == nil {
			st, err := w.e.state.Load(ctx, w.cfg.Mailbox)
			switch {
			case errors.Is(err, um.ErrNotFound):
				st = &State{Messages: make(map[uuid.UUID]MessageState)}
			case err != nil:
				w.setErr(err)
				wake, _ := w.e.failed(w, false)
				w.sleep(ctx, backoff, wake)
				backoff = min(2*backoff, w.e.opts.MaxBackoff)
				continue
			}
			w.st = st
		}
		w.transport = false
		synced, err := w.guardedSession(ctx)
		if ctx.Err() != nil {
			return
		}
		if synced {
			backoff = w.e.opts.MinBackoff
		}
		w.setErr(err)
		wake, probe := w.e.failed(w, w.transport)
		d := backoff
		if probe {
			d = min(d, w.e.opts.ProbeInterval)
		}
		w.sleep(ctx, d, wake)
		backoff = min(2*backoff, w.e.opts.MaxBackoff)
	}
}

// guardedSession runs one session and turns a panic in it into an error,
// so a bug met while talking to one user's mail server ends that session,
// not the PBX: the worker reconnects after its backoff as after any error.
func (w *worker) guardedSession(ctx context.Context) (synced bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("upstream: %s: internal error: %v", w.cfg.Mailbox, r)
			w.mu.Lock()
			if w.conn != nil {
				w.conn.Close()
			}
			w.mu.Unlock()
		}
	}()
	return w.session(ctx)
}

// sleep waits d with jitter (between d/2 and d), answering sync requests
// with the error of the last attempt meanwhile. When wake is closed (another
// worker reached the server again) it returns after a short random delay
// instead; when the prober role is handed over to it, at once.
func (w *worker) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-wake:
			wake = nil
			t.Reset(rand.N(w.e.wakeSpread(w) + 1))
		case <-w.handoffC:
			return
		case <-w.sub.C():
			w.markDirty() // the next session's full pass carries it over
		case r := <-w.syncReq:
			w.mu.Lock()
			err := w.stat.LastError
			w.mu.Unlock()
			r <- fmt.Errorf("upstream: sync %q: %w: %w", w.cfg.Mailbox, errNotConnected, err)
		}
	}
}

func (w *worker) dial(ctx context.Context) (*imapclient.Client, error) {
	opts := &imapclient.Options{
		TLSConfig: w.cfg.tlsConfig(),
		Dialer:    &net.Dialer{Timeout: w.e.opts.DialTimeout},
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Expunge: func(uint32) { w.upExpunge.Store(true); w.poke() },
			Mailbox: func(*imapclient.UnilateralDataMailbox) { w.poke() },
			Fetch: func(m *imapclient.FetchMessageData) {
				m.Collect()
				w.poke()
			},
		},
	}
	// Logins to one address queue here, not at the server.
	select {
	case w.h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-w.h.sem }()
	var c *imapclient.Client
	var err error
	if w.cfg.Security == StartTLS {
		c, err = imapclient.DialStartTLS(w.cfg.Addr, opts)
	} else {
		c, err = imapclient.DialTLS(w.cfg.Addr, opts)
	}
	if err != nil {
		w.transport = transportError(err)
		return nil, fmt.Errorf("upstream: connect to %s: %w", w.cfg.Addr, err)
	}
	w.mu.Lock()
	w.conn = c
	w.mu.Unlock()
	if ctx.Err() != nil {
		c.Close()
		return nil, ctx.Err()
	}
	if err := c.WaitGreeting(); err != nil {
		w.transport = transportError(err)
		c.Close()
		return nil, fmt.Errorf("upstream: greeting of %s: %w", w.cfg.Addr, err)
	}
	sc, err := w.cfg.Credentials.SASL(ctx, w.cfg.Username, authMechanisms(c.Caps()))
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Authenticate(sc); err != nil {
		w.transport = transportError(err)
		c.Close()
		return nil, fmt.Errorf("upstream: authenticate %q at %s: %w", w.cfg.Username, w.cfg.Addr, err)
	}
	w.e.reached(w)
	return c, nil
}

// session connects, brings both sides in line, then follows changes on
// both until the connection fails or ctx is done. synced reports whether
// it got as far as one complete sync.
func (w *worker) session(ctx context.Context) (synced bool, err error) {
	c, err := w.dial(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		w.transport = err != nil && ctx.Err() == nil && connLost(c, err)
		c.Close()
		w.mu.Lock()
		w.conn = nil
		w.mu.Unlock()
	}()
	w.caps = c.Caps()
	idle := w.caps.Has(imap.CapIdle) || w.caps.Has(imap.CapIMAP4rev2)
	condstore := w.caps.Has(imap.CapCondStore)
	w.mu.Lock()
	w.stat.Idle, w.stat.CondStore = idle, condstore
	w.mu.Unlock()

	if err := w.findTrash(c); err != nil {
		return false, err
	}
	if err := w.selectFolder(ctx, c, condstore); err != nil {
		return false, err
	}

	full := true
	var waiting []chan error
	defer func() {
		for _, r := range waiting {
			r <- fmt.Errorf("upstream: sync %q: %w", w.cfg.Mailbox, err)
		}
	}()
	for {
		if _, err := w.sub.Next(); err != nil {
			full = true // overflowed: the full pass reloads everything
		}
		if err := w.pass(ctx, c, full, condstore); err != nil {
			return synced, err
		}
		full, synced = false, true
		w.mu.Lock()
		w.stat.Connected = true
		w.stat.LastSync = time.Now()
		w.stat.LastError = nil
		w.stat.Failures = 0
		w.stat.Messages = 0
		for _, m := range w.st.Messages {
			if m.UID != 0 {
				w.stat.Messages++
			}
		}
		w.dirtySince = time.Time{}
		w.mu.Unlock()
		for _, r := range waiting {
			r <- nil
		}
		waiting = nil

		// Wait for a change on either side.
		var ic *imapclient.IdleCommand
		if idle {
			if ic, err = c.Idle(); err != nil {
				return synced, fmt.Errorf("upstream: IDLE: %w", err)
			}
		}
		poll := time.NewTimer(w.e.opts.PollInterval)
		var closed bool
		select {
		case <-ctx.Done():
		case <-w.sub.C():
			w.markDirty()
		case <-w.upWake:
		case r := <-w.syncReq:
			waiting = append(waiting, r)
			full = true
		case <-c.Closed():
			closed = true
		case <-poll.C:
			full = !idle
		}
		poll.Stop()
		if ctx.Err() != nil {
			return synced, ctx.Err()
		}
		if closed {
			return synced, errors.New("upstream: connection closed by the server")
		}
		if ic != nil {
			if err := ic.Close(); err != nil {
				return synced, fmt.Errorf("upstream: IDLE: %w", err)
			}
			if err := ic.Wait(); err != nil {
				return synced, fmt.Errorf("upstream: IDLE: %w", err)
			}
		} else if err := c.Noop().Wait(); err != nil {
			return synced, fmt.Errorf("upstream: NOOP: %w", err)
		}
	}
}

// connLost tells whether a session failed with err because the connection
// went away (the server died or the network failed) rather than because
// the server refused a command or something local failed. A command cut
// off by a lost connection fails just before the client sees the close.
func connLost(c *imapclient.Client, err error) bool {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return false
	}
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-c.Closed():
		return true
	case <-t.C:
		return false
	}
}

func (w *worker) findTrash(c *imapclient.Client) error {
	w.trash = w.cfg.Trash
	if w.cfg.NoTrash {
		w.trash = ""
		return nil
	}
	if w.trash != "" || !w.caps.Has(imap.CapSpecialUse) {
		return nil
	}
	list, err := c.List("", "*", &imap.ListOptions{ReturnSpecialUse: true}).Collect()
	if err != nil {
		return fmt.Errorf("upstream: LIST: %w", err)
	}
	for _, l := range list {
		if slices.Contains(l.Attrs, imap.MailboxAttrTrash) {
			w.trash = l.Mailbox
			return nil
		}
	}
	return nil
}

func (w *worker) selectFolder(ctx context.Context, c *imapclient.Client, condstore bool) error {
	opts := &imap.SelectOptions{CondStore: condstore}
	sel, err := c.Select(w.cfg.Folder, opts).Wait()
	var ie *imap.Error
	if errors.As(err, &ie) && (ie.Code == imap.ResponseCodeNonExistent || ie.Code == imap.ResponseCodeTryCreate || ie.Code == "") {
		if cerr := c.Create(w.cfg.Folder, nil).Wait(); cerr != nil {
			return fmt.Errorf("upstream: create %q: %w (select: %w)", w.cfg.Folder, cerr, err)
		}
		sel, err = c.Select(w.cfg.Folder, opts).Wait()
	}
	if err != nil {
		return fmt.Errorf("upstream: select %q: %w", w.cfg.Folder, err)
	}
	if sel.UIDValidity != w.st.UIDValidity {
		if w.st.UIDValidity != 0 {
			w.e.opts.Logf("upstream: %s: UIDVALIDITY of %q changed from %d to %d: re-associating by %s", w.cfg.Mailbox, w.cfg.Folder, w.st.UIDValidity, sel.UIDValidity, IDHeader)
		}
		// UIDs of the old validity mean nothing now; the flags stay as the
		// merge base. Copies are found again by their header.
		for id, m := range w.st.Messages {
			m.UID = 0
			w.st.Messages[id] = m
		}
		w.st.UIDValidity = sel.UIDValidity
		w.st.HighestModSeq = 0
		if err := w.e.state.Save(ctx, w.cfg.Mailbox, w.st); err != nil {
			return err
		}
	}
	return nil
}

// upMsg is what the server holds of one voicemail.
type upMsg struct {
	uid   imap.UID
	flags um.Flags
}

// fullView finds every copy in the folder by its header: the association
// is rebuilt from the server, not trusted.
func (w *worker) fullView(c *imapclient.Client) (map[uuid.UUID][]upMsg, error) {
	sd, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: IDHeader, Value: ""}}}, nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("upstream: UID SEARCH: %w", err)
	}
	view := make(map[uuid.UUID][]upMsg)
	uids := sd.AllUIDs()
	if len(uids) == 0 {
		return view, nil
	}
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{IDHeader}, Peek: true}
	bufs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return nil, fmt.Errorf("upstream: UID FETCH: %w", err)
	}
	for _, b := range bufs {
		id, ok := parseIDHeader(b.FindBodySection(section))
		if !ok {
			continue
		}
		view[id] = append(view[id], upMsg{uid: b.UID, flags: fromIMAP(b.Flags)})
	}
	for _, v := range view {
		slices.SortFunc(v, func(a, b upMsg) int { return int(a.uid) - int(b.uid) })
	}
	return view, nil
}

func parseIDHeader(b []byte) (uuid.UUID, bool) {
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(b, "\r\n\r\n"...)))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(strings.TrimSpace(h.Get(IDHeader)))
	return id, err == nil
}

// searchID finds the copies of one message by its header.
func (w *worker) searchID(c *imapclient.Client, id uuid.UUID) ([]imap.UID, error) {
	sd, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: IDHeader, Value: id.String()}}}, nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("upstream: UID SEARCH: %w", err)
	}
	return sd.AllUIDs(), nil
}

// incrementalView fetches the flags of the associated copies: only those
// changed since the last sync where CONDSTORE allows and nothing was
// expunged, else all of them (a FLAGS diff bounded to our own messages),
// so a copy that is missing was expunged or moved away.
func (w *worker) incrementalView(c *imapclient.Client, condstore bool) (map[uuid.UUID][]upMsg, uint64, error) {
	expunged := w.upExpunge.Swap(false)
	byUID := make(map[imap.UID]uuid.UUID)
	var uids []imap.UID
	for id, m := range w.st.Messages {
		if m.UID != 0 {
			byUID[imap.UID(m.UID)] = id
			uids = append(uids, imap.UID(m.UID))
		}
	}
	var modseq uint64
	if condstore {
		sd, err := c.Status(w.cfg.Folder, &imap.StatusOptions{HighestModSeq: true}).Wait()
		if err != nil {
			return nil, 0, fmt.Errorf("upstream: STATUS: %w", err)
		}
		modseq = sd.HighestModSeq
	}
	view := make(map[uuid.UUID][]upMsg)
	if len(uids) == 0 {
		return view, modseq, nil
	}
	opts := &imap.FetchOptions{UID: true, Flags: true}
	changedSince := condstore && !expunged && w.st.HighestModSeq > 0
	if changedSince {
		opts.ChangedSince = w.st.HighestModSeq
	}
	bufs, err := c.Fetch(imap.UIDSetNum(uids...), opts).Collect()
	if err != nil {
		return nil, 0, fmt.Errorf("upstream: UID FETCH: %w", err)
	}
	for _, b := range bufs {
		if id, ok := byUID[b.UID]; ok {
			view[id] = []upMsg{{uid: b.UID, flags: fromIMAP(b.Flags)}}
		}
	}
	if changedSince {
		for uid, id := range byUID {
			if _, ok := view[id]; !ok {
				view[id] = []upMsg{{uid: uid, flags: w.st.Messages[id].Flags}}
			}
		}
	}
	return view, modseq, nil
}

// merge3 merges flags changed on either side since base; a flag is two-
// valued, so both sides cannot change it in different directions.
func merge3(base, a, b um.Flags) um.Flags {
	base, a, b = base&syncMask, a&syncMask, b&syncMask
	return base ^ ((a ^ base) | (b ^ base))
}

// mergeNoBase merges two sides that have no common history (a copy found
// again after a crash, a UIDVALIDITY change or a lost state file): unheard
// wins, so the lamp is lit rather than a message silently passed over;
// \Deleted and the other flags win where set.
func mergeNoBase(a, b um.Flags) um.Flags {
	a, b = a&syncMask, b&syncMask
	return (a|b)&^um.FlagHeard | (a & b & um.FlagHeard)
}

func toIMAP(f um.Flags) []imap.Flag {
	var out []imap.Flag
	for _, n := range (f & syncMask).IMAPNames() {
		out = append(out, imap.Flag(n))
	}
	return out
}

func fromIMAP(flags []imap.Flag) um.Flags {
	var f um.Flags
	for _, n := range flags {
		if g, ok := um.ParseFlag(string(n)); ok {
			f |= g
		}
	}
	return f & syncMask
}

// pass makes both sides equal: the diff of um, the saved state and the
// server is the work to do. full rebuilds the server side from the id
// headers; otherwise only the associated copies are looked at.
func (w *worker) pass(ctx context.Context, c *imapclient.Client, full, condstore bool) error {
	wctx := um.WithSource(ctx, w)
	msgs, err := w.mb.List(ctx, um.Inbox)
	if err != nil {
		return err
	}
	local := make(map[uuid.UUID]um.Message, len(msgs))
	for _, m := range msgs {
		if !m.Raw {
			local[m.ID] = m
		}
	}
	var view map[uuid.UUID][]upMsg
	var modseq uint64
	if full {
		if condstore {
			sd, err := c.Status(w.cfg.Folder, &imap.StatusOptions{HighestModSeq: true}).Wait()
			if err != nil {
				return fmt.Errorf("upstream: STATUS: %w", err)
			}
			modseq = sd.HighestModSeq
		}
		w.upExpunge.Store(false)
		if view, err = w.fullView(c); err != nil {
			return err
		}
	} else if view, modseq, err = w.incrementalView(c, condstore); err != nil {
		return err
	}

	var (
		upDelete []imap.UID
		umDelete []uuid.UUID
		changed  bool
	)
	// apply merges one voicemail present on both sides.
	apply := func(id uuid.UUID, m um.Message, up upMsg, merged um.Flags) error {
		if add := merged &^ m.Flags & syncMask; add != 0 {
			if _, err := w.mb.SetFlags(wctx, []uuid.UUID{id}, um.FlagOp{Mode: um.FlagsAdd, Flags: add}); err != nil && !errors.Is(err, um.ErrNotFound) {
				return err
			}
		}
		if del := m.Flags &^ merged & syncMask; del != 0 {
			if _, err := w.mb.SetFlags(wctx, []uuid.UUID{id}, um.FlagOp{Mode: um.FlagsRemove, Flags: del}); err != nil && !errors.Is(err, um.ErrNotFound) {
				return err
			}
		}
		set := imap.UIDSetNum(up.uid)
		if add := merged &^ up.flags; add != 0 {
			if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: toIMAP(add)}, nil).Close(); err != nil {
				return fmt.Errorf("upstream: UID STORE: %w", err)
			}
		}
		if del := up.flags &^ merged; del != 0 {
			if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsDel, Silent: true, Flags: toIMAP(del)}, nil).Close(); err != nil {
				return fmt.Errorf("upstream: UID STORE: %w", err)
			}
		}
		w.st.Messages[id] = MessageState{UID: uint32(up.uid), Flags: merged}
		changed = true
		return nil
	}
	// pick keeps the copy the state names (or the oldest) and deletes any
	// duplicate.
	pick := func(id uuid.UUID, ups []upMsg) upMsg {
		keep := ups[0]
		for _, u := range ups {
			if uint32(u.uid) == w.st.Messages[id].UID {
				keep = u
			}
		}
		for _, u := range ups {
			if u.uid != keep.uid {
				upDelete = append(upDelete, u.uid)
			}
		}
		return keep
	}

	// Associated voicemail: three-way merge; delete wins.
	for id, e := range w.st.Messages {
		if e.UID == 0 {
			continue
		}
		m, inLocal := local[id]
		ups, inUp := view[id]
		var up upMsg
		if inUp {
			up = pick(id, ups)
		}
		switch {
		case !inLocal && !inUp:
			delete(w.st.Messages, id)
			changed = true
		case !inLocal:
			upDelete = append(upDelete, up.uid)
			delete(w.st.Messages, id)
			changed = true
		case !inUp:
			umDelete = append(umDelete, id)
			delete(w.st.Messages, id)
			changed = true
		default:
			merged := merge3(e.Flags, m.Flags, up.flags)
			if merged != m.Flags&syncMask || merged != up.flags || merged != e.Flags || uint32(up.uid) != e.UID {
				if err := apply(id, m, up, merged); err != nil {
					return err
				}
			}
		}
	}

	// Voicemail without a known copy: find it, or append it (in UID order,
	// so the server sees deposits in the order the phone did).
	for _, m := range msgs {
		if m.Raw {
			continue
		}
		e, has := w.st.Messages[m.ID]
		if has && e.UID != 0 {
			continue
		}
		ups := view[m.ID]
		if len(ups) == 0 && !full && has && e.Appending {
			uids, err := w.searchID(c, m.ID)
			if err != nil {
				return err
			}
			for _, u := range uids {
				ups = append(ups, upMsg{uid: u})
			}
			if len(ups) > 0 {
				bufs, err := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Flags: true}).Collect()
				if err != nil {
					return fmt.Errorf("upstream: UID FETCH: %w", err)
				}
				ups = ups[:0]
				for _, b := range bufs {
					ups = append(ups, upMsg{uid: b.UID, flags: fromIMAP(b.Flags)})
				}
			}
		}
		if len(ups) > 0 {
			up := pick(m.ID, ups)
			merged := mergeNoBase(m.Flags, up.flags)
			if has && !e.Appending {
				merged = merge3(e.Flags, m.Flags, up.flags)
			}
			if err := apply(m.ID, m, up, merged); err != nil {
				return err
			}
			continue
		}
		if err := w.appendMessage(ctx, c, m); err != nil {
			return err
		}
		changed = true
	}

	// Copies of ours the state does not know: a message deleted on the
	// phone while its copy was unknown, or restored on the server. Copies
	// whose id this mailbox never had belong to someone else: left alone.
	if full {
		for id, ups := range view {
			if _, ok := local[id]; ok {
				continue
			}
			if e, ok := w.st.Messages[id]; ok && e.UID != 0 {
				continue // handled above
			}
			if _, err := w.mb.Message(ctx, id); errors.Is(err, um.ErrNotFound) {
				continue
			} else if err != nil {
				return err
			}
			for _, u := range ups {
				upDelete = append(upDelete, u.uid)
			}
			delete(w.st.Messages, id)
			changed = true
		}
		for id, e := range w.st.Messages {
			if _, ok := local[id]; !ok && e.UID == 0 {
				delete(w.st.Messages, id)
				changed = true
			}
		}
	}

	if len(umDelete) > 0 {
		if err := w.mb.Delete(wctx, umDelete...); err != nil && !errors.Is(err, um.ErrNotFound) {
			return err
		}
	}
	if len(upDelete) > 0 {
		if err := w.deleteUpstream(c, upDelete); err != nil {
			return err
		}
	}
	if condstore && modseq != 0 && modseq != w.st.HighestModSeq {
		w.st.HighestModSeq = modseq
		changed = true
	}
	if changed {
		if err := w.e.state.Save(ctx, w.cfg.Mailbox, w.st); err != nil {
			return err
		}
	}
	return nil
}

// appendMessage deposits one voicemail upstream. The state is saved with
// Appending set before the APPEND, so an answer lost to a crash or a
// dropped connection leads to a search, not a second copy.
func (w *worker) appendMessage(ctx context.Context, c *imapclient.Client, m um.Message) error {
	flags := m.Flags & syncMask
	w.st.Messages[m.ID] = MessageState{Flags: flags, Appending: true}
	if err := w.e.state.Save(ctx, w.cfg.Mailbox, w.st); err != nil {
		return err
	}
	audio, err := w.mb.OpenAudio(ctx, m.ID)
	if err != nil {
		return err
	}
	defer audio.Close()
	email := w.e.svc.RenderEmail(m, w.rend)
	cmd := c.Append(w.cfg.Folder, email.Size(), &imap.AppendOptions{Flags: toIMAP(flags), Time: m.Time})
	_, werr := email.WriteTo(cmd, audio)
	cerr := cmd.Close()
	data, err := cmd.Wait()
	if err = errors.Join(werr, cerr, err); err != nil {
		return fmt.Errorf("upstream: APPEND %s: %w", m.ID, err)
	}
	if w.e.afterAppend != nil && w.e.afterAppend() {
		c.Close()
		return errors.New("upstream: APPEND answer lost (test)")
	}
	uid := data.UID
	if uid == 0 || data.UIDValidity != w.st.UIDValidity {
		// No UIDPLUS: find the copy by its header.
		uids, err := w.searchID(c, m.ID)
		if err != nil {
			return err
		}
		if len(uids) == 0 {
			return fmt.Errorf("upstream: APPEND %s: copy not found after append", m.ID)
		}
		uid = uids[0]
	}
	w.st.Messages[m.ID] = MessageState{UID: uint32(uid), Flags: flags}
	return nil
}

// deleteUpstream removes copies the way a mail client would: a move to
// Trash, or \Deleted and a UID EXPUNGE of exactly these UIDs. Never a bare
// EXPUNGE: the folder may hold the user's other mail marked \Deleted.
func (w *worker) deleteUpstream(c *imapclient.Client, uids []imap.UID) error {
	set := imap.UIDSetNum(uids...)
	if w.trash != "" && !strings.EqualFold(w.trash, w.cfg.Folder) {
		if w.caps.Has(imap.CapMove) || w.caps.Has(imap.CapIMAP4rev2) {
			if _, err := c.Move(set, w.trash).Wait(); err != nil {
				return fmt.Errorf("upstream: UID MOVE to %q: %w", w.trash, err)
			}
			return nil
		}
		if _, err := c.Copy(set, w.trash).Wait(); err != nil {
			return fmt.Errorf("upstream: UID COPY to %q: %w", w.trash, err)
		}
	}
	if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		return fmt.Errorf("upstream: UID STORE: %w", err)
	}
	if w.caps.Has(imap.CapUIDPlus) || w.caps.Has(imap.CapIMAP4rev2) {
		if err := c.UIDExpunge(set).Close(); err != nil {
			return fmt.Errorf("upstream: UID EXPUNGE: %w", err)
		}
	}
	return nil
}
