// Package procgroup ends the servers tests start (Dovecot, Cyrus) the way a
// crash would.
package procgroup

import (
	"syscall"
	"time"
)

// Kill sends SIGKILL to the process group pgid, waits for exited (closed
// when the group's leader has been waited for), then up to 10 s for the
// rest of the group: a server's listeners close only when its last process
// is gone, and a test of the outage wants the ports closed.
func Kill(pgid int, exited <-chan struct{}) {
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop shuts the process group pgid down as a server is stopped: SIGTERM,
// up to 10 s for exited (the group's leader) to close, then SIGKILL to the
// whole group, since workers that outlive their master keep the group, and
// a wait for exited.
func Stop(pgid int, exited <-chan struct{}) {
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
}
