package upstream_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/internal/cyrus"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/internal/wanproxy"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/google/uuid"
)

var (
	modelSeed = flag.Uint64("model.seed", 0, "seed of TestModel (0: a new one, printed)")
	modelTime = flag.Duration("model.time", 0, "how long TestModel runs against each profile (default 20s)")
)

// server is a mail server the model test runs against.
type server interface {
	// Kill ends the server as a crash would; Restart starts it again with
	// its data.
	Kill()
	Restart() error
	// TLSAddr and TLSConfig reach its implicit-TLS port.
	TLSAddr() string
	TLSConfig() *tls.Config
}

type dovecotServer struct{ *dovecot.Server }

func (d dovecotServer) TLSAddr() string { return d.Server.TLSAddr }

// profile is a server as the engine meets it.
type profile struct {
	name string
	// start starts the server with user "1001" (password pass1001).
	start func(t *testing.T) server
	// trash is Config.Trash: the folder deleted copies go to when the
	// server does not mark one with SPECIAL-USE.
	trash   string
	latency time.Duration // of the network between the engine and the server
	cutMean time.Duration // mean time between random cuts of the engine's connection
}

type cyrusServer struct{ *cyrus.Server }

func (c cyrusServer) TLSAddr() string { return c.Server.TLSAddr }

