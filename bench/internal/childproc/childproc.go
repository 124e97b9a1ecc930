// Package childproc runs a benchmark tool's server or clients as child
// processes of the same binary, so that each side's memory and CPU are its
// own. A child is told what to be by its environment, talks through its
// standard input and output, and exits when its standard input closes.
package childproc

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// Proc is a running child.
type Proc struct {
	Stdin  io.WriteCloser
	Stdout io.Reader

	name string
	cmd  *exec.Cmd
	done chan error // the result of Wait
}

// Start runs this program again with env added to its environment and its
// standard error going to this one's. name says what the child is in
// errors.
func Start(name string, env ...string) (*Proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Stdin: stdin, Stdout: stdout, name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

// PID is the child's process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Stop closes the child's standard input and waits for it to exit; after
// grace it kills the child.
func (p *Proc) Stop(grace time.Duration) error {
	p.Stdin.Close()
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of its standard input closing", p.name, grace)
	}
}
