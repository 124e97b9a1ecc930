package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"net/textproto"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/lease"
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
	e      *Engine
	cfg    Config
	mb     *um.Mailbox
	rend   um.RenderOptions
	keeper *lease.Keeper

	// Set by the run goroutine while this node owns the mailbox.
	h   *host
	sub *um.Subscription

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	upWake    chan struct{} // the server sent something while we idled
	upExpunge atomic.Bool   // ... and it included an EXPUNGE
	upExists  atomic.Bool   // ... or new mail (sync.go looks for copies in it)
	syncReq   chan chan error
	handoffC  chan struct{} // the prober left: probe in its place

	// Owned by the run goroutine.
	lost      *lease.Held // a lease that a fenced write found lost
	transport bool        // the last attempt failed for want of the server
	st        *State
	trash     string
	caps      imap.CapSet
	condstore bool
	g         *guard                  // the current connection's framing guard
	again     bool                    // a restore asks for a full pass next
	trashed   map[uuid.UUID]bool      // moved to Trash since the last full pass (sync.go)
	appended  map[uuid.UUID]appendTry // the last APPEND of each voicemail
	validity  time.Time               // when the folder's UIDVALIDITY last changed
	pending   []chan error            // sync requests that cut a backoff short
	idling    *imapclient.IdleCommand // an IDLE ended whose answer is still to be read

	known atomic.Pointer[map[imap.UID]bool] // UIDs of our copies, for the unsolicited-data handler

	// The answers the server owes for the engine's own APPENDs (EXISTS)
	// and MOVEs and UID EXPUNGEs (EXPUNGE): echoes, not news, so they wake
	// nothing. Reset at each connection.
	echoExists, echoExpunge atomic.Int64
	// expunges counts the EXPUNGE responses outside the engine's own UID
	// EXPUNGE commands, echoes or not (see folderMark).
	expunges atomic.Int64

	mu         sync.Mutex
	stat       Status
	dirtySince time.Time     // first um change not yet carried over
	conn       *guard        // the session's connection, for closeConn
	owning     chan struct{} // while this node owns the mailbox; closed when that ends
}

func newWorker(e *Engine, cfg Config, mb *um.Mailbox) *worker {
	w := &worker{e: e, cfg: cfg, mb: mb, done: make(chan struct{}),
		upWake: make(chan struct{}, 1), syncReq: make(chan chan error), handoffC: make(chan struct{}, 1),
		appended: make(map[uuid.UUID]appendTry)}
	w.rend = um.RenderOptions{Mailbox: cfg.Mailbox}
	w.stat = Status{Mailbox: cfg.Mailbox, Configured: true}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.keeper = lease.New(lease.Options{Leaser: e.leaser, Mailbox: cfg.Mailbox, Purpose: Purpose, Node: e.svc.Node(),
		TTL: e.opts.LeaseTTL, Logger: e.opts.Logger})
	return w
}

func (w *worker) start() { go w.run() }

func (w *worker) stop() {
	w.cancel()
	w.closeConn()
	<-w.done
}

// closeConn closes the session's connection, from any goroutine; the run
// goroutine, whose commands then fail, ends the session. It closes the
// connection outside w.mu, and closes only the connection, not go-imap's
// client, whose Close waits for the client's reader: status never waits
// for the network, and stop waits only for the run goroutine.
func (w *worker) closeConn() {
	w.mu.Lock()
	g := w.conn
	w.conn = nil
	w.mu.Unlock()
	if g != nil {
		g.Close()
	}
}

// readerWait is how long hangUp waits for go-imap's client to end once its
// connection is closed.
const readerWait = 5 * time.Second

