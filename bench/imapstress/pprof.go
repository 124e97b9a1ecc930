package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"time"
)

// pprofEnv, when set in the child's environment, names a folder the child
// writes its profiles into: cpu.pprof over its whole life, trace.out, an
// execution trace of traceLen from traceAt into its life (mid-run, where
// `go tool trace -pprof=sync` or `=sched` shows what commands wait for),
// mutex.pprof, block.pprof, heap.pprof and allocs.pprof taken when it
// stops, and peakheap.pprof and peak.txt near its memory's peak
// (samplePeak). The driver sets it for um's child when -pprof is given;
// each run gets its own folder.
const pprofEnv = "IMAPSTRESS_PPROF"

const (
	traceAt  = 12 * time.Second
	traceLen = 3 * time.Second
)

// startProfiles starts the CPU profile and turns on mutex and block
// sampling, and returns the function that writes them all. With dir empty
// it does nothing.
func startProfiles(dir string) (stop func() error, err error) {
	if dir == "" {
		return func() error { return nil }, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		return nil, err
	}
	if tf, err := os.Create(filepath.Join(dir, "trace.out")); err == nil {
		go func() {
			defer tf.Close()
			time.Sleep(traceAt)
			if trace.Start(tf) == nil {
				time.Sleep(traceLen)
				trace.Stop()
			}
		}()
	}
	// One in five contention events, and blocking events of 10 µs and
	// more: enough to see where commands wait without slowing them much.
	runtime.SetMutexProfileFraction(5)
	runtime.SetBlockProfileRate(10_000)
	stopPeak := samplePeak(dir)
	return func() error {
		pprof.StopCPUProfile()
		err := cpu.Close()
		if perr := stopPeak(); err == nil {
			err = perr
		}
		for _, name := range []string{"mutex", "block", "heap", "allocs", "goroutine"} {
			if werr := writeProfile(dir, name); err == nil {
				err = werr
			}
		}
		return err
	}, nil
}

func writeProfile(dir, name string) error { return writeProfileAs(dir, name, name) }

// writeProfileAs writes the named profile into dir as file.pprof.
func writeProfileAs(dir, name, file string) error {
	p := pprof.Lookup(name)
	if p == nil {
		return fmt.Errorf("no %s profile", name)
	}
	f, err := os.Create(filepath.Join(dir, file+".pprof"))
	if err != nil {
		return err
	}
	if err := p.WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
