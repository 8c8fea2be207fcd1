// promexporter is PrometheusBench's peer: Prometheus' own Go client library
// (client_golang, Debian's golang-github-prometheus-client-golang-dev) exposing
// the same series as the benchmark fills ferret's prometheus sink with:
// processes × 100 metric families, the same names, labels and label values,
// a tenth of the families with a cpu_mode label; two thirds gauges, one third
// counters. It times the rounds that create and update every series, prints
// "listening on ADDR", and serves /metrics (text 0.0.4, or OpenMetrics when
// asked) from its own registry (no Go or process collectors).
//
// Built in GOPATH mode against the Debian package (bench/build-go.sh).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	series := flag.Int("series", 100000, "series to expose (processes × 100)")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	perProcess := 100
	processes := *series / perProcess
	if processes < 1 {
		processes = 1
	}
	reg := prometheus.NewRegistry()
	base := []string{"ferret_group", "ferret_rule", "process_pid", "process_executable_name", "host_name"}
	withMode := append(append([]string{}, base...), "cpu_mode")
	type family struct {
		gauge   *prometheus.GaugeVec
		counter *prometheus.CounterVec
		mode    string
	}
	families := make([]family, perProcess)
	for j := 0; j < perProcess; j++ {
		labels := base
		mode := ""
		if j%10 == 9 {
			labels = withMode
			mode = "system"
			if j%20 == 9 {
				mode = "user"
			}
		}
		switch j % 3 {
		case 0:
			families[j].gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: fmt.Sprintf("go_memory_class%d_used_bytes", j),
				Help: fmt.Sprintf("go.memory.class%d.used (By)", j)}, labels)
			reg.MustRegister(families[j].gauge)
		case 1:
			families[j].counter = prometheus.NewCounterVec(prometheus.CounterOpts{Name: fmt.Sprintf("process_sched_item%d_time_seconds_total", j),
				Help: fmt.Sprintf("process.sched.item%d.time (s)", j)}, labels)
			reg.MustRegister(families[j].counter)
		default:
			families[j].gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: fmt.Sprintf("go_sched_queue%d_count", j),
				Help: fmt.Sprintf("go.sched.queue%d.count ({goroutine})", j)}, labels)
			reg.MustRegister(families[j].gauge)
		}
		families[j].mode = mode
	}
	// Label values per process, as ferret's resource labels.
	values := make([][]string, processes)
	for i := range values {
		values[i] = []string{fmt.Sprintf("service-%d", i%40), "go-services", strconv.Itoa(100000 + i),
			fmt.Sprintf("service-%d", i%40), "bench-host-01.example.internal"}
	}
	round := func(r int) time.Duration {
		t0 := time.Now()
		for i, v := range values {
			for _, f := range families {
				lv := v
				if f.mode != "" {
					lv = append(append(make([]string, 0, 6), v...), f.mode)
				}
				if f.gauge != nil {
					f.gauge.WithLabelValues(lv...).Set(float64(r*1000+i) + 0.25)
				} else {
					f.counter.WithLabelValues(lv...).Add(1.25)
				}
			}
		}
		return time.Since(t0)
	}
	first := round(0)
	var updates []time.Duration
	for r := 1; r <= 5; r++ {
		updates = append(updates, round(r))
	}
	sort.Slice(updates, func(a, b int) bool { return updates[a] < updates[b] })
	n := processes * perProcess
	fmt.Fprintf(os.Stderr, "peer ingest: first round %.1f ms; update round median %.1f ms, %d ns/point\n",
		float64(first.Microseconds())/1000, float64(updates[2].Microseconds())/1000, updates[2].Nanoseconds()/int64(n))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	fmt.Fprintln(os.Stderr, http.Serve(ln, nil))
}
