//go:build go1.22

// go.mod says go 1.19, which would keep Go 1.21's ServeMux: ask for patterns.
//go:debug httpmuxgo121=0

package main

import (
	"io"
	"net/http"
)

// addRoutes registers a Go 1.22 pattern route: its Request.Pattern (Go 1.23+)
// is the low-cardinality route the tracer names spans and metrics by.
func addRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "item "+r.PathValue("id")+"\n")
	})
}
