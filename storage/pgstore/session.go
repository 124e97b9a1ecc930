package pgstore

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults of Options.IdleInTransaction and Options.PeerTimeout.
const (
	defaultIdleInTransaction = 10 * time.Second
	defaultPeerTimeout       = 30 * time.Second
)

// The server settings that bound a silent client, as runtime parameters.
const (
	paramIdleInTransaction = "idle_in_transaction_session_timeout"
	paramKeepalivesIdle    = "tcp_keepalives_idle"
	paramKeepalivesIvl     = "tcp_keepalives_interval"
	paramKeepalivesCount   = "tcp_keepalives_count"
	paramUserTimeout       = "tcp_user_timeout"
)

// keepaliveProbes is how many unanswered probes end a connection, on
// either side.
const keepaliveProbes = 5

// boundSessions sets, on cfg, the bounds of Options.IdleInTransaction and
// Options.PeerTimeout: runtime parameters for the server, each unless the
// connection string sets it already, and a dialer for this end.
func (o *Options) boundSessions(cfg *pgconn.Config) {
	if d := o.IdleInTransaction; d > 0 {
		setParam(cfg, paramIdleInTransaction, millis(d))
	}
	if d := o.PeerTimeout; d > 0 {
		ka := keepalive(d)
		setParam(cfg, paramKeepalivesIdle, seconds(ka.Idle))
		setParam(cfg, paramKeepalivesIvl, seconds(ka.Interval))
		setParam(cfg, paramKeepalivesCount, strconv.Itoa(ka.Count))
		setParam(cfg, paramUserTimeout, millis(d))
		dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAliveConfig: ka, Control: userTimeout(d)}
		cfg.DialFunc = dialer.DialContext
	}
}

// keepalive spends half of d idle before the first probe and the other
// half on probes, so a peer that stopped answering is given up within d.
func keepalive(d time.Duration) net.KeepAliveConfig {
	idle := max(d/2, time.Second)
	return net.KeepAliveConfig{
		Enable:   true,
		Idle:     idle,
		Interval: max((d-idle)/keepaliveProbes, time.Second),
		Count:    keepaliveProbes,
	}
}

// setParam sets the runtime parameter name to value unless the connection
// string set it, as a parameter of its own or with -c in options. Names are
// compared as the server does: case and - for _ do not matter.
func setParam(cfg *pgconn.Config, name, value string) {
	for k, v := range cfg.RuntimeParams {
		k = normalParam(k)
		if k == name || k == "options" && strings.Contains(normalParam(v), name+"=") {
			return
		}
	}
	cfg.RuntimeParams[name] = value
}

func normalParam(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }

// millis and seconds write d in a setting's unit, rounded up: a bound of
// zero would turn the setting off.
func millis(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10) + "ms"
}

func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s"
}

// errIdleCut is wrapped around the error of a transaction that the server
// ended because it sat idle longer than its setting, Options.IdleInTransaction
// or the server's own.
var errIdleCut = errors.New("pgstore: the transaction waited on this node longer than the server's idle_in_transaction_session_timeout (Options.IdleInTransaction), and the server ended it")

// explainIdle says so when err ended a transaction the server cut for
// idling (SQLSTATE 25P03).
func explainIdle(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "25P03" && !errors.Is(err, errIdleCut) {
		return fmt.Errorf("%w: %w", errIdleCut, err)
	}
	return err
}
