package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// maxPayload is the largest notification pgstore sends. PostgreSQL refuses
// payloads of 8000 bytes or more; a change that does not fit is announced
// as a resync of its mailbox.
const maxPayload = 7900

// wireChange is a um.Change as a notification carries it. Keys are short to
// fit more events under maxPayload.
type wireChange struct {
	Instance string      `json:"i"`
	Node     string      `json:"n"`
	Mailbox  string      `json:"b"`
	Resync   bool        `json:"r,omitempty"`
	Events   []wireEvent `json:"e,omitempty"`
}

type wireEvent struct {
	Kind    um.EventKind `json:"k"`
	Folder  string       `json:"f,omitempty"`
	NewName string       `json:"t,omitempty"`
	Message *wireMessage `json:"m,omitempty"`
}

type wireMessage struct {
	ID           uuid.UUID `json:"id"`
	UID          um.UID    `json:"u,omitempty"`
	Flags        um.Flags  `json:"fl,omitempty"`
	Keywords     []string  `json:"kw,omitempty"`
	Urgent       bool      `json:"ur,omitempty"`
	CallerNumber string    `json:"cn,omitempty"`
	CallerName   string    `json:"cm,omitempty"`
	Time         *int64    `json:"tm,omitempty"`
	Duration     int64     `json:"d,omitempty"`
	AudioType    string    `json:"at,omitempty"`
	Transcript   string    `json:"tr,omitempty"`
	Size         int64     `json:"s,omitempty"`
	Added        *int64    `json:"a,omitempty"`
	Raw          bool      `json:"raw,omitempty"`
	ModSeq       uint64    `json:"ms,omitempty"`
}

func toWire(m um.Message) *wireMessage {
	return &wireMessage{
		ID: m.ID, UID: m.UID, Flags: m.Flags, Keywords: m.Keywords, Urgent: m.Urgent,
		CallerNumber: m.CallerNumber, CallerName: m.CallerName, Time: toNS(m.Time),
		Duration: int64(m.Duration), AudioType: m.AudioType, Transcript: m.Transcript,
		Size: m.Size, Added: toNS(m.Added), Raw: m.Raw, ModSeq: m.ModSeq,
	}
}

func (w *wireMessage) message(folder string) um.Message {
	return um.Message{
		ID: w.ID, Folder: folder, UID: w.UID, Flags: w.Flags, Keywords: w.Keywords, Urgent: w.Urgent,
		CallerNumber: w.CallerNumber, CallerName: w.CallerName, Time: fromNS(w.Time),
		Duration: time.Duration(w.Duration), AudioType: w.AudioType, Transcript: w.Transcript,
		Size: w.Size, Added: fromNS(w.Added), Raw: w.Raw, ModSeq: w.ModSeq,
	}
}

// encodeChange returns the notification payload for events of mailbox: the
// change in full, or a resync notice when that would not fit.
func (s *Store) encodeChange(mailbox string, events []um.Event) (string, error) {
	wc := wireChange{Instance: s.instance, Node: s.node(), Mailbox: mailbox}
	for _, e := range events {
		we := wireEvent{Kind: e.Kind, Folder: e.Folder, NewName: e.NewName}
		if e.Kind == um.EventAdded || e.Kind == um.EventFlags || e.Kind == um.EventRemoved {
			we.Message = toWire(e.Message)
		}
		wc.Events = append(wc.Events, we)
	}
	b, err := json.Marshal(wc)
	if err != nil {
		return "", err
	}
	if len(b) <= maxPayload {
		return string(b), nil
	}
	wc.Events, wc.Resync = nil, true
	b, err = json.Marshal(wc)
	if err != nil {
		return "", err
	}
	if len(b) > maxPayload {
		return "", fmt.Errorf("pgstore: mailbox name of %d bytes too long for a notification", len(mailbox))
	}
	return string(b), nil
}

// notify queues the change for the other nodes in the transaction that
// makes it: PostgreSQL delivers it when, and only when, the transaction
// commits, and delivers notifications in commit order.
func (s *Store) notify(ctx context.Context, tx pgx.Tx, mailbox string, events []um.Event) error {
	if len(events) == 0 {
		return nil
	}
	payload, err := s.encodeChange(mailbox, events)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", Channel, payload); err != nil {
		return fmt.Errorf("pgstore: notify: %w", err)
	}
	return nil
}