func startCyrus(t *testing.T) server {
	s, err := cyrus.Start(cyrus.Options{Dir: t.TempDir(), Users: []string{"1001"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return cyrusServer{s}
}

func dovecotProfile(opts dovecot.Options) func(t *testing.T) server {
	return func(t *testing.T) server {
		opts.Dir, opts.Users = t.TempDir(), map[string]string{"1001": "pass1001"}
		opts.MailLog = true // for the report of a failure
		d, err := dovecot.Start(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Stop)
		return dovecotServer{d}
	}
}

var profiles = []profile{
	{name: "dovecot", start: dovecotProfile(dovecot.Options{})},
	{name: "exchange-online", start: dovecotProfile(dovecot.ExchangeOnline()), trash: "Deleted Items"},
	{name: "no-move-no-uidplus", start: dovecotProfile(dovecot.OldServer())},
	{name: "cyrus", start: startCyrus},
	{name: "wan", start: dovecotProfile(dovecot.Options{}), latency: 100 * time.Millisecond, cutMean: 20 * time.Second},
}

// TestModel drives the phone, a client of the embedded IMAP server and the
// user's own mail client at random, with server crashes, cut connections
// and PBX restarts between the steps, and after each quiet point checks
// what must always hold: exactly one live upstream copy per voicemail in
// um's INBOX and none of a deleted one, at most one in the server's Trash,
// flags equal on both sides, the lamp equal to the store's counts, nothing
// lost. It prints its seed; -model.seed reruns one, -model.time runs
// longer.
func TestModel(t *testing.T) {
	seed := *modelSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	dur := *modelTime
	if dur == 0 {
		dur = 20 * time.Second
	}
	for _, p := range profiles {
		t.Run(p.name, func(t *testing.T) {
			t.Logf("seed %d (rerun: go test ./upstream -run 'TestModel/%s' -model.seed %d)", seed, p.name, seed)
			m := newModel(t, p, seed)
			m.run(dur)
			t.Logf("%s: %d operations, %d quiet points, %d server kills, %d connection cuts, %d PBX restarts, %d voicemails",
				p.name, m.ops, m.quiets, m.kills, m.proxy.Cuts(), m.restarts, len(m.ids))
		})
	}
}

type model struct {
	t     *testing.T
	p     profile
	seed  uint64
	rng   *rand.Rand
	srv   server
	proxy *wanproxy.Proxy
	e     *env
	mb    *um.Mailbox
	user  *imapclient.Client // the user's mail client at the server
	emb   *imapclient.Client // a mail client of the embedded server
	embLn net.Listener

	ids                                []uuid.UUID // every voicemail deposited
	ops, quiets, kills, cuts, restarts int
	log                                []string
}

func newModel(t *testing.T, p profile, seed uint64) *model {
	m := &model{t: t, p: p, seed: seed, rng: rand.New(rand.NewPCG(seed, uint64(len(p.name))))}
	m.srv = p.start(t)
	px, err := wanproxy.Start(m.srv.TLSAddr(), wanproxy.Options{Latency: p.latency, CutMean: p.cutMean, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	m.proxy = px
	opts := testOptions
	opts.CommandTimeout = 5 * time.Second
	m.e = newEnvOpts(t, nil, opts, nil)
	ctx := context.Background()
	if m.mb, err = m.e.svc.EnsureMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if err := m.e.eng.Add(ctx, m.config()); err != nil {
		t.Fatal(err)
	}
	srv, err := imapserver.New(m.e.svc, &imapserver.Options{
		InsecureAuth: true,
		Authenticate: func(ctx context.Context, user, pass string) (string, error) { return "1001", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.embLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go srv.Serve(m.embLn)
	t.Cleanup(func() { srv.Close() })
	return m
}

func (m *model) config() upstream.Config {
	return upstream.Config{Mailbox: "1001", Addr: m.proxy.Addr, TLSConfig: m.srv.TLSConfig(), Username: "1001",
		Credentials: upstream.Password("pass1001"), Trash: m.p.trash}
}

func (m *model) trash() string {
	if m.p.trash != "" {
		return m.p.trash
	}
	return "Trash"
}

func (m *model) fatalf(format string, args ...any) {
	m.t.Helper()
	msg := fmt.Sprintf(format, args...)
	last := m.log[max(0, len(m.log)-30):]
	m.t.Fatalf("seed %d, profile %s: %s\nlast steps:\n  %s%s", m.seed, m.p.name, msg, strings.Join(last, "\n  "), m.serverLog(msg))
}

// note adds what a step touched to its line of the log.
func (m *model) note(format string, args ...any) {
	m.log[len(m.log)-1] += " " + fmt.Sprintf(format, args...)
}

var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// serverLog returns the lines of the server's mail log (Dovecot's, see
// dovecot.Options.MailLog) about the voicemails a failure names: who
// saved, copied, flagged and expunged which copy, and when.
func (m *model) serverLog(msg string) string {
	l, ok := m.srv.(interface{ Logs() string })
	ids := uuidRE.FindAllString(msg, -1)
	if !ok || len(ids) == 0 {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(l.Logs(), "\n") {
		for _, id := range ids {
			if strings.Contains(line, "msgid=<"+id) {
				b.WriteString("\n  " + line)
			}
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "\nthe server's mail log:" + b.String()
}

// userClient returns the user's connection to the server, dialling again
// after a crash.
func (m *model) userClient() *imapclient.Client {
	if m.user != nil {
		if err := m.user.Noop().Wait(); err == nil {
			return m.user
		}
		m.user.Close()
	}
	for range 100 {
		c, err := imapclient.DialTLS(m.srv.TLSAddr(), &imapclient.Options{TLSConfig: m.srv.TLSConfig()})
		if err == nil {
			if err = c.Authenticate(sasl.NewPlainClient("", "1001", "pass1001")); err == nil {
				m.user = c
				return c
			}
			c.Close()
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.fatalf("the user's client cannot connect")
	return nil
}

func (m *model) embClient() *imapclient.Client {
	if m.emb != nil {
		if err := m.emb.Noop().Wait(); err == nil {
			return m.emb
		}
		m.emb.Close()
	}
	c, err := imapclient.DialInsecure(m.embLn.Addr().String(), nil)
	if err != nil {
		m.fatalf("embedded server: %v", err)
	}
	if err := c.Login("1001", "x").Wait(); err != nil {
		m.fatalf("embedded server login: %v", err)
	}
	m.emb = c
	return c
}

// folderCopies is what the server's folder holds of each voicemail.
type folderCopies struct {
	flags  map[uuid.UUID][]imap.Flag // of a live copy
	live   map[uuid.UUID]int         // copies not marked \Deleted
	marked map[uuid.UUID]int         // copies marked \Deleted
}

// copies returns each voicemail's copies in folder.
func (m *model) copies(folder string) (folderCopies, error) {
	fc := folderCopies{make(map[uuid.UUID][]imap.Flag), make(map[uuid.UUID]int), make(map[uuid.UUID]int)}
	c := m.userClient()
	if _, err := c.Select(folder, nil).Wait(); err != nil {
		return fc, err
	}
	sd, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: upstream.IDHeader, Value: ""}}}, nil).Wait()
	if err != nil || len(sd.AllUIDs()) == 0 {
		return fc, err
	}
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{upstream.IDHeader}, Peek: true}
	bufs, err := c.Fetch(imap.UIDSetNum(sd.AllUIDs()...), &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		return fc, err
	}
	for _, b := range bufs {
		h := string(bytes.TrimSpace(b.FindBodySection(section)))
		_, v, _ := strings.Cut(h, ":")
		id, err := uuid.Parse(strings.TrimSpace(v))
		if err != nil {
			continue
		}
		if slices.Contains(b.Flags, imap.FlagDeleted) {
			fc.marked[id]++
			continue
		}
		fc.flags[id] = b.Flags
		fc.live[id]++
	}
	return fc, nil
}

// pick returns a random voicemail of um's folder, if any.
func (m *model) pick(folder string) (um.Message, bool) {
	msgs, err := m.mb.List(context.Background(), folder)
	if err != nil {
		m.fatalf("list %s: %v", folder, err)
	}
	msgs = slices.DeleteFunc(msgs, func(x um.Message) bool { return x.Raw })
	if len(msgs) == 0 {
		return um.Message{}, false
	}
	x := msgs[m.rng.IntN(len(msgs))]
	m.note("%s", x.ID)
	return x, true
}

// pickUp returns the UID of a random copy in the server's folder.
func (m *model) pickUp(folder string) (*imapclient.Client, imap.UID, bool) {
	c := m.userClient()
	if _, err := c.Select(folder, nil).Wait(); err != nil {
		return c, 0, false
	}
	sd, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: upstream.IDHeader, Value: ""}},
		NotFlag: []imap.Flag{imap.FlagDeleted}}, nil).Wait()
	if err != nil || len(sd.AllUIDs()) == 0 {
		return c, 0, false
	}
	uids := sd.AllUIDs()
	uid := uids[m.rng.IntN(len(uids))]
	m.note("%s uid %d", folder, uid)
	return c, uid, true
}

type step struct {
	weight int
	name   string
	do     func(m *model) error
}

var steps = []step{
	{4, "phone: deposit", func(m *model) error {
		msg := deposit(m.t, m.mb, fmt.Sprint(m.rng.IntN(1000)))
		m.ids = append(m.ids, msg.ID)
		m.note("%s", msg.ID)
		return nil
	}},
	{2, "phone: heard", func(m *model) error {
		if x, ok := m.pick(um.Inbox); ok {
			return m.mb.MarkHeard(context.Background(), x.ID)
		}
		return nil
	}},
	{1, "phone: unheard", func(m *model) error {
		if x, ok := m.pick(um.Inbox); ok {
			return m.mb.MarkUnheard(context.Background(), x.ID)
		}
		return nil
	}},
	{2, "phone: delete", func(m *model) error {
		// As Delete does to a voicemail in INBOX; Delete itself would purge
		// one the engine moved to Trash since pick, which the model does
		// not follow.
		if x, ok := m.pick(um.Inbox); ok {
			_, err := m.mb.Move(context.Background(), []uuid.UUID{x.ID}, um.Trash)
			return err
		}
		return nil
	}},
	{1, "phone: undelete", func(m *model) error {
		if x, ok := m.pick(um.Trash); ok {
			_, err := m.mb.Undelete(context.Background(), x.ID)
			return err
		}
		return nil
	}},
	{1, "embedded client: \\Seen", func(m *model) error { return m.embStore(imap.StoreFlagsAdd, imap.FlagSeen) }},
	{1, "embedded client: -\\Seen", func(m *model) error { return m.embStore(imap.StoreFlagsDel, imap.FlagSeen) }},
	{1, "embedded client: \\Flagged", func(m *model) error { return m.embStore(imap.StoreFlagsAdd, imap.FlagFlagged) }},
	{1, "embedded client: move to Trash", func(m *model) error {
		c, n, err := m.embPick()
		if n == 0 {
			return err
		}
		_, err = c.Move(imap.SeqSetNum(n), "Trash").Wait()
		return err
	}},
	{1, "user: \\Seen", func(m *model) error { return m.userStore(imap.StoreFlagsAdd, imap.FlagSeen) }},
	{1, "user: mark unread", func(m *model) error { return m.userStore(imap.StoreFlagsDel, imap.FlagSeen) }},
	{1, "user: \\Flagged", func(m *model) error { return m.userStore(imap.StoreFlagsAdd, imap.FlagFlagged) }},
	{1, "user: -\\Flagged", func(m *model) error { return m.userStore(imap.StoreFlagsDel, imap.FlagFlagged) }},
	{1, "embedded client: \\Deleted", func(m *model) error { return m.embStore(imap.StoreFlagsAdd, imap.FlagDeleted) }},
	{1, "embedded client: -\\Deleted", func(m *model) error { return m.embStore(imap.StoreFlagsDel, imap.FlagDeleted) }},
	{1, "user: \\Deleted", func(m *model) error { return m.userStore(imap.StoreFlagsAdd, imap.FlagDeleted) }},
	{1, "user: expunge", func(m *model) error {
		c, uid, ok := m.pickUp("INBOX")
		if !ok {
			return nil
		}
		if err := c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			return err
		}
		if !c.Caps().Has(imap.CapUIDPlus) {
			// A user's client on a server without UIDPLUS can only
			// expunge every \Deleted message of the folder.
			return c.Expunge().Close()
		}
		return c.UIDExpunge(imap.UIDSetNum(uid)).Close()
	}},
	{1, "user: move to Trash", func(m *model) error { return m.userMove("INBOX", m.trash()) }},
	{1, "user: file into Keep", func(m *model) error {
		m.userClient().Create("Keep", nil).Wait() // exists after the first time
		return m.userMove("INBOX", "Keep")
	}},
	{1, "user: restore from Trash", func(m *model) error { return m.userMove(m.trash(), "INBOX") }},
}

// faults happen between steps, rarer than steps.
var faults = []step{
	{2, "fault: cut connections", func(m *model) error { m.proxy.Cut(); m.cuts++; return nil }},
	{1, "fault: server SIGKILL", func(m *model) error {
		m.srv.Kill()
		m.kills++
		time.Sleep(time.Duration(m.rng.IntN(500)) * time.Millisecond)
		return m.srv.Restart()
	}},
	{1, "fault: PBX restart", func(m *model) error {
		m.e.eng.Close()
		m.restarts++
		m.e.startEngine()
		return m.e.eng.Add(context.Background(), m.config())
	}},
}

// embPick selects INBOX with the embedded server's client and picks one of
// its messages at random, by sequence number; 0 when there is none (or
// the select failed: err).
func (m *model) embPick() (*imapclient.Client, uint32, error) {
	c := m.embClient()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages == 0 {
		return c, 0, err
	}
	n := uint32(1 + m.rng.IntN(int(sel.NumMessages)))
	m.note("seq %d", n)
	return c, n, nil
}

func (m *model) embStore(op imap.StoreFlagsOp, f imap.Flag) error {
	c, n, err := m.embPick()
	if n == 0 {
		return err
	}
	return c.Store(imap.SeqSetNum(n), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{f}}, nil).Close()
}

func (m *model) userStore(op imap.StoreFlagsOp, f imap.Flag) error {
	c, uid, ok := m.pickUp("INBOX")
	if !ok {
		return nil
	}
	return c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{f}}, nil).Close()
}