// hangUp ends the session's client c, on the run goroutine. Once the
// connection is closed (which the guard bounds) the client's reader ends
// at once, unless it is blocked handing the answer to a command over to
// the run goroutine, which no longer reads it: a bug, logged, and not
// waited for beyond readerWait, which go-imap's Close would do for ever.
func (w *worker) hangUp(c *imapclient.Client) {
	w.mu.Lock()
	w.conn = nil
	w.mu.Unlock()
	w.g.Close()
	t := time.NewTimer(readerWait)
	defer t.Stop()
	select {
	case <-c.Closed():
	case <-t.C:
		w.e.opts.Logger.Error("upstream: the IMAP client's reader did not end with its connection", "mailbox", w.cfg.Mailbox)
	}
}

func (w *worker) status() Status {
	holder, _, mine := w.keeper.Owner()
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stat
	s.Owner, s.Owning = holder, mine
	if !w.dirtySince.IsZero() && w.owning != nil {
		s.Lag = time.Since(w.dirtySince)
	}
	if w.owning == nil {
		s.Connected = false
	}
	return s
}

func (w *worker) setErr(err error) {
	w.mu.Lock()
	w.stat.Connected = false
	w.stat.LastError = err
	w.stat.Failures++
	w.mu.Unlock()
	w.e.logError(w.cfg, err)
}

// arm sets the deadline of the command about to be sent.
func (w *worker) arm() { w.armFetch(0) }

// fetchAnswer is what the answer about one message of a FETCH may take
// beyond Options.MaxAnswer: its UID, flags and one header field take a
// tenth of it.
const fetchAnswer = 1 << 10

// armFetch is arm for a FETCH of n messages.
func (w *worker) armFetch(n int) {
	if w.g != nil {
		w.g.armFor(w.e.opts.CommandTimeout, int64(n)*fetchAnswer)
	}
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
	owning, err := w.waitOwner(ctx)
	if err != nil {
		return err
	}
	// One wait for both steps, the request taken and its answer: req goes
	// nil once the run loop took it, and reply has no answer before that.
	reply := make(chan error, 1)
	req := w.syncReq
	for {
		select {
		case req <- reply:
			req = nil
		case err := <-reply:
			return err
		case <-owning:
			return w.notOwner()
		case <-ctx.Done():
			return ctx.Err()
		case <-w.done:
			return fmt.Errorf("upstream: sync %q: %w", w.cfg.Mailbox, um.ErrClosed)
		}
	}
}

// run syncs the mailbox while this node owns it, until the worker stops.
func (w *worker) run() {
	defer close(w.done)
	w.keeper.Run(w.ctx, w.owned)
}

// owned runs the mailbox's sync under the lease h until ctx is done (the
// lease is lost, or the worker stops). It starts from the state as the
// store has it: another node may have synced the mailbox meanwhile.
func (w *worker) owned(ctx context.Context, h *lease.Held) {
	if w.lost == h {
		// A fenced write found this lease lost: nothing more is done under
		// it, and the keeper learns it at its next renewal.
		<-ctx.Done()
		return
	}
	ctx = withHeld(ctx, h)
	owning := make(chan struct{})
	w.mu.Lock()
	w.owning = owning
	w.mu.Unlock()
	w.h = w.e.joinHost(w)
	// Our own changes to um are made with WithSource(ctx, w): no echo.
	w.sub = w.e.svc.Subscribe(w.cfg.Mailbox, um.SubscribeOptions{Source: w})
	// The connection is closed the moment the lease is lost, so no command
	// of this node's is still on its way when another node takes over.
	unhook := context.AfterFunc(ctx, w.closeConn)
	defer func() {
		unhook()
		w.sub.Close()
		w.e.leaveHost(w)
		w.mu.Lock()
		w.owning = nil
		w.mu.Unlock()
		close(owning)
	}()
	w.st, w.pending = nil, nil
	if w.sync(ctx) {
		w.lost = h
		w.e.opts.Logger.Warn("upstream: lease lost: sync stopped", "mailbox", w.cfg.Mailbox, "epoch", h.Lease().Epoch)
		<-ctx.Done()
	}
}