// decodeChange turns a payload into the change to deliver; ok is false when
// the change is this Store's own or node's.
func (s *Store) decodeChange(payload, node string) (c um.Change, ok bool, err error) {
	var wc wireChange
	if err := json.Unmarshal([]byte(payload), &wc); err != nil {
		return um.Change{}, false, fmt.Errorf("pgstore: malformed notification: %w", err)
	}
	if wc.Instance == s.instance || wc.Node == node {
		return um.Change{}, false, nil
	}
	c = um.Change{Mailbox: wc.Mailbox, Node: wc.Node}
	if wc.Resync {
		c.Events = []um.Event{{Kind: um.EventResync}}
		return c, true, nil
	}
	c.Events = make([]um.Event, len(wc.Events))
	for i, we := range wc.Events {
		e := um.Event{Kind: we.Kind, Folder: we.Folder, NewName: we.NewName}
		if we.Message != nil {
			e.Message = we.Message.message(we.Folder)
		}
		c.Events[i] = e
	}
	return c, true, nil
}

// Watch implements um.Watcher. It holds a connection of its own that
// LISTENs on Channel and calls deliver, on the calling goroutine and in
// commit order, with every change another node commits. When the connection
// is lost (an error, or a ping unanswered after PingInterval without
// notifications) it reconnects with backoff, and once it listens again it
// delivers a change with one EventResync for every mailbox, because changes
// may have been committed while nobody listened. For the same reason, when it
// first listens it delivers one EventResync with an empty Mailbox (all). It returns when ctx is done
// or the Store is closed.
func (s *Store) Watch(ctx context.Context, node string, deliver func(um.Change)) error {
	s.watchNode.Store(&node)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	first, needResync := true, false
	backoff := 50 * time.Millisecond
	for {
		conn, err := s.listen(ctx, node)
		if err == nil && first {
			// Changes committed between um.New and this LISTEN were not
			// heard: whoever loaded state meanwhile reloads it.
			first = false
			deliver(um.Change{Events: []um.Event{{Kind: um.EventResync}}})
		}
		if err == nil && needResync {
			if err = s.resyncAll(ctx, conn, deliver); err != nil {
				conn.Close(context.Background())
			}
		}
		if err == nil {
			needResync = false
			backoff = 50 * time.Millisecond
			err = s.receive(ctx, conn, node, deliver)
			closeCtx, stop := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closeCtx)
			stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Whatever failed, changes may have been committed while this node
		// did not listen.
		needResync = true
		s.log.Warn("pgstore: change feed lost; reconnecting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// listen opens the notification connection, named after node in
// pg_stat_activity, and starts listening.
func (s *Store) listen(ctx context.Context, node string) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "um-watch/" + node
	cctx, cancel := context.WithTimeout(ctx, max(s.opts.PingInterval, 5*time.Second))
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connect for notifications: %w", err)
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("pgstore: listen: %w", err)
	}
	return conn, nil
}

// resyncAll delivers a resync for every mailbox. It lists them on the
// notification connection, just opened and listening: the pool's
// connections may have been lost with the old one and not know it yet.
func (s *Store) resyncAll(ctx context.Context, conn *pgx.Conn, deliver func(um.Change)) error {
	qctx, cancel := context.WithTimeout(ctx, s.opts.PingInterval)
	defer cancel()
	rows, err := conn.Query(qctx, "SELECT name FROM um_mailboxes ORDER BY name")
	if err != nil {
		return fmt.Errorf("pgstore: list mailboxes to resync: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgstore: list mailboxes to resync: %w", err)
	}
	for _, name := range names {
		deliver(um.Change{Mailbox: name, Events: []um.Event{{Kind: um.EventResync}}})
	}
	return nil
}

func (s *Store) receive(ctx context.Context, conn *pgx.Conn, node string, deliver func(um.Change)) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, s.opts.PingInterval)
		n, err := conn.WaitForNotification(wctx)
		idle := wctx.Err() != nil
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if !idle || conn.IsClosed() {
				return fmt.Errorf("pgstore: wait for notification: %w", err)
			}
			if err := s.ping(ctx, conn); err != nil {
				return err
			}
			continue
		}
		c, ok, err := s.decodeChange(n.Payload, node)
		if err != nil {
			s.log.Warn("pgstore: malformed notification ignored", "err", err)
			continue
		}
		if ok {
			deliver(c)
		}
	}
}

func (s *Store) ping(ctx context.Context, conn *pgx.Conn) error {
	pctx, cancel := context.WithTimeout(ctx, s.opts.PingInterval)
	defer cancel()
	if err := conn.Ping(pctx); err != nil {
		return fmt.Errorf("pgstore: notification connection lost: %w", err)
	}
	return nil
}
