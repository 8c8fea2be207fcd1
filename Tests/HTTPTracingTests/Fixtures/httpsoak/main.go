// httpsoak: the http_tracer's safety-soak load. Standard library only.
//
//	httpsoak -url http://127.0.0.1:PORT -duration 600s -c 4
//
// For the duration, c workers send keep-alive requests cycling through
// /ok/, /missing/, /fail/, /call/ (the service calls itself) and /spawn/ (the
// same from a goroutine), and check every response: status and body exactly
// as httpsrv answers them. Prints
//
//	done <requests> downstream=<d> errors=<transport errors> wrong=<wrong answers>
//
// where downstream counts the service's own calls to itself (each is one more
// request in its counter), and the first wrong answer on stderr.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type check struct {
	path, body string
	status     int
	downstream bool
}

func main() {
	base := flag.String("url", "", "base URL of the service")
	duration := flag.Duration("duration", 10*time.Second, "how long to run")
	c := flag.Int("c", 4, "workers (keep-alive connections)")
	flag.Parse()

	checks := []check{
		{"/ok/s", "ok\n", 200, false},
		{"/missing/s", "404 page not found\n", 404, false},
		{"/fail/s", "failed on purpose\n", 500, false},
		{"/call/s?to=" + *base + "/ok/down", "", 200, true},
		{"/spawn/s?to=" + *base + "/ok/down", "", 200, true},
	}
	tr := &http.Transport{MaxIdleConns: *c, MaxIdleConnsPerHost: *c}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var total, downstream, errs, wrong atomic.Int64
	var once sync.Once
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; time.Now().Before(deadline); i++ {
				ch := checks[i%len(checks)]
				resp, err := client.Get(*base + ch.path)
				total.Add(1)
				if ch.downstream {
					downstream.Add(1)
				}
				if err != nil {
					errs.Add(1)
					once.Do(func() { fmt.Fprintf(os.Stderr, "first error: %s: %v\n", ch.path, err) })
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != ch.status || string(body) != ch.body {
					wrong.Add(1)
					once.Do(func() {
						fmt.Fprintf(os.Stderr, "first wrong answer: %s: status %d body %q (err %v), want %d %q\n",
							ch.path, resp.StatusCode, body, err, ch.status, ch.body)
					})
				}
			}
		}(w)
	}
	wg.Wait()
	fmt.Printf("done %d downstream=%d errors=%d wrong=%d\n", total.Load(), downstream.Load(), errs.Load(), wrong.Load())
}