// userMove moves a random copy the way the user's client does: MOVE, or
// COPY, \Deleted and UID EXPUNGE.
func (m *model) userMove(from, to string) error {
	c, uid, ok := m.pickUp(from)
	if !ok {
		return nil
	}
	set := imap.UIDSetNum(uid)
	if c.Caps().Has(imap.CapMove) {
		_, err := c.Move(set, to).Wait()
		return err
	}
	if _, err := c.Copy(set, to).Wait(); err != nil {
		return err
	}
	if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		return err
	}
	if !c.Caps().Has(imap.CapUIDPlus) {
		return c.Expunge().Close() // all the folder's \Deleted mail, as such a client does
	}
	return c.UIDExpunge(set).Close()
}

func choose(rng *rand.Rand, ss []step) step {
	total := 0
	for _, s := range ss {
		total += s.weight
	}
	n := rng.IntN(total)
	for _, s := range ss {
		if n < s.weight {
			return s
		}
		n -= s.weight
	}
	return ss[len(ss)-1]
}

func (m *model) run(dur time.Duration) {
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		for range 5 + m.rng.IntN(10) {
			s := choose(m.rng, steps)
			if m.rng.IntN(12) == 0 {
				s = choose(m.rng, faults)
			}
			m.log = append(m.log, time.Now().Format("15:04:05.000000 ")+s.name)
			if err := s.do(m); err != nil && !strings.HasPrefix(s.name, "fault") {
				// A step of a client may meet a server that is restarting;
				// the step is then lost, which the invariants allow.
				m.log = append(m.log, "  ("+err.Error()+")")
			} else if err != nil {
				m.fatalf("%s: %v", s.name, err)
			}
			m.ops++
			time.Sleep(time.Duration(m.rng.IntN(30)) * time.Millisecond)
		}
		m.quiet()
	}
}