// sync connects and syncs, again and again after failures, until ctx is
// done or a fenced write of the state fails for the lease; then it returns
// true.
func (w *worker) sync(ctx context.Context) (leaseLost bool) {
	w.markDirty() // until the first sync, nothing is known to be carried over
	backoff := w.e.opts.MinBackoff
	for ctx.Err() == nil {
		if w.st == nil {
			st, err := w.e.state.Load(ctx, w.cfg.Mailbox)
			switch {
			case errors.Is(err, um.ErrNotFound):
				st = &State{Messages: make(map[uuid.UUID]MessageState)}
			case errors.Is(err, um.ErrLeaseHeld):
				w.setErr(err)
				return true
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
			return false
		}
		if errors.Is(err, um.ErrLeaseHeld) {
			w.setErr(err)
			return true
		}
		if synced && !errors.Is(err, ErrServerFault) {
			backoff = w.e.opts.MinBackoff
		}
		w.setErr(err)
		for _, r := range w.pending {
			r <- fmt.Errorf("upstream: sync %q: %w: %w", w.cfg.Mailbox, ErrNotConnected, err)
		}
		w.pending = nil
		wake, probe := w.e.failed(w, w.transport)
		d := backoff
		if probe {
			d = min(d, w.e.opts.ProbeInterval)
		}
		w.sleep(ctx, d, wake)
		backoff = min(2*backoff, w.e.opts.MaxBackoff)
	}
	return false
}

// guardedSession runs one session and turns a panic in it into an error,
// so a bug met while talking to one user's mail server ends that session,
// not the PBX: the worker reconnects after its backoff as after any error.
func (w *worker) guardedSession(ctx context.Context) (synced bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("upstream: %s: internal error: %v", w.cfg.Mailbox, r)
			w.e.opts.Logger.Error("upstream: internal error", "mailbox", w.cfg.Mailbox, "panic", r, "stack", string(debug.Stack()))
			w.closeConn() // a connection dial made before it panicked
		}
	}()
	return w.session(ctx)
}

// sleep waits d with jitter (between d/2 and d). A sync request ends the
// wait once MinBackoff has passed (the attempt it makes answers it), and is
// answered with the error of the last attempt before that, so hosts that
// ask often cannot make the worker reconnect faster than MinBackoff. When
// wake is closed (another worker reached the server again) it returns after
// a short random delay instead; when the prober role is handed over to it,
// at once.
func (w *worker) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) {
	start := time.Now()
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
			if time.Since(start) >= w.e.opts.MinBackoff {
				w.pending = append(w.pending, r)
				return
			}
			w.mu.Lock()
			err := w.stat.LastError
			w.mu.Unlock()
			r <- fmt.Errorf("upstream: sync %q: %w: %w", w.cfg.Mailbox, ErrNotConnected, err)
		}
	}
}

