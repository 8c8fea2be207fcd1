// Test fixture for DWARFLayoutTests: a small program that links net/http, so
// its DWARF has net/http.Request and net/url.URL besides the runtime's types.
//
// Run as `layoutprog reflect`, it prints the layouts of a few standard library
// structs as the Go compiler itself sees them (reflect: field name, offset,
// size), one JSON object per line, so the test can check the DWARF reader
// against the program's own truth.
package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"runtime"
)

type member struct {
	Name   string `json:"name"`
	Offset int    `json:"offset"`
	Size   int    `json:"size"`
}

type layout struct {
	Name    string   `json:"name"`
	Size    int      `json:"size"`
	Members []member `json:"members"`
}

func describe(name string, t reflect.Type) layout {
	l := layout{Name: name, Size: int(t.Size())}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		l.Members = append(l.Members, member{f.Name, int(f.Offset), int(f.Type.Size())})
	}
	return l
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "reflect" {
		enc := json.NewEncoder(os.Stdout)
		for _, l := range []layout{
			describe("net/http.Request", reflect.TypeOf(http.Request{})),
			describe("net/url.URL", reflect.TypeOf(url.URL{})),
			describe("net/http.Cookie", reflect.TypeOf(http.Cookie{})),
			describe("runtime.MemStats", reflect.TypeOf(runtime.MemStats{})),
		} {
			if err := enc.Encode(l); err != nil {
				panic(err)
			}
		}
		return
	}
	req, err := http.NewRequest("GET", "http://example.invalid/x", nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(req.Method, req.URL.Path, runtime.Version())
}
