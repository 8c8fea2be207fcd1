// truthsrv is the truth fixture of Ferret's Go runtime readers: a Go program
// that reports its own runtime figures over HTTP, so tests can compare what
// Ferret reads from outside the process with what the runtime says inside.
//
// Flags:
//
//	-park N        park N goroutines, each blocked on a channel forever
//	-heap-mib N    hold N MiB of live, pointer-free heap (64 KiB objects)
//	-live-objects N  hold N small live objects with pointers (a list the GC scans)
//	-quiet         no background work at all (stable readings)
//	-churn-mib N   without -quiet: allocate N MiB/s of garbage in one goroutine (drives GCs)
//	-cgo N         make N cgo calls at startup (os/user lookups; only cgo builds count them)
//	-addr A        listen address (default 127.0.0.1:0)
//	-nethttp       serve with net/http instead (a goroutine per connection, as a
//	               real service does; still one request at a time): the
//	               http_tracer sees its requests as server spans
//
// The first line on stdout is "listening on ADDR". Requests are served one at a
// time on the main goroutine (no goroutine per connection), so serving a request
// starts no goroutine and the goroutine count it reports is the count at rest.
//
// Endpoints (all return the truth JSON, after doing what they say):
//
//	GET /truth          runtime.NumGoroutine, NumCgoCall, GOMAXPROCS, Threads from
//	                    /proc/self/status, runtime.ReadMemStats, and every scalar
//	                    runtime/metrics sample this Go version has
//	GET /gc             runtime.GC() first
//	GET /spawn?n=N      park N more goroutines first
//	GET /cgo?n=N        make N more cgo calls first (os/user lookups)
//	GET /leak?n=N       leak N HTTP clients first, the way a proxy with a new
//	                    http.Transport per request does (each keeps an idle
//	                    connection and its goroutines)
//	GET /fanout?n=N&ms=M  start N goroutines that each sleep M ms and exit (work
//	                    handed off by a request: goroutines that come and go, no leak)
//	GET /alloc?mib=N    allocate N MiB of garbage first
//	GET /churn?ms=N     allocate short-lived pointer-rich objects on every P for
//	                    N ms first (a GC-heavy interval)
//
// Standard library only; builds with Go 1.19 and later.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/user"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	parkCh   = make(chan struct{})
	parked   int
	liveHeap [][]byte
	sink     []byte
	liveList *node

	leakOnce    sync.Once
	leakAddr    string
	leakClients []*http.Client
)

func park(n int) {
	for i := 0; i < n; i++ {
		go func() { <-parkCh }()
	}
	parked += n
}

func cgoCalls(n int) {
	for i := 0; i < n; i++ {
		// With cgo, os/user calls getgrgid_r through cgo; without, it parses /etc/group.
		// (Not LookupId: it answers the current user from a cache without a call.)
		_, _ = user.LookupGroupId("0")
	}
}

// node is a small object with pointers: a list of them is live heap the GC must
// scan, and churning them makes GC cycles that cost CPU.
type node struct {
	next  *node
	value [4]int64
}

func buildList(n int) *node {
	var head *node
	for i := 0; i < n; i++ {
		head = &node{next: head}
		head.value[0] = int64(i)
	}
	return head
}

var churnSink atomic.Pointer[node]

// churn allocates short-lived pointer-rich objects on every P for ms
// milliseconds: a GC-heavy interval.
func churn(ms int) {
	deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				churnSink.Store(buildList(2000))
			}
		}()
	}
	wg.Wait()
	churnSink.Store(nil)
}

// fanout starts n goroutines that each sleep ms milliseconds and exit.
func fanout(n, ms int) {
	for i := 0; i < n; i++ {
		go func() { time.Sleep(time.Duration(ms) * time.Millisecond) }()
	}
}

func allocGarbage(mib int) {
	for i := 0; i < mib*16; i++ {
		sink = make([]byte, 64<<10)
	}
}

func leak(n int) error {
	var err error
	leakOnce.Do(func() {
		ln, e := net.Listen("tcp", "127.0.0.1:0")
		if e != nil {
			err = e
			return
		}
		leakAddr = ln.Addr().String()
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		})}
		go srv.Serve(ln)
	})
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		// The bug being imitated: a new Transport per request, never closed.
		c := &http.Client{Transport: &http.Transport{}}
		resp, e := c.Get("http://" + leakAddr + "/")
		if e != nil {
			return e
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		leakClients = append(leakClients, c)
	}
	return nil
}

func threads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Threads:") {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "Threads:")))
			return n
		}
	}
	return -1
}

type Truth struct {
	PID        int                `json:"pid"`
	GoVersion  string             `json:"go_version"`
	Goroutines int                `json:"goroutines"`
	Parked     int                `json:"parked"`
	CgoCalls   int64              `json:"cgo_calls"`
	GOMAXPROCS int                `json:"gomaxprocs"`
	Threads    int                `json:"threads"`
	HeapMiB    int                `json:"heap_mib"`
	MemStats   map[string]uint64  `json:"memstats"`
	Metrics    map[string]float64 `json:"metrics"`
	TimeUnixNs int64              `json:"time_unix_nano"`
}

// servingGoroutines are the goroutines that serve the request asking for the
// truth and end with it: none when serving by hand (the main goroutine does),
// two under -nethttp (the connection's serve goroutine and, for a request
// without a body, its background reader, started before the handler runs).
// The count reported is the program's own, without them, as it stands
// between requests.
var servingGoroutines = 0

