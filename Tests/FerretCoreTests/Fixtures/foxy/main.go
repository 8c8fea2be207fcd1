// foxy: a small reverse proxy after the seed article's case, for the goroutine
// leak tests. Modes:
//   foxy upstream               serves "ok" on a free port; prints "listening on ADDR"
//   foxy proxy -upstream ADDR [-leak]
//                               proxies every request to the upstream; with -leak it
//                               builds a new http.Transport per request (the bug: each
//                               keeps its idle connection's readLoop and writeLoop
//                               goroutines forever); prints "listening on ADDR"
//   foxy load -target ADDR -rps N
//                               GETs the target N times a second, forever
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func listen(h http.Handler) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	panic(http.Serve(ln, h))
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: foxy upstream|proxy|load ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	upstream := fs.String("upstream", "", "the upstream address")
	leak := fs.Bool("leak", false, "a new Transport per request")
	target := fs.String("target", "", "the address to load")
	rps := fs.Int("rps", 20, "requests per second")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "upstream":
		listen(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") }))
	case "proxy":
		shared := &http.Transport{}
		listen(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tr := shared
			if *leak {
				tr = &http.Transport{} // the bug
			}
			resp, err := (&http.Client{Transport: tr}).Get("http://" + *upstream + r.URL.Path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		}))
	case "load":
		client := &http.Client{Timeout: 5 * time.Second}
		tick := time.NewTicker(time.Second / time.Duration(*rps))
		for range tick.C {
			go func() {
				resp, err := client.Get("http://" + *target + "/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
	}
}
