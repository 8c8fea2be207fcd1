// burner is the CPU profiler's fixture: a Go program that burns CPU in known
// places, so a profile of it has a known answer.
//
// Modes (-mode):
//
//	split   hotA and hotB, two non-inlined functions doing the same work per
//	        iteration, called 3:1: their flat shares are 75% and 25%
//	inline  the work happens in inlinedHot, which the compiler inlines into
//	        outerLoop: the profile must show the inlined frame with its file:line
//	cgo     the work happens in C (cburn, through cgo; only cgo builds)
//
// -pprof ADDR also serves net/http/pprof, to compare with Go's own profiler.
// The first line on stdout is "ready" (and "pprof on ADDR" when serving).
// Standard library only; builds with Go 1.19 and later.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime"
)

var sink uint64

//go:noinline
func hotA(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + uint64(i)
	}
	return x
}

//go:noinline
func hotB(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + uint64(i)
	}
	return x
}

// inlinedHot is small enough for the compiler to inline into outerLoop.
func inlinedHot(x uint64, i int) uint64 {
	return x*6364136223846793005 + uint64(i) // INLINED-HOT-LINE
}

//go:noinline
func outerLoop(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = inlinedHot(x, i)
	}
	return x
}

func burn(mode string) {
	const chunk = 20000
	for {
		switch mode {
		case "split":
			sink += hotA(3 * chunk)
			sink += hotB(chunk)
		case "inline":
			sink += outerLoop(chunk)
		case "cgo":
			sink += cgoBurn(chunk)
		}
	}
}

func main() {
	mode := flag.String("mode", "split", "split, inline or cgo")
	workers := flag.Int("workers", 1, "burning goroutines")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address")
	flag.Parse()
	if *mode == "cgo" && !cgoAvailable {
		fmt.Fprintln(os.Stderr, "cgo mode needs a cgo build")
		os.Exit(2)
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go http.Serve(ln, nil)
		fmt.Printf("pprof on %s\n", ln.Addr())
	}
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for i := 0; i < *workers; i++ {
		go burn(*mode)
	}
	fmt.Println("ready")
	select {}
}