func truth() Truth {
	t := Truth{
		PID:        os.Getpid(),
		GoVersion:  runtime.Version(),
		Goroutines: runtime.NumGoroutine() - servingGoroutines,
		Parked:     parked,
		CgoCalls:   runtime.NumCgoCall(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Threads:    threads(),
		HeapMiB:    len(liveHeap) / 16,
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.MemStats = map[string]uint64{
		"HeapInuse": ms.HeapInuse, "HeapIdle": ms.HeapIdle, "HeapReleased": ms.HeapReleased,
		"HeapObjects": ms.HeapObjects, "HeapSys": ms.HeapSys, "HeapAlloc": ms.HeapAlloc,
		"StackInuse": ms.StackInuse, "StackSys": ms.StackSys, "Sys": ms.Sys, "NextGC": ms.NextGC,
		"NumGC": uint64(ms.NumGC), "NumForcedGC": uint64(ms.NumForcedGC), "PauseTotalNs": ms.PauseTotalNs,
		"MSpanInuse": ms.MSpanInuse, "MSpanSys": ms.MSpanSys, "MCacheInuse": ms.MCacheInuse,
		"MCacheSys": ms.MCacheSys, "BuckHashSys": ms.BuckHashSys, "GCSys": ms.GCSys,
		"OtherSys": ms.OtherSys, "Mallocs": ms.Mallocs, "Frees": ms.Frees, "TotalAlloc": ms.TotalAlloc,
		"LastGC": ms.LastGC,
	}
	// Every scalar metric this Go version has ("/sched/goroutines:goroutines" since
	// Go 1.16, "/cpu/classes/gc/total:cpu-seconds" since Go 1.20, ...), keyed by name.
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if d.Kind == metrics.KindUint64 || d.Kind == metrics.KindFloat64 {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	t.Metrics = make(map[string]float64, len(samples))
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			t.Metrics[s.Name] = float64(s.Value.Uint64())
		case metrics.KindFloat64:
			if v := s.Value.Float64(); !math.IsNaN(v) && !math.IsInf(v, 0) {
				t.Metrics[s.Name] = v
			}
		}
	}
	t.TimeUnixNs = time.Now().UnixNano()
	return t
}

func respond(c net.Conn, status int, body []byte) {
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), len(body))
	c.Write(body)
}

func intParam(r *http.Request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 1000000 {
		return 0, fmt.Errorf("bad %s=%q", name, v)
	}
	return n, nil
}

func serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	status, b := handle(r)
	respond(c, status, b)
}

// handleLock keeps requests one at a time under -nethttp too.
var handleLock sync.Mutex

// handle does what a request asks and returns the status and the JSON body.
func handle(r *http.Request) (int, []byte) {
	handleLock.Lock()
	defer handleLock.Unlock()
	fail := func(status int, err error) (int, []byte) {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return status, b
	}
	switch r.URL.Path {
	case "/truth":
	case "/gc":
		runtime.GC()
	case "/spawn":
		n, err := intParam(r, "n")
		if err != nil {
			return fail(400, err)
		}
		park(n)
	case "/cgo":
		n, err := intParam(r, "n")
		if err != nil {
			return fail(400, err)
		}
		cgoCalls(n)
	case "/leak":
		n, err := intParam(r, "n")
		if err != nil {
			return fail(400, err)
		}
		if err := leak(n); err != nil {
			return fail(500, err)
		}
	case "/fanout":
		n, err := intParam(r, "n")
		if err != nil {
			return fail(400, err)
		}
		ms, err := intParam(r, "ms")
		if err != nil {
			return fail(400, err)
		}
		fanout(n, ms)
	case "/churn":
		n, err := intParam(r, "ms")
		if err != nil {
			return fail(400, err)
		}
		churn(n)
	case "/alloc":
		n, err := intParam(r, "mib")
		if err != nil {
			return fail(400, err)
		}
		allocGarbage(n)
	default:
		return fail(404, fmt.Errorf("no such endpoint %s", r.URL.Path))
	}
	b, err := json.Marshal(truth())
	if err != nil {
		return fail(500, err)
	}
	return 200, b
}

func main() {
	parkN := flag.Int("park", 0, "goroutines to park")
	heapMiB := flag.Int("heap-mib", 0, "MiB of live heap to hold")
	liveObjects := flag.Int("live-objects", 0, "small pointer objects to hold live (a list)")
	quiet := flag.Bool("quiet", false, "no background work")
	churn := flag.Int("churn-mib", 32, "MiB/s of garbage to allocate in the background (ignored with -quiet)")
	cgo := flag.Int("cgo", 1, "cgo calls to make at startup")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	netHTTP := flag.Bool("nethttp", false, "serve with net/http (a goroutine per connection)")
	flag.Parse()

	for i := 0; i < *heapMiB*16; i++ {
		liveHeap = append(liveHeap, make([]byte, 64<<10))
	}
	liveList = buildList(*liveObjects)
	park(*parkN)
	cgoCalls(*cgo)
	if !*quiet && *churn > 0 {
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			for range tick.C {
				for i := 0; i < *churn*16/100+1; i++ {
					sink = make([]byte, 64<<10)
				}
			}
		}()
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stdout, "listening on %s\n", ln.Addr())
	if *netHTTP {
		servingGoroutines = 2
		err := http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			status, b := handle(r)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write(b)
		}))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		serve(c)
	}
}
