// okserver is the benchmarks' HTTP target (bench/latency_bench.py): a tiny Go
// server whose one endpoint is fast enough that an observer's effect on it
// would show in its latency. Every request allocates a 4 KiB buffer that
// escapes to the heap, so the heap and the GC are exercised, then answers "ok".
//
// Flags: -addr A (default 127.0.0.1:0); -idle N starts N goroutines that stay
// parked (half on a channel receive, half in time.Sleep), the population a
// goroutine census reads. The first line on stdout is "listening on ADDR".
//
// Standard library only; builds with Go 1.19 and later.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

var sink []byte

func handler(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(i)
	}
	sink = buf
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok\n"))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	idle := flag.Int("idle", 0, "goroutines kept parked")
	flag.Parse()
	never := make(chan struct{})
	for i := 0; i < *idle; i++ {
		if i%2 == 0 {
			go func() { <-never }()
		} else {
			go func() { time.Sleep(1000 * time.Hour) }()
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stdout, "listening on %s\n", ln.Addr())
	http.HandleFunc("/", handler)
	if err := http.Serve(ln, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
