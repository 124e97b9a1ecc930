package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"time"
)

// peakMetrics are what the child's memory is made of, read with
// runtime/metrics: the Go runtime's share of its RSS is what it has mapped
// and not given back to the OS.
var peakMetrics = []string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/os-stacks:bytes",
	"/memory/classes/metadata/other:bytes",
	"/gc/heap/live:bytes",
	"/gc/heap/goal:bytes",
	"/sched/goroutines:goroutines",
}

// samplePeak samples peakMetrics every 100 ms while the child serves, and
// each time the runtime's resident memory passes its last recorded peak by
// 1 MiB writes a heap profile, peakheap.pprof, so the profile shows what
// was live near the peak rather than at the end. stop writes peak.txt,
// the metrics at the peak, and returns.
func samplePeak(dir string) (stop func() error) {
	samples := make([]metrics.Sample, len(peakMetrics))
	for i, name := range peakMetrics {
		samples[i].Name = name
	}
	value := func(s metrics.Sample) uint64 {
		if s.Value.Kind() == metrics.KindUint64 {
			return s.Value.Uint64()
		}
		return 0
	}
	var peak uint64
	var atPeak []metrics.Sample
	var written uint64
	done := make(chan struct{})
	finished := make(chan error, 1)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var err error
		for {
			select {
			case <-done:
				finished <- err
				return
			case <-tick.C:
			}
			metrics.Read(samples)
			resident := value(samples[0]) - value(samples[1])
			if resident <= peak {
				continue
			}
			peak = resident
			atPeak = append(atPeak[:0], samples...)
			if peak >= written+1<<20 {
				written = peak
				if werr := writeProfileAs(dir, "heap", "peakheap"); err == nil {
					err = werr
				}
			}
		}
	}()
	return func() error {
		close(done)
		err := <-finished
		var b strings.Builder
		fmt.Fprintf(&b, "runtime resident (total - released) at peak: %.1f MiB\n", float64(peak)/(1<<20))
		for _, s := range atPeak {
			if v := value(s); strings.HasSuffix(s.Name, ":bytes") {
				fmt.Fprintf(&b, "%-40s %8.1f MiB\n", s.Name, float64(v)/(1<<20))
			} else {
				fmt.Fprintf(&b, "%-40s %8d\n", s.Name, v)
			}
		}
		if werr := os.WriteFile(filepath.Join(dir, "peak.txt"), []byte(b.String()), 0o644); err == nil {
			err = werr
		}
		return err
	}
}
