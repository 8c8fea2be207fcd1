// httpclient: the http_tracer's load fixture. Standard library only.
//
//	httpclient -url http://127.0.0.1:PORT -n 20000 -c 16 -out report.tsv
//
// Sends n GET requests over c keep-alive connections, cycling through
// /ok/<i>, /missing/<i> and /fail/<i> (i unique per request, so each span can
// be matched to its request by path); with -path, n requests to that one
// path (and query). -H "Name: value" (repeatable) adds a header to each. Writes one line per request to -out:
// "<path>\t<status>\t<start unix ns>\t<end unix ns>", the wall time the
// client saw, and prints "done <n> errors=<e>" on stdout.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type headers []string

func (h *headers) String() string     { return strings.Join(*h, ", ") }
func (h *headers) Set(v string) error { *h = append(*h, v); return nil }

type result struct {
	path       string
	status     int
	start, end int64
}

func main() {
	base := flag.String("url", "", "base URL of the service")
	n := flag.Int("n", 1000, "requests")
	c := flag.Int("c", 8, "connections")
	out := flag.String("out", "", "report file")
	fixed := flag.String("path", "", "one path (and query) for every request")
	var hdrs headers
	flag.Var(&hdrs, "H", "a header \"Name: value\" (repeatable)")
	flag.Parse()

	tr := &http.Transport{MaxIdleConns: *c, MaxIdleConnsPerHost: *c, MaxConnsPerHost: *c}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	results := make([]result, *n)
	var next, errs int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= int64(*n) {
					return
				}
				path := [...]string{"/ok/", "/missing/", "/fail/"}[i%3] + fmt.Sprint(i)
				if *fixed != "" {
					path = *fixed
				}
				req, err := http.NewRequest("GET", *base+path, nil)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				for _, h := range hdrs {
					if k, v, ok := strings.Cut(h, ":"); ok {
						req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
					}
				}
				start := time.Now().UnixNano()
				resp, err := client.Do(req)
				status := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				} else {
					mu.Lock()
					errs++
					mu.Unlock()
				}
				results[i] = result{path, status, start, time.Now().UnixNano()}
			}
		}()
	}
	wg.Wait()
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b := bufio.NewWriter(f)
		for _, r := range results {
			fmt.Fprintf(b, "%s\t%d\t%d\t%d\n", r.path, r.status, r.start, r.end)
		}
		b.Flush()
		f.Close()
	}
	fmt.Printf("done %d errors=%d\n", *n, errs)
}
