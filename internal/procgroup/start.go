package procgroup

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Start starts cmd as the leader of a process group of its own (so that
// Kill and a stop reach every process it forks), with its output appended
// to logPath. The returned channel closes once it has exited.
func Start(cmd *exec.Cmd, logPath string) (exited <-chan struct{}, err error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(done) }()
	return done, nil
}

// ErrExited is returned by AwaitGreeting when the server exits first.
var ErrExited = errors.New("exited at start")

// AwaitGreeting dials the IMAP server until it sends its "* OK" greeting,
// it exits (exited closes: ErrExited), or timeout passes.
func AwaitGreeting(dial func() (net.Conn, error), exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := dial(); err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Close()
			if bytes.HasPrefix(buf[:n], []byte("* OK")) {
				return nil
			}
		}
		select {
		case <-exited:
			return ErrExited
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no greeting after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
