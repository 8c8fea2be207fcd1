// Reference program for the Ferret layout table generator (tools/layoutgen).
//
// It is never run for its output: it is built with every supported Go
// toolchain, and the struct layouts are read from the binary's DWARF. It
// references net/http and net/url so the linker keeps their types; the
// runtime's own types (runtime.g, runtime.schedt, ...) are always present.
// Standard library only, and it must stay buildable with Go 1.19.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
)

// keep is written to so the compiler cannot drop the values below.
var keep []any

func handler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Ferret", r.URL.Path)
	fmt.Fprintln(w, r.Method, r.URL.String(), r.Host)
}

func main() {
	u, err := url.Parse("http://example.invalid/a?b=c")
	if err != nil {
		panic(err)
	}
	req := &http.Request{Method: "GET", URL: u, Header: http.Header{}}
	keep = append(keep, req, u, map[string]int{"x": 1}, make(chan int, 1))

	// Serve one request in-process (no network) so the server side
	// (net/http.response, conn) is linked in.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(handler))
	keep = append(keep, srv)
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		srv.Start()
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/hello")
		if err == nil {
			resp.Body.Close()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		debug.FreeOSMemory()
		fmt.Println(ms.NumGC, runtime.NumGoroutine())
	}
}
