package dovecot

import (
	"sync/atomic"
	"time"
)

// SamplePeakRSS samples TreeRSS(pid) every interval until the returned
// function is called, which returns the largest value seen (at least one
// sample is taken at each end). Load tools use it for a server's peak
// memory: a process tree's high-water mark is not kept by the kernel.
func SamplePeakRSS(pid int, interval time.Duration) (stop func() int64) {
	return SamplePeak(pid, "VmRSS", interval)
}

// SamplePeak is SamplePeakRSS for another field of TreeStatus: RssAnon,
// the memory that is the tree's own (no file mapped in, such as a
// database's pages), RssFile.
func SamplePeak(pid int, field string, interval time.Duration) (stop func() int64) {
	return SamplePeakOf(func() (int64, error) { return TreeStatus(pid, field) }, interval)
}

// SamplePeakPSS is SamplePeakRSS for TreePSS.
func SamplePeakPSS(pid int, interval time.Duration) (stop func() int64) {
	return SamplePeakOf(func() (int64, error) { return TreePSS(pid) }, interval)
}

// SamplePeakOf samples read every interval until the returned function is
// called, which returns the largest value read without an error.
func SamplePeakOf(read func() (int64, error), interval time.Duration) (stop func() int64) {
	var peak atomic.Int64
	sample := func() {
		if v, err := read(); err == nil && v > peak.Load() {
			peak.Store(v)
		}
	}
	sample()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	return func() int64 {
		close(done)
		<-finished
		sample()
		return peak.Load()
	}
}