// quiet waits until both sides agree, then checks the invariants.
func (m *model) quiet() {
	m.t.Helper()
	m.quiets++
	m.log = append(m.log, time.Now().Format("15:04:05.000000 ")+"-- quiet point")
	deadline := time.Now().Add(60 * time.Second)
	var why string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.e.eng.Sync(ctx, "1001")
		if err == nil {
			err = m.e.eng.Sync(ctx, "1001")
		}
		cancel()
		if err == nil {
			if why = m.check(); why == "" {
				return
			}
		} else {
			why = "no sync: " + err.Error()
		}
		if time.Now().After(deadline) {
			m.fatalf("after a quiet point: %s (status %+v)", why, m.e.eng.Status("1001"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *model) check() string {
	ctx := context.Background()
	inbox, err := m.copies("INBOX")
	if err != nil {
		return "list INBOX upstream: " + err.Error()
	}
	trash, err := m.copies(m.trash())
	if err != nil {
		return "list Trash upstream: " + err.Error()
	}
	nIn, nTrash := inbox.live, trash.live
	for _, id := range m.ids {
		msg, err := m.mb.Message(ctx, id)
		if err != nil {
			return fmt.Sprintf("voicemail %s lost: %v", id, err)
		}
		switch msg.Folder {
		case um.Inbox:
			if msg.Flags&um.FlagDeleted != 0 {
				// Marked \Deleted on one side: the copy is marked too (on a
				// server without UIDPLUS, copies the engine removed before
				// stay marked beside it).
				if nIn[id] != 0 || inbox.marked[id] == 0 {
					return fmt.Sprintf("voicemail %s marked \\Deleted on the phone has %d live and %d marked copies in INBOX upstream, want 0 and at least 1", id, nIn[id], inbox.marked[id])
				}
				break
			}
			if nIn[id] != 1 {
				return fmt.Sprintf("voicemail %s in um's INBOX has %d live copies in INBOX upstream, want 1", id, nIn[id])
			}
			up := inbox.flags[id]
			if msg.Heard() != slices.Contains(up, imap.FlagSeen) || (msg.Flags&um.FlagFlagged != 0) != slices.Contains(up, imap.FlagFlagged) {
				return fmt.Sprintf("voicemail %s: flags %v on the phone, %v upstream", id, msg.Flags, up)
			}
		default:
			if nIn[id] != 0 {
				return fmt.Sprintf("voicemail %s deleted on the phone has %d live copies in INBOX upstream, want 0", id, nIn[id])
			}
		}
		if nTrash[id] > 1 {
			return fmt.Sprintf("voicemail %s has %d copies in %s upstream, want at most 1", id, nTrash[id], m.trash())
		}
	}
	want, err := m.mb.MWI(ctx)
	if err != nil {
		return err.Error()
	}
	m.e.svc.FlushMWI()
	if got, ok := m.e.lastMWI("1001"); len(m.ids) > 0 && (!ok || got.New != want.New || got.Old != want.Old) {
		return fmt.Sprintf("lamp %+v, store counts %+v", got, want)
	}
	return ""
}
