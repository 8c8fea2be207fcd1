//go:build !go1.22

package main

import "net/http"

// addRoutes: method and wildcard patterns need Go 1.22.
func addRoutes(mux *http.ServeMux) {}