func (w *worker) dial(ctx context.Context) (*imapclient.Client, error) {
	opts := &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Expunge: func(uint32) {
				w.expunges.Add(1)
				if !takeEcho(&w.echoExpunge) {
					w.upExpunge.Store(true)
					w.poke()
				}
			},
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages == nil || !takeEcho(&w.echoExists) {
					w.upExists.Store(w.upExists.Load() || d.NumMessages != nil)
					w.poke()
				}
			},
			Fetch: w.unsolicitedFetch,
		},
	}
	// Logins to one address queue here, not at the server.
	select {
	case w.h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-w.h.sem }()
	g, err := w.connect(ctx)
	if err != nil {
		w.transport = transportError(err)
		return nil, fmt.Errorf("upstream: connect to %s: %w", w.cfg.Addr, err)
	}
	w.echoExists.Store(0)
	w.echoExpunge.Store(0)
	c := imapclient.New(g, opts)
	w.g = g
	w.mu.Lock()
	w.conn = g
	w.mu.Unlock()
	if ctx.Err() != nil {
		w.hangUp(c)
		return nil, ctx.Err()
	}
	w.arm()
	if err := c.WaitGreeting(); err != nil {
		err = w.explain(c, err)
		w.transport = transportError(err)
		w.hangUp(c)
		return nil, fmt.Errorf("upstream: greeting of %s: %w", w.cfg.Addr, err)
	}
	if c.State() != imap.ConnStateNotAuthenticated {
		w.hangUp(c)
		return nil, fmt.Errorf("upstream: greeting of %s: %w: PREAUTH refused", w.cfg.Addr, ErrServerFault)
	}
	w.arm()
	caps, err := c.Capability().Wait()
	if err != nil {
		err = w.explain(c, err)
		w.transport = transportError(err)
		w.hangUp(c)
		return nil, fmt.Errorf("upstream: CAPABILITY at %s: %w", w.cfg.Addr, err)
	}
	sc, err := w.cfg.Credentials.SASL(ctx, w.cfg.Username, authMechanisms(caps))
	if err != nil {
		w.hangUp(c)
		return nil, err
	}
	w.arm()
	if err := c.Authenticate(sc); err != nil {
		err = w.explain(c, err)
		w.transport = transportError(err)
		w.hangUp(c)
		return nil, fmt.Errorf("upstream: authenticate %q at %s: %w", w.cfg.Username, w.cfg.Addr, err)
	}
	w.e.reached(w)
	return c, nil
}

// unsolicitedFetch reads a FETCH the server sent unasked without keeping
// any body, and wakes the worker only for a flag change that may concern
// one of its copies: a flood about other mail costs no round trip.
func (w *worker) unsolicitedFetch(m *imapclient.FetchMessageData) {
	// go-imap calls this on a goroutine of its own, outside guardedSession:
	// a panic here would end the PBX, so it ends the session instead, and
	// reads away the rest of the message, whose literals go-imap's reader
	// waits for before it can see the connection closed.
	defer func() {
		if r := recover(); r != nil {
			w.e.opts.Logger.Error("upstream: internal error in an unsolicited FETCH", "mailbox", w.cfg.Mailbox, "panic", r, "stack", string(debug.Stack()))
			w.closeConn()
			defer func() { recover() }() // what a closed connection leaves of the message
			for m.Next() != nil {
			}
		}
	}()
	if w.e.onUnsolicited != nil {
		w.e.onUnsolicited()
	}
	var uid imap.UID
	flags := false
	for item := m.Next(); item != nil; item = m.Next() {
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			uid = it.UID
		case imapclient.FetchItemDataFlags:
			flags = true
		case imapclient.FetchItemDataBodySection:
			if it.Literal != nil {
				io.Copy(io.Discard, it.Literal)
			}
		case imapclient.FetchItemDataBinarySection:
			if it.Literal != nil {
				io.Copy(io.Discard, it.Literal)
			}
		}
	}
	if !flags {
		return
	}
	if known := w.known.Load(); uid != 0 && known != nil && !(*known)[uid] {
		return
	}
	w.poke()
}

// explain names the cause of a session's failure err where the guard knows
// it: the limit the server broke (go-imap's errors do not wrap what the
// connection's Read returned), the command deadline, or a response that
// did not parse.
func (w *worker) explain(c *imapclient.Client, err error) error {
	if ferr := w.g.fault(); ferr != nil && err != nil && !errors.Is(err, ErrServerFault) {
		return fmt.Errorf("%w (%w)", ferr, err)
	} else if err != nil && w.g.expired() {
		return fmt.Errorf("upstream: no answer from %s within %v: %w", w.cfg.Addr, w.e.opts.CommandTimeout, err)
	}
	return w.unreadable(c, err)
}

