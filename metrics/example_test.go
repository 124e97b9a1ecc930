package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/metrics"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// A PBX registers um's metrics on a registry of its own, times its store
// and lets um report deposits and lamp changes. A real host serves reg with
// promhttp.HandlerFor; here the text format is printed.
func Example() {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	if err != nil {
		log.Fatal(err)
	}
	svc, err := um.New(m.WrapStore(memstore.New()), &um.Options{Observer: m})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(3 * time.Second)), Duration: 3 * time.Second}); err != nil {
		log.Fatal(err)
	}
	svc.FlushMWI()

	fams, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	var text bytes.Buffer
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
			log.Fatal(err)
		}
	}
	for _, line := range strings.Split(text.String(), "\n") {
		if strings.HasPrefix(line, "um_deposits_total") || strings.HasPrefix(line, "um_mwi_calls_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// um_deposits_total{urgent="false"} 1
	// um_deposits_total{urgent="true"} 0
	// um_mwi_calls_total{lamp="on",origin="local"} 1
}
