// httpsrv: the http_tracer's fixture service. Standard library only, buildable
// with Go 1.19.
//
// It listens on 127.0.0.1 (port from -addr, default any), prints
// "listening <addr>" on stdout, and counts every request it serves by status.
// On SIGTERM or SIGINT it prints "served <total> 200=<n> 404=<n> 500=<n>"
// and exits 0: the oracle the tracer's span count is compared with.
//
// Routes: /ok/... → 200, /fail/... → 500, /slow/...?ms=N → 200 after N ms,
// /call/...?to=URL → GETs URL (a second service) and answers with its status,
// forwarding the incoming traceparent header (as a service that propagates
// context itself would); /spawn/...?to=URL → the same GET from a goroutine
// the handler starts and waits for; on Go 1.22+ also GET /items/{id} → 200
// (a pattern route); anything else → 404.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

var total, ok, notFound, failed, other atomic.Int64

type counting struct{ h http.Handler }

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (c counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: 200}
	c.h.ServeHTTP(rec, r)
	total.Add(1)
	switch rec.status {
	case 200:
		ok.Add(1)
	case 404:
		notFound.Add(1)
	case 500:
		failed.Add(1)
	default:
		other.Add(1)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()

	client := &http.Client{Timeout: 10 * time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/fail/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "failed on purpose", http.StatusInternalServerError)
	})
	mux.HandleFunc("/slow/", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		io.WriteString(w, "slow\n")
	})
	call := func(r *http.Request) (int, error) {
		req, err := http.NewRequest("GET", r.URL.Query().Get("to"), nil)
		if err != nil {
			return http.StatusBadRequest, err
		}
		if tp := r.Header.Get("traceparent"); tp != "" {
			req.Header.Set("traceparent", tp)
		}
		resp, err := client.Do(req)
		if err != nil {
			return http.StatusBadGateway, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	mux.HandleFunc("/call/", func(w http.ResponseWriter, r *http.Request) {
		status, err := call(r)
		if err != nil {
			http.Error(w, err.Error(), status)
			return
		}
		w.WriteHeader(status)
	})
	mux.HandleFunc("/spawn/", func(w http.ResponseWriter, r *http.Request) {
		type outcome struct {
			status int
			err    error
		}
		done := make(chan outcome)
		go func() {
			s, err := call(r)
			done <- outcome{s, err}
		}()
		o := <-done
		if o.err != nil {
			http.Error(w, o.err.Error(), o.status)
			return
		}
		w.WriteHeader(o.status)
	})
	addRoutes(mux)
	mux.HandleFunc("/", http.NotFound)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		fmt.Printf("served %d 200=%d 404=%d 500=%d other=%d\n",
			total.Load(), ok.Load(), notFound.Load(), failed.Load(), other.Load())
		os.Exit(0)
	}()
	srv := &http.Server{Handler: counting{mux}}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