// unreadable makes err a server fault when go-imap's client ended the
// connection on a response it could not parse: the server answered, with
// garbage, and is backed off from like any server that misbehaves, not
// probed for as if the network had failed. go-imap reports a parse
// failure and a reset alike, as text, so the guard tells them apart: a
// client that stopped reading although every Read of the connection
// succeeded stopped at what it read.
func (w *worker) unreadable(c *imapclient.Client, err error) error {
	var ie *imap.Error
	if err == nil || errors.Is(err, ErrServerFault) || errors.As(err, &ie) || w.g.readFailed() {
		return err
	}
	t := time.NewTimer(100 * time.Millisecond) // the client closes before its reader ends
	defer t.Stop()
	select {
	case <-c.Closed():
	case <-t.C:
		return err // still reading: the failure was not the client's
	}
	if w.g.readFailed() {
		return err
	}
	return fmt.Errorf("%w: unreadable answer from %s (%w)", ErrServerFault, w.cfg.Addr, err)
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
		err = w.explain(c, err)
		// A lost connection says the address went away only of a session
		// that had synced: one lost before that, after a login the server
		// accepted, is the server's doing (overloaded, or hostile), and
		// is backed off like any failure. Counted as the address being
		// down, it made this worker probe at ProbeInterval, and each login
		// the probe made woke every worker of the address to log in too.
		w.transport = synced && err != nil && ctx.Err() == nil && !errors.Is(err, ErrServerFault) && connLost(c, err)
		w.hangUp(c)
	}()
	w.caps = c.Caps()
	idle := w.caps.Has(imap.CapIdle) || w.caps.Has(imap.CapIMAP4rev2)
	condstore := w.caps.Has(imap.CapCondStore)
	w.condstore = condstore
	w.mu.Lock()
	w.stat.Idle, w.stat.CondStore = idle, condstore
	w.mu.Unlock()

	if err := w.findTrash(c); err != nil {
		return false, err
	}
	if err := w.selectFolder(ctx, c, condstore, false); err != nil {
		return false, err
	}

	full := true
	waiting := w.pending
	w.pending = nil
	defer func() {
		if len(waiting) > 0 {
			err := w.explain(c, err)
			if err == nil {
				err = errors.New("upstream: internal error") // a panic, on its way to guardedSession
			}
			for _, r := range waiting {
				r <- fmt.Errorf("upstream: sync %q: %w", w.cfg.Mailbox, err)
			}
		}
	}()
	localOnly := false
	var idling *imapclient.IdleCommand // ended, its answer not yet read
	for {
		if _, err := w.sub.Next(); err != nil {
			full = true // overflowed: the full pass reloads everything
		}
		w.idling = idling
		err := w.pass(ctx, c, full, condstore, localOnly && !full)
		if ierr := w.idleDone(); ierr != nil && err == nil {
			err = ierr
		}
		idling = nil
		// Echoes still owed now never come (a command that did less):
		// they must not swallow news.
		w.echoExists.Store(0)
		w.echoExpunge.Store(0)
		if err != nil {
			return synced, err
		}
		full, synced = false, true
		w.mu.Lock()
		w.stat.Connected = true
		w.stat.LastSync = time.Now()
		w.stat.LastError = nil
		w.stat.Failures = 0
		w.stat.Messages = 0
		known := make(map[imap.UID]bool, len(w.st.Messages))
		for _, m := range w.st.Messages {
			if m.UID != 0 && !m.Removed {
				w.stat.Messages++
				known[imap.UID(m.UID)] = true
			}
		}
		w.known.Store(&known)
		w.dirtySince = time.Time{}
		w.mu.Unlock()
		for _, r := range waiting {
			r <- nil
		}
		waiting = nil

		// Wait for a change on either side.
		var ic *imapclient.IdleCommand
		w.arm()
		if idle {
			if ic, err = c.Idle(); err != nil {
				return synced, fmt.Errorf("upstream: IDLE: %w", err)
			}
		}
		poll := time.NewTimer(w.e.opts.PollInterval)
		if w.g != nil {
			// Silence is expected while idling, up to the poll.
			w.g.arm(w.e.opts.PollInterval + w.e.opts.CommandTimeout)
		}
		var closed bool
		localOnly = false
		select {
		case <-ctx.Done():
		case <-w.sub.C():
			w.markDirty()
			// While idling the server announces what changes; it said
			// nothing, so only the phone's side needs a look (a notice that
			// comes late wakes the next pass).
			localOnly = idle && len(w.upWake) == 0 && !w.upExpunge.Load()
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
		w.arm()
		if ic != nil {
			// DONE is sent; its answer is read after the pass's first
			// commands went out behind it, which saves a round trip.
			if err := ic.Close(); err != nil {
				return synced, fmt.Errorf("upstream: IDLE: %w", err)
			}
			if w.e.sequential {
				if err := ic.Wait(); err != nil {
					return synced, fmt.Errorf("upstream: IDLE: %w", err)
				}
			} else {
				idling = ic
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
	w.arm()
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

// validityWindow is how soon after a change of the folder's UIDVALIDITY
// another change is taken for a server fault rather than a folder that was
// recreated: every change voids every UID and costs a search.
const validityWindow = 10 * time.Minute

// selectFolder selects the folder, creating it when missing, and checks
// its UIDVALIDITY: 0 is a server fault, and so is a change within a
// session (within) or within validityWindow of the last one; any other
// change voids the state's UIDs.
func (w *worker) selectFolder(ctx context.Context, c *imapclient.Client, condstore, within bool) error {
	opts := &imap.SelectOptions{CondStore: condstore}
	w.arm()
	sel, err := c.Select(w.cfg.Folder, opts).Wait()
	var ie *imap.Error
	if errors.As(err, &ie) && (ie.Code == imap.ResponseCodeNonExistent || ie.Code == imap.ResponseCodeTryCreate || ie.Code == "") {
		w.arm()
		if cerr := c.Create(w.cfg.Folder, nil).Wait(); cerr != nil {
			return fmt.Errorf("upstream: create %q: %w (select: %w)", w.cfg.Folder, cerr, err)
		}
		w.arm()
		sel, err = c.Select(w.cfg.Folder, opts).Wait()
	}
	if err != nil {
		return fmt.Errorf("upstream: select %q: %w", w.cfg.Folder, err)
	}
	if sel.UIDValidity == 0 {
		return fmt.Errorf("%w: UIDVALIDITY 0 for %q", ErrServerFault, w.cfg.Folder)
	}
	if sel.UIDValidity != w.st.UIDValidity {
		if w.st.UIDValidity != 0 {
			if within || !w.validity.IsZero() && time.Since(w.validity) < validityWindow {
				return fmt.Errorf("%w: UIDVALIDITY of %q changed again, from %d to %d", ErrServerFault, w.cfg.Folder, w.st.UIDValidity, sel.UIDValidity)
			}
			w.validity = time.Now()
			w.e.logInfo(w.cfg, "UIDVALIDITY changed: re-associating copies by header", "old", w.st.UIDValidity, "new", sel.UIDValidity, "header", IDHeader)
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

func parseIDHeader(b []byte) (uuid.UUID, bool) {
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(b, "\r\n\r\n"...)))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(strings.TrimSpace(h.Get(IDHeader)))
	return id, err == nil
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

// idleDone reads the answer to the IDLE the pass started behind, once.
func (w *worker) idleDone() error {
	ic := w.idling
	w.idling = nil
	if ic == nil {
		return nil
	}
	w.arm()
	if err := ic.Wait(); err != nil {
		return fmt.Errorf("upstream: IDLE: %w", err)
	}
	return nil
}

// takeEcho consumes one expected echo, if any.
func takeEcho(n *atomic.Int64) bool {
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// appendTry is when a voicemail was last APPENDed and how often so far.
type appendTry struct {
	at time.Time
	n  int
}

// wait is how long after this try the next may be made: MinBackoff,
// doubling with each try, up to MaxBackoff.
func (a appendTry) wait(o *Options) time.Duration {
	d := o.MinBackoff
	for i := 1; i < a.n && d < o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.MaxBackoff)
}
